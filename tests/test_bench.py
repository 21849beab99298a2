"""``pathreview bench``'s registry: every benchmark (the viewer's included) registered without loading
napari, Qt or torch, unknown names refused, and a small matching run with the keys the docs quote."""

import subprocess
import sys

import pytest

NAMES = {
    "enhancer",
    "few-shot",
    "matching",
    "precision",
    "segment-zarr",
    "slide-memory",
    "slide-throughput",
    "tiling",
    "train-step",
    "viewer",
}


def test_registry_loads_no_gui_and_no_torch():
    code = (
        "import sys\nfrom napari_pathreview.bench import BENCHES\n"
        "print(sorted(BENCHES))\n"
        "print(sorted(m for m in ('napari', 'qtpy', 'vispy', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names, loaded = out.stdout.strip().splitlines()
    assert set(eval(names)) == NAMES and eval(loaded) == []


def test_unknown_bench_names_the_available_ones():
    from napari_pathreview.backend.errors import InputError
    from napari_pathreview.bench import run_bench

    with pytest.raises(InputError, match="available: enhancer, few-shot, matching, .*viewer"):
        run_bench("nope")


def test_matching_bench_small():
    from napari_pathreview.bench import run_bench

    res = run_bench("matching", n=3000, dense_n=400)
    assert {"name", "reference", "ours_s", "reference_s", "ratio", "same_f1", "large_n_f1"} <= set(res)
    assert res["name"] == "matching" and res["same_f1"] is True
