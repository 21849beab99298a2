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
