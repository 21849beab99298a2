"""Hostile and odd inputs through the real CLI: each gets a result or one line naming the problem (exit 2),
and nothing is left in the output folder when it fails. The table in docs/reliability.md lists these cases."""

import json

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from napari_pathreview.cli import main


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _rgb(h=300, w=300):
    return (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)


def _write(case, path):
    rgb = _rgb()
    if case == "grey":
        imsave(path, rgb[..., 0], check_contrast=False)
    elif case == "rgba":
        imsave(path, np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), check_contrast=False)
    elif case == "uint16":
        tifffile.imwrite(path, rgb.astype(np.uint16) * 257)
    elif case == "float":
        tifffile.imwrite(path, rgb.astype(np.float32) / 255)
    elif case == "four-channel":
        tifffile.imwrite(path, np.dstack([rgb, rgb[..., :1]]))
    elif case == "one-pixel":
        imsave(path, rgb[:1, :1], check_contrast=False)
    elif case == "non-square-thin":
        imsave(path, _rgb(40, 700), check_contrast=False)
    elif case == "nan":
        f = rgb.astype(np.float32) / 255
        f[0, 0, 0], f[5, 5, 1] = np.nan, np.inf
        tifffile.imwrite(path, f)
    elif case == "empty-file":
        path.write_bytes(b"")
    elif case == "truncated":
        imsave(path.with_name("full.png"), rgb, check_contrast=False)
        data = path.with_name("full.png").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "two-channel":
        tifffile.imwrite(path, rgb[..., :2])
    return path


GOOD = ["grey", "rgba", "uint16", "float", "four-channel", "one-pixel", "non-square-thin"]
BAD = {"nan": "NaN", "empty-file": "cannot read", "truncated": "truncated", "two-channel": "plane"}
EXT = {"uint16": ".tif", "float": ".tif", "four-channel": ".tif", "nan": ".tif", "two-channel": ".tif"}


