"""Issue 31, "more than one line": libraries' log lines and warnings, and Dask workers' failures, folded
into the one line a refusal prints (run as a separate process, so anything written to the process's
stderr by any library or worker is seen)."""

import pickle
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_pathreview._sample_data import SAMPLE_PYRAMID


def run(*args, cwd=None):
    p = subprocess.run(
        [sys.executable, "-m", "napari_pathreview.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    return p.returncode, p.stdout, p.stderr


def lines(err: str) -> list[str]:
    """stderr without progress lines (``[i/n] ...``)."""
    return [ln for ln in err.strip().splitlines() if not ln.startswith("[")]


def test_a_truncated_ome_tiff_is_one_line_without_tifffiles_log(tmp_path):
    """tifffile logged 1-3 lines ("TiffTag 270 invalid value offset", "generic series raised ...") before
    the refusal; now only the refusal, naming the file and the fix."""
    data = SAMPLE_PYRAMID.read_bytes()
    for cut in (1000, 100_000, len(data) - 1000):
        src = tmp_path / f"cut{cut}.ome.tif"
        src.write_bytes(data[:cut])
        rc, _, err = run("detect", src, "--out", tmp_path / "o", "--device", "cpu")
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert src.name in err and "truncated" in err and "copy or export it again" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_tiff_with_a_damaged_tag_that_still_opens_is_one_warning(tmp_path, mini_points):
    """A TIFF whose description tag points past the end still opens: one warning naming the file, the
    problem and the fix, then the cells."""
    import imageio.v3 as iio

    rgb = iio.imread(mini_points / "images" / "TCGA-50-5931.png")[..., :3]
    src = tmp_path / "tag.tif"
    tifffile.imwrite(src, rgb, description="a description tifffile reads from an offset")
    raw = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tf:
        entry, order = tf.pages[0].tags[270].offset, tf.byteorder
    struct.pack_into(order + "I", raw, entry + 8, len(raw) + 1000)  # the tag's value offset, past the end
    src.write_bytes(bytes(raw))
    rc, out, err = run("detect", src, "--out", tmp_path / "o", "--mpp", "0.55", "--device", "cpu")
    assert rc == 0, err
    (line,) = lines(err)
    assert line.startswith("pathreview: warning: ") and "tag.tif: tifffile skipped damaged parts" in line
    assert "copy or export it again" in line
    assert (tmp_path / "o" / "tag.csv").read_text().count("\n") > 50


def test_a_legacy_pickle_checkpoint_is_one_line_without_torchs_warning(tmp_path, mini_points):
    """A ``pickle.dump`` of a state_dict (protocol 4) made torch warn "Detected pickle protocol 4" beside the
    refusal, whose words were torch's advice to load with weights_only=False; now one line naming the file
    and the fix."""
    import torch

    for name, obj in (("proto4.pt", {"w": np.zeros(3)}), ("tensors.pt", {"w": torch.zeros(3)})):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=4)
        img = mini_points / "images" / "TCGA-50-5931.png"
        rc, _, err = run("detect", img, "--out", tmp_path / "o", "--mpp", "0.55", "--weights", tmp_path / name)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert name in err and "refused to load" in err and "convert it to safetensors" in err
        assert "weights_only" not in err and "protocol" not in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,words",
    [(["--weights", "/nonexistent/w.safetensors"], "weights file not found"), (["--device", "cuda:3"], "cuda:3")],
)
def test_workers_with_a_bad_model_or_device_print_one_line_in_all(mini_points, tmp_path, extra, words):
    """The whole process's stderr (Dask's own logs included) is one line."""
    images = sorted((mini_points / "images").glob("*.png"))
    rc, _, err = run("detect", *images, "--out", tmp_path / "o", "--mpp", "0.55", "--workers", "2", *extra)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and words in err, err


@pytest.mark.slow
def test_a_slide_failing_on_a_worker_is_one_line_and_tiffs_run_on_workers(mini_points, tmp_path):
    """A slide that fails inside a Dask worker (NaN pixels, found only when read) is the worker's one line,
    none of Dask's logs; an OME-TIFF runs on workers (its reader is computed in the worker: was "internal
    error: Could not serialize object of type _HLGExprSequence")."""
    good = mini_points / "images" / "TCGA-50-5931.png"
    nan = np.random.default_rng(0).random((200, 200, 3)).astype(np.float32)
    nan[5, 5, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan, photometric="rgb")
    rc, _, err = run("detect", good, tmp_path / "nan.tif", "--out", tmp_path / "o", "--mpp", "0.55", "--workers", "2")
    assert rc == 2 and lines(err) == [ln for ln in err.strip().splitlines() if ln.startswith("pathreview")], err
    (line,) = lines(err)
    assert "nan.tif: contains NaN or infinite pixel values" in line
    shutil.copy(SAMPLE_PYRAMID, tmp_path / "s.ome.tif")
    rc, out, err = run(
        "detect", good, tmp_path / "s.ome.tif", "--out", tmp_path / "w", "--workers", "2", "--mpp", "0.5"
    )
    assert rc == 0 and not lines(err), err
    assert (tmp_path / "w" / "s.csv").read_text().count("\n") > 20
