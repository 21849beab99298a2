"""Property-based tests (hypothesis): readers and conversions never fail with anything but InputError."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_pathreview.backend.errors import InputError
from napari_pathreview.backend.matching import match_points
from napari_pathreview.backend.slides import open_slide, to_rgb_uint8

DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.sampled_from([None, 1, 2, 3, 4, 5]), DTYPES, st.data())
def test_to_rgb_uint8_returns_rgb_or_input_error(h, w, c, dtype, data):
    shape = (h, w) if c is None else (h, w, c)
    a = data.draw(arrays(dtype, shape))
    try:
        out = to_rgb_uint8(a, "probe")
    except InputError as e:
        assert "probe" in str(e)
        bad_channels = c in (2, 5)
        non_finite = np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()
        assert bad_channels or non_finite
        return
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=300), st.sampled_from([".png", ".jpg", ".tif", ".svs", ".bmp"]))
def test_open_slide_on_garbage_bytes_is_input_error(tmp_path_factory, payload, ext):
    p = tmp_path_factory.mktemp("garbage") / f"junk{ext}"
    p.write_bytes(payload)
    try:
        open_slide(p)
    except InputError as e:
        assert "junk" in str(e)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 30), st.integers(0, 30), st.floats(0.5, 8), st.integers(0, 10_000))
def test_matching_is_one_to_one_and_within_radius(n, m, radius, seed):
    rng = np.random.default_rng(seed)
    pred, gt = rng.uniform(0, 20, (n, 2)), rng.uniform(0, 20, (m, 2))
    res = match_points(pred, gt, radius)
    assert len(set(res.pred_idx)) == len(res.pred_idx) == len(set(res.gt_idx))
    if len(res.pred_idx):
        assert np.linalg.norm(pred[res.pred_idx] - gt[res.gt_idx], axis=1).max() <= radius + 1e-9
    greedy = match_points(pred, gt, radius, "greedy")
    assert len(res.pred_idx) >= len(greedy.pred_idx)


# ---- malformed annotation files through `pathreview convert` (issue 31): exit 0 with a correct result, or
# exit 2 with one line; never exit 1 (an internal error) and never a traceback
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_GEOMETRY = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Point", "MultiPoint", "Polygon", "LineString", "GeometryCollection", "Nope", 3]),
        "coordinates": _JSON | st.lists(st.floats(-10, 10) | st.text(max_size=2), min_size=0, max_size=3),
    }
)
_FEATURE = st.fixed_dictionaries(
    {"type": st.sampled_from(["Feature", "feature", None]), "geometry": _GEOMETRY | _JSON},
    optional={"properties": _JSON | st.fixed_dictionaries({"classification": _JSON, "classes": _JSON})},
)
_GEOJSON = (
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["FeatureCollection", "Feature", "x"]),
            "features": st.lists(_FEATURE, max_size=4) | _JSON,
        }
    )
    | _JSON
)


def _convert(tmp_path, src_name, text):
    import contextlib
    import io

    from napari_pathreview.cli import main

    src = tmp_path / src_name
    src.write_text(text)
    out = tmp_path / ("out.csv" if src_name.endswith(".geojson") else "out.geojson")
    if out.exists():
        out.unlink()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["convert", str(src), str(out)])
    return rc, err.getvalue(), out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_GEOJSON)
def test_convert_malformed_geojson_is_exit_2_with_one_line_or_a_result(tmp_path, doc):
    import json

    rc, err, out = _convert(tmp_path, "in.geojson", json.dumps(doc))
    assert rc in (0, 2), err
    if rc == 2:
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("pathreview: warning:")]
        assert len(lines) == 1 and lines[0].startswith("pathreview: error:") and "Traceback" not in err
        assert not out.exists()
    else:
        assert out.exists()


_CELL = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=5), st.just(""))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.sampled_from(["x,y,class", "image,split,x,y,label", "Centroid X µm,Centroid Y µm,Class", "a,b", ""]),
    rows=st.lists(st.lists(_CELL, min_size=0, max_size=6), max_size=5),
)
def test_convert_malformed_csv_is_exit_2_with_one_line_or_a_result(tmp_path, header, rows):
    text = header + "\n" + "\n".join(",".join(r).replace("\n", " ") for r in rows)
    rc, err, out = _convert(tmp_path, "in.csv", text)
    assert rc in (0, 2), err
    if rc == 2:
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("pathreview: warning:")]
        assert len(lines) == 1 and lines[0].startswith("pathreview: error:") and "Traceback" not in err


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=8,
)
CARD_KEYS = st.sampled_from(["mpp", "classes", "config", "normalisation", "params", "task", "in_channels"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(CARD_KEYS, JSON_VALUES, st.sampled_from(["detector-crchisto", "segmenter-monuseg", "classifier-glas"]))
def test_a_card_with_any_value_loads_and_builds_or_is_input_error(tmp_path_factory, key, value, name):
    """Issue 31: a shipped card with one field replaced by any JSON value either loads and builds its model,
    or is refused with InputError naming the card: never another exception (an 'internal error', exit 1)."""
    import json

    from napari_pathreview.backend.weights import SHIPPED_DIR, ModelCard, build_model

    card = json.loads((SHIPPED_DIR / f"{name}.json").read_text())
    card[key] = value
    p = tmp_path_factory.mktemp("card") / f"{name}.json"
    p.write_text(json.dumps(card))
    try:
        build_model(ModelCard.from_file(p))
    except InputError as e:
        assert name in str(e) or "task" in str(e)