@pytest.mark.parametrize("case", GOOD)
def test_odd_but_valid_images_are_detected(case, tmp_path, capsys):
    img = _write(case, tmp_path / f"{case}{EXT.get(case, '.png')}")
    rc, out, err = run(capsys, "detect", img, "--out", tmp_path / "o", "--mpp", "0.5", "--device", "cpu")
    assert rc == 0, err
    rows = (tmp_path / "o" / f"{img.stem}.csv").read_text().strip().splitlines()
    assert rows[0].startswith("x,y,")
    doc = json.loads((tmp_path / "o" / f"{img.stem}.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(rows) - 1


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["detect", "segment"])
def test_broken_images_are_one_line_exit_2_and_write_nothing(case, command, tmp_path, capsys):
    img = _write(case, tmp_path / f"{case}{EXT.get(case, '.png')}")
    out = tmp_path / ("o.zarr" if command == "segment" else "o")
    rc, _, err = run(capsys, command, img, "--out", out, "--mpp", "0.5", "--device", "cpu")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert img.name in lines[0] and BAD[case] in lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("mpp", ["0", "-0.5", "1000", "nan", "inf"])
def test_absurd_pixel_sizes_are_refused(mpp, tmp_path, capsys):
    img = _write("rgba", tmp_path / "x.png")
    rc, _, err = run(capsys, "detect", img, "--out", tmp_path / "o", "--mpp", mpp)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "mpp" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("cmd,mpp", [("detect", "50"), ("detect", "0.02"), ("segment", "50"), ("explain", "50")])
def test_a_pixel_size_far_from_the_models_is_refused(cmd, mpp, tmp_path, capsys):
    """Within the readable range but 16x or more from the model's scale: almost always a wrong --mpp
    (50 µm/px would upsample a 300 px image ~90x per side before the network)."""
    img = _write("rgba", tmp_path / "x.png")
    out = tmp_path / ("o.zarr" if cmd == "segment" else "o")
    extra = ["--model", "classifier-glas", "--method", "cam"] if cmd == "explain" else []
    rc, _, err = run(capsys, cmd, img, "--out", out, "--mpp", mpp, "--device", "cpu", *extra)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"{float(mpp):g} µm/px is" in err and "the model's" in err and "check --mpp" in err
    assert not out.exists() or not any(out.iterdir())


def test_output_that_exists_is_not_overwritten_by_a_failed_run(tmp_path, capsys):
    good = _write("rgba", tmp_path / "slide.png")
    rc, _, err = run(capsys, "detect", good, "--out", tmp_path / "o", "--mpp", "0.5", "--device", "cpu")
    assert rc == 0, err
    before = (tmp_path / "o" / "slide.csv").read_bytes()
    _write("truncated", tmp_path / "slide.png")
    rc, _, err = run(capsys, "detect", tmp_path / "slide.png", "--out", tmp_path / "o", "--mpp", "0.5")
    assert rc == 2 and (tmp_path / "o" / "slide.csv").read_bytes() == before


@pytest.mark.parametrize("content,expect", [("{not json", "not valid JSON"), ("a,b\n1\n", "no point coordinates")])
def test_corrupt_annotations_are_refused_by_convert(content, expect, tmp_path, capsys):
    src = tmp_path / ("cells.geojson" if content.startswith("{") else "cells.csv")
    src.write_text(content)
    dst = tmp_path / ("out.csv" if src.suffix == ".geojson" else "out.geojson")
    rc, _, err = run(capsys, "convert", src, dst)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and expect in err and src.name in err
    assert not dst.exists()


def test_empty_feature_collection_converts_to_an_empty_table(tmp_path, capsys):
    src = tmp_path / "none.geojson"
    src.write_text('{"type": "FeatureCollection", "features": []}')
    rc, _, err = run(capsys, "convert", src, tmp_path / "none.csv")
    assert rc == 0, err
    assert (tmp_path / "none.csv").read_text().strip().splitlines() == ["x,y,x_um,y_um,class,score"]


def test_in_memory_segmentation_that_cannot_fit_is_refused_before_any_work():
    """An 80 000² lazy slide would need ~200 GB in memory: refused at once, pointing to the zarr path."""
    import dask.array as da

    from napari_pathreview.backend.errors import InputError
    from napari_pathreview.backend.segmentation import in_memory_bytes, segment
    from napari_pathreview.backend.slides import Slide
    from napari_pathreview.backend.weights import load_model

    model, card = load_model(None, "segmenter", "cpu")
    big = da.zeros((80_000, 80_000, 3), dtype="uint8", chunks=(4096, 4096, 3))
    slide = Slide(levels=[big], mpp=card.mpp, path="huge.zarr", name="huge")
    with pytest.raises(InputError, match=r"huge\.zarr: .*in memory needs .*OME-Zarr"):
        segment(slide, model, card)
    assert in_memory_bytes((1000, 1000), 2) == 1000 * 1000 * (3 + 12 + 12 + 4)


def test_detection_that_cannot_fit_is_refused_before_any_work():
    """A 3 000 000² lazy slide at 0.5 µm/px could hold ~4·10¹⁰ cells: refused at once, nothing read."""
    import dask.array as da

    from napari_pathreview.backend.detection import detect
    from napari_pathreview.backend.errors import InputError
    from napari_pathreview.backend.memory import detect_bytes
    from napari_pathreview.backend.slides import Slide
    from napari_pathreview.backend.weights import load_model

    model, card = load_model(None, "detector", "cpu")
    big = da.zeros((3_000_000, 3_000_000, 3), dtype="uint8", chunks=(8192, 8192, 3))
    with pytest.raises(InputError, match=r"giant\.zarr: detecting cells in 3000000 x 3000000 px .* needs ~\d+"):
        detect(Slide(levels=[big], mpp=0.5, path="giant.zarr", name="giant"), model, card)
    # a real 25 x 25 mm slide (read at its 0.5 µm/px level), tissue edge to edge, fits a 24 GB machine
    assert detect_bytes((50_000, 50_000), 0.5, 320, 44) < 8 * 2**30


def test_enhancement_that_cannot_fit_is_refused(val_sample, monkeypatch):
    """The enhancer's estimate for the cells (and their attention) is checked against the memory
    available before the forward pass; the message says what to do."""
    from napari_pathreview.backend import memory
    from napari_pathreview.backend.enhancement import enhance_points
    from napari_pathreview.backend.errors import InputError
    from napari_pathreview.backend.pipelines import DetectOptions, detect
    from napari_pathreview.backend.weights import load_model

    sample, _ = val_sample
    pts = detect(sample.image, DetectOptions(mpp=0.55))
    model, card = load_model(None, "enhancer", "cpu")
    need = memory.enhance_bytes(len(pts), 64, 4, 2, 64, attention=True)
    assert memory.enhance_bytes(10**6, 64, 4, 2, 64) < 4 * 2**30  # the 10^6-cell bench case fits 4 GB
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: int(need / 0.7) - 1)
    with pytest.raises(InputError, match=rf"enhancing {len(pts)} cells with attention needs .*without attention"):
        enhance_points(pts, model, card, return_attention=True)
    assert len(enhance_points(pts, model, card).enhanced) == len(pts)  # without attention it fits


