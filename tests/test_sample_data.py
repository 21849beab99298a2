"""Shipped sample data: real MoNuSeg pixels, attribution present, small, and wired into the manifest."""

from __future__ import annotations

import importlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import napari_pathreview
from napari_pathreview._sample_data import (
    SAMPLE_DIR,
    SAMPLE_PYRAMID,
    SAMPLE_TILE,
    make_sample_pyramid,
    make_sample_tile,
)

FILES = ["monuseg_tile.png", "monuseg_pyramid.ome.tif", "ATTRIBUTION.md"]


def test_samples_ship_inside_the_package():
    assert SAMPLE_DIR == Path(napari_pathreview.__file__).resolve().parent / "sample_data"
    assert all((SAMPLE_DIR / name).is_file() for name in FILES)
    assert not (Path(__file__).resolve().parents[1] / "sample_data").exists()  # one copy, the package's
    assert sum((SAMPLE_DIR / n).stat().st_size for n in FILES) < 2_000_000


def test_attribution_names_source_and_licence():
    text = (SAMPLE_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for needed in ("MoNuSeg", "Kumar", "IEEE", "2017", "TCGA", "CC BY-NC-SA 4.0", "TCGA-A7-A13F-01Z-00-DX1"):
        assert needed in text, needed


def test_sample_pixels_are_the_monuseg_crop(shared_data):
    src = iio.imread(shared_data / "monuseg" / "images" / "TCGA-A7-A13F-01Z-00-DX1.png")[..., :3]
    [(tile, meta, kind)] = make_sample_tile()
    assert kind == "image" and meta["rgb"] is True
    assert tile.shape == (512, 512, 3) and tile.dtype == np.uint8
    assert meta["scale"] == (0.25, 0.25) and meta["metadata"]["mpp"] == 0.25
    np.testing.assert_array_equal(tile, src[244:756, 244:756])


def test_sample_pyramid_is_a_lazy_three_level_multiscale():
    [(levels, meta, kind)] = make_sample_pyramid()
    assert kind == "image" and meta["multiscale"] is True and meta["scale"] == (0.25, 0.25)
    assert [lv.shape for lv in levels] == [(512, 512, 3), (256, 256, 3), (128, 128, 3)]
    [(tile, _, _)] = make_sample_tile()
    np.testing.assert_array_equal(np.asarray(levels[0]), tile)
    # level 1 is the 2x mean of level 0
    ref = tile.astype(np.float64).reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(np.asarray(levels[1]).astype(float) - ref).max() <= 0.5
    assert SAMPLE_PYRAMID.name.endswith(".ome.tif") and SAMPLE_TILE.suffix == ".png"


def test_manifest_commands_resolve():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-pathreview")
    assert pm.name == "napari-pathreview" and pm.display_name == "PathReview"
    keys = {s.key for s in pm.contributions.sample_data}
    assert {"monuseg_tile", "monuseg_pyramid"} <= keys
    for cmd in pm.contributions.commands:
        if cmd.python_name:
            module, attr = cmd.python_name.split(":")
            assert callable(getattr(importlib.import_module(module), attr)), cmd.id
    slides, cells = pm.contributions.readers
    assert slides.accepts_directories and "*.zarr" in slides.filename_patterns
    assert not cells.accepts_directories and {"*.geojson", "*.csv"} <= set(cells.filename_patterns)
    assert {tuple(w.layer_types) for w in pm.contributions.writers} >= {("image",), ("labels",)}


@pytest.mark.parametrize("key", ["monuseg_tile", "monuseg_pyramid"])
def test_viewer_sample_menu(make_napari_viewer, key):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-pathreview", key)
    assert len(layers) == 1 and tuple(layers[0].scale) == (0.25, 0.25)
    assert [str(u) for u in layers[0].units] == ["micrometer", "micrometer"]  # the scale bar reads µm
    assert layers[0].multiscale == (key == "monuseg_pyramid")