@pytest.mark.slow
def test_segment_killed_with_sigkill_resumes_to_the_uninterrupted_result(shared_data, tmp_path):
    """A `pathreview segment` SIGKILLed after its first finished band leaves a marked-incomplete scratch
    and no output; the same command then resumes from that band and writes the same labels and table."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import zarr
    from skimage.io import imread

    from napari_pathreview.backend.segmentation import INCOMPLETE_MARKER

    files = sorted((shared_data / "monuseg" / "images").glob("*.png"))[:4]
    mosaic = np.concatenate([imread(f)[..., :3] for f in files], axis=0)  # 4000 x 1000, real tissue
    src = tmp_path / "slide.png"
    imsave(src, mosaic, check_contrast=False)
    cmd = [sys.executable, "-m", "napari_pathreview.cli", "segment", str(src), "--mpp", "0.25", "--out"]

    ref = subprocess.run(cmd + [str(tmp_path / "ref.zarr")], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr

    out, scratch = tmp_path / "seg.zarr", tmp_path / ".seg.zarr.scratch"
    proc = subprocess.Popen(cmd + [str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (scratch / "state.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and (scratch / INCOMPLETE_MARKER).exists()
    first = json.loads((scratch / "state.json").read_text())["final"]
    assert 0 < first < mosaic.shape[0]

    again = subprocess.run(cmd + [str(out)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"at row {first} of {mosaic.shape[0]}" in again.stderr + again.stdout
    assert not scratch.exists()
    a, b = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r"), zarr.open_group(str(out), mode="r")
    la, lb = np.asarray(a["0"]), np.asarray(b["0"])
    assert la.max() > 500 and np.array_equal(la, lb)
    assert (tmp_path / "ref.zarr" / "instances.csv").read_text() == (out / "instances.csv").read_text()


# ---- issue 31: failures 3-6 (bundled sample and tiny synthetic files only) -----------------------------


def test_explain_that_cannot_fit_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """Failure 3: a lazily created 200 000² zarr (no chunk written) is refused by `explain` at once, from
    the level it would read, instead of reading it whole; the backend `explain` refuses a lazy slide too."""
    import dask.array as da
    import zarr

    from napari_pathreview.backend import memory
    from napari_pathreview.backend.errors import InputError
    from napari_pathreview.backend.pipelines import ExplainOptions, explain
    from napari_pathreview.backend.slides import Slide

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 8 * 2**30)
    big = tmp_path / "big.zarr"
    zarr.open_array(
        str(big), mode="w", shape=(200_000, 200_000, 3), chunks=(4096, 4096, 3), dtype="uint8", zarr_format=2
    )
    rc, _, err = run(
        capsys,
        "explain",
        big,
        "--out",
        tmp_path / "o",
        "--mpp",
        "0.5",
        "--model",
        "classifier-glas",
        "--method",
        "cam",
        "--device",
        "cpu",
    )
    errors = [ln for ln in err.strip().splitlines() if not ln.startswith("pathreview: warning:")]
    assert rc == 2 and len(errors) == 1, err
    assert "big.zarr: explaining 200000 x 200000 px" in errors[0] and "GB available" in errors[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    lazy = Slide(
        levels=[da.zeros((200_000, 200_000, 3), "uint8", chunks=(8192, 8192, 3))],
        mpp=0.5,
        path="lazy.zarr",
        name="lazy",
    )
    with pytest.raises(InputError, match="lazy: explaining 200000 x 200000 px"):
        explain(lazy, ExplainOptions("classifier-glas", "cam", device="cpu"), name="lazy")


def test_cmyk_jpeg_is_read_as_rgb(tmp_path):
    """Failure 4: a CMYK JPEG's four ink channels are converted to RGB, not taken for RGBA."""
    from PIL import Image

    from napari_pathreview._sample_data import SAMPLE_TILE
    from napari_pathreview.backend.slides import open_slide

    rgb = Image.open(SAMPLE_TILE).convert("RGB")
    rgb.convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    s = open_slide(tmp_path / "c.jpg")
    assert s.channels == 3
    diff = np.abs(np.asarray(s.levels[0], float) - np.asarray(rgb, float)).mean()
    assert diff < 3, diff  # JPEG loss only; read as RGBA the channels would be the inks (mean diff ~100)


def _geojson(tmp_path, geometries, **props):
    feats = [
        {
            "type": "Feature",
            "id": f"f{i}",
            "geometry": g,
            "properties": {"classification": {"name": "tumor", "color": [255, 0, 0]}},
        }
        for i, g in enumerate(geometries)
    ]
    path = tmp_path / "cells.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats, "properties": props}))
    return path


@pytest.mark.parametrize(
    "geometry,cells",
    [
        ({"type": "MultiPoint", "coordinates": [[1, 2], [3, 4], [5, 6]]}, 3),
        (
            {
                "type": "GeometryCollection",
                "geometries": [
                    {"type": "Point", "coordinates": [1, 2]},
                    {"type": "MultiPoint", "coordinates": [[3, 4], [5, 6]]},
                ],
            },
            3,
        ),
        (
            {
                "type": "MultiPolygon",
                "coordinates": [[[[0, 0], [2, 0], [2, 2], [0, 0]]], [[[10, 10], [12, 10], [12, 12], [10, 10]]]],
            },
            2,
        ),
    ],
)
def test_geojson_multipoint_and_collections_are_expanded(geometry, cells, tmp_path, capsys):
    """Failure 5: every point of a MultiPoint / GeometryCollection is a cell (convert and the reader)."""
    from napari_pathreview._reader import read_points

    src = _geojson(tmp_path, [geometry])
    rc, out, err = run(capsys, "convert", src, tmp_path / "cells.csv")
    assert rc == 0, err
    assert json.loads(out)["cells"] == cells
    assert len((tmp_path / "cells.csv").read_text().strip().splitlines()) == cells + 1
    assert len(read_points(str(src))[0][0]) == cells


def test_geojson_classes_given_as_one_string_is_one_class(tmp_path, capsys):
    src = _geojson(tmp_path, [{"type": "Point", "coordinates": [1, 2]}], classes="tumor")
    rc, out, err = run(capsys, "convert", src, tmp_path / "cells.csv")
    assert rc == 0, err and json.loads(out)["classes"] == ["tumor"]
    assert json.loads(out)["classes"] == ["tumor"]


@pytest.mark.parametrize(
    "geometry,needle",
    [
        ({"type": "LineString", "coordinates": [[1, 2], [3, 4]]}, "is a LineString"),
        ({"type": "Point", "coordinates": ["1", "2"]}, "malformed coordinates"),
        ({"type": "Point", "coordinates": [float("nan"), 2]}, "NaN or infinite"),
        ({"type": "GeometryCollection", "geometries": 5}, "malformed GeometryCollection"),
    ],
)
def test_geojson_geometries_that_are_not_cells_are_refused_by_name(geometry, needle, tmp_path, capsys):
    src = _geojson(tmp_path, [geometry])
    rc, _, err = run(capsys, "convert", src, tmp_path / "cells.csv")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err and "feature f0" in err, err
    assert not (tmp_path / "cells.csv").exists()


def test_deeply_nested_json_is_refused_in_one_line(tmp_path, capsys):
    src = tmp_path / "deep.geojson"
    src.write_text("[" * 200_000 + "]" * 200_000)
    rc, _, err = run(capsys, "convert", src, tmp_path / "cells.csv")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "nested too deeply" in err


def test_geojson_written_is_valid_json(tmp_path):
    """NaN / infinite values are refused by name instead of written as `NaN` (not JSON)."""
    from napari_pathreview.backend.errors import InputError
    from napari_pathreview.backend.exchange import write_geojson
    from napari_pathreview.backend.points import CellPoints

    pts = CellPoints(
        np.array([[1.0, np.nan]], np.float32),
        np.array([0]),
        np.array([1.0], np.float32),
        np.array([[1.0]], np.float32),
        ["tumor"],
        0.5,
        None,
        "t",
    )
    with pytest.raises(InputError, match="NaN or infinite"):
        write_geojson(pts, tmp_path / "x.geojson")
    assert not (tmp_path / "x.geojson").exists()


def _sample_pyramid_zarr(tmp_path, reverse: bool):
    """The sample written as an OME-Zarr pyramid; ``reverse``: its ``.zattrs`` list the levels smallest
    first (coordinate scales moved with them)."""
    from skimage.io import imread

    from napari_pathreview._sample_data import SAMPLE_TILE
    from napari_pathreview.backend.slides import ZarrLayout, write_ome_zarr

    path = tmp_path / ("rev.zarr" if reverse else "fwd.zarr")
    write_ome_zarr(path, imread(SAMPLE_TILE)[..., :3], 0.25, ZarrLayout(chunks=128))
    if reverse:
        attrs = json.loads((path / ".zattrs").read_text())
        attrs["multiscales"][0]["datasets"].reverse()
        (path / ".zattrs").write_text(json.dumps(attrs))
    return path


def test_ome_zarr_levels_listed_out_of_order_are_sorted_by_size(tmp_path):
    """Failure 6a: the largest level is level 0 and the pixel size is that level's."""
    from napari_pathreview.backend.slides import open_slide

    fwd, rev = (open_slide(_sample_pyramid_zarr(tmp_path, r)) for r in (False, True))
    assert len(rev.levels) > 1 and [a.shape for a in rev.levels] == [a.shape for a in fwd.levels]
    assert rev.shape == (512, 512) and rev.mpp == pytest.approx(0.25)
    assert np.array_equal(np.asarray(rev.levels[0]), np.asarray(fwd.levels[0]))


def test_missing_zarr_chunks_are_reported(tmp_path, capsys):
    """Failure 6b: chunks deleted from a store read as black; open_slide says so, and the CLI prints it
    as one warning line."""
    import warnings

    from napari_pathreview.backend.slides import open_slide

    path = _sample_pyramid_zarr(tmp_path, False)
    chunks = sorted(p for p in (path / "0").rglob("*") if p.is_file() and not p.name.startswith("."))
    for p in chunks[: len(chunks) // 2]:
        p.unlink()
    with pytest.warns(UserWarning, match=r"fwd\.zarr: \d+ of \d+ chunks .* not stored"):
        open_slide(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_slide(_sample_pyramid_zarr(tmp_path, True))  # a complete store: no warning
    rc, _, err = run(capsys, "detect", path, "--out", tmp_path / "o", "--device", "cpu")
    assert rc == 0 and err.count("pathreview: warning:") >= 1
    assert all(ln.startswith(("pathreview: warning:", "[")) for ln in err.strip().splitlines()), err


def test_a_fifo_named_like_an_image_is_refused_without_hanging(tmp_path, capsys):
    """Failure 6c: opening a FIFO would block until someone writes to it; it is refused by its kind."""
    import os

    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    rc, _, err = run(capsys, "detect", fifo, "--out", tmp_path / "o", "--mpp", "0.5")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "f.png: is not a regular file" in err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["detect", "--threshold", "nan"], "--threshold nan"),
        (["detect", "--threshold", "2"], "--threshold 2"),
        (["detect", "--threshold", "-1"], "--threshold -1"),
        (["segment", "--overlap", "nan"], "--overlap nan"),
        (["segment", "--tile", "100000"], "--tile 100000"),
        (["detect", "--device", "meta"], "--device 'meta'"),
        (["detect", "--device", "xla"], "--device 'xla'"),
        (["detect", "--workers", "0"], "--workers 0"),
    ],
)
def test_nonsense_options_are_refused_before_any_work(args, needle, tmp_path, capsys):
    """Weak: values that used to give 0 cells and a `.done.json`, a MemoryError or an internal error."""
    from napari_pathreview._sample_data import SAMPLE_TILE

    out = tmp_path / ("o.zarr" if args[0] == "segment" else "o")
    rc, _, err = run(capsys, args[0], SAMPLE_TILE, "--out", out, "--mpp", "0.25", *args[1:])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_an_output_file_is_replaced_by_a_store_with_overwrite(tmp_path):
    """Weak: `--out FILE.zarr --overwrite` on a file ended in NotADirectoryError after the whole run."""
    from napari_pathreview.backend.atomic import atomic_path

    target = tmp_path / "o.zarr"
    target.write_text("a file")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / ".zgroup").write_text("{}")
    assert target.is_dir() and (target / ".zgroup").exists()


def test_evaluate_says_which_points_it_cannot_score(mini_points, tmp_path, capsys):
    """Issue 31: labels that are not the model's classes and points outside their image are no longer
    dropped or counted as misses without a word: one warning line each, and the run still scores."""
    import shutil

    data = tmp_path / "pts"
    shutil.copytree(mini_points, data)
    with open(data / "points.csv", "a") as f:
        f.write("TCGA-50-5931,train,20.0,30.0,tumour\nTCGA-50-5931,train,5000.0,30.0,epithelial\n")
    assert main(["evaluate", "detector", "--data", str(data), "--split", "train", "--json"]) == 0
    cap = capsys.readouterr()
    warn = [ln for ln in cap.err.splitlines() if ln.startswith("pathreview: warning:")]
    assert any("1 points have labels ['tumour']" in w and "detection only" in w for w in warn)
    assert any("1 points lie outside their image" in w and "TCGA-50-5931" in w for w in warn)
    assert json.loads(cap.out.strip().splitlines()[-1])["detection"]["f1"] > 0.5


@pytest.mark.parametrize(
    "extra,message",
    [(["--weights", "/nonexistent/w.safetensors"], "weights file not found"), (["--device", "cuda:3"], "cuda:3")],
)
def test_a_bad_model_or_device_with_workers_is_one_line_before_any_work(mini_points, tmp_path, capsys, extra, message):
    """Issue 31: ``--workers 2`` with a bad ``--weights`` or an absent GPU used to print 8-13 lines of Dask
    worker tracebacks; the model and device are checked before the cluster starts: one line, exit 2."""
    images = sorted((mini_points / "images").glob("*.png"))
    argv = ["detect", *map(str, images), "--out", str(tmp_path / "o"), "--mpp", "0.55", "--workers", "2", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_points_csv_with_a_non_numeric_coordinate_is_one_line_naming_it(mini_points, tmp_path, capsys):
    import shutil

    data = tmp_path / "pts"
    shutil.copytree(mini_points, data)
    lines = (data / "points.csv").read_text().splitlines()
    head, first = lines[0], lines[1].split(",")
    first[head.split(",").index("x")] = "abc"
    (data / "points.csv").write_text("\n".join([head, ",".join(first), *lines[2:]]) + "\n")
    assert main(["evaluate", "detector", "--data", str(data), "--split", "train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "points.csv" in err[0] and "x='abc'" in err[0]


def test_a_png_too_large_to_decode_is_refused_from_its_header(tmp_path, capsys):
    """A 100000² PNG of a few bytes (a decompression bomb) is refused before decoding, from its header and
    the memory available, with advice that exists; Pillow's fixed pixel limit no longer refuses
    legitimate large images (a 14000² PNG reads)."""
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    w = h = 100_000
    raw = zlib.compress(b"".join(b"\x00" + b"\x00" * (w * 3) for _ in range(4)))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", raw)
    (tmp_path / "bomb.png").write_bytes(png + chunk(b"IEND", b""))
    assert main(["detect", str(tmp_path / "bomb.png"), "--out", str(tmp_path / "o"), "--mpp", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "100000 x 100000 px" in err[0] and "OME-TIFF or OME-Zarr" in err[0]


@pytest.mark.parametrize("command", ["detect", "enhance", "segment", "explain"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(command, tmp_path, capsys, monkeypatch):
    """``--out`` in a folder the user cannot write (was: detect / enhance computed everything, then failed).
    Root ignores permission bits, so the denial comes from ``os.access`` as a read-only mount gives it."""
    import os

    from napari_pathreview._sample_data import SAMPLE_TILE
    from napari_pathreview.backend import atomic

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(
        atomic.os, "access", lambda p, mode: False if os.fspath(p).startswith(str(ro)) else real(p, mode)
    )
    out = ro / "o.zarr" if command == "segment" else ro
    extra = ["--model", "classifier-glas"] if command == "explain" else []
    rc, _, err = run(capsys, command, SAMPLE_TILE, "--out", out, "--device", "cpu", *extra)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "cannot write in this folder" in err and str(ro) in err
    assert os.listdir(ro) == []
