"""npe2 reader and writers: real MoNuSeg tiles in, napari LayerData out, OME-Zarr written back."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from napari_pathreview._reader import get_reader, read_slides
from napari_pathreview._writer import write_image_layer, write_labels_layer
from napari_pathreview.backend.errors import InputError
from napari_pathreview.backend.slides import ZarrLayout, open_slide, write_ome_zarr, write_tiff_pyramid


@pytest.fixture(scope="module")
def he(mini_he_and_mask):
    return np.ascontiguousarray(mini_he_and_mask[0][:256, :320])


@pytest.fixture(scope="module")
def mask(mini_he_and_mask):
    return np.ascontiguousarray(mini_he_and_mask[1][:256, :320])


@pytest.fixture
def files(tmp_path, he, mask):
    png = tmp_path / "tile.png"
    iio.imwrite(png, he)
    tif = write_tiff_pyramid(str(tmp_path / "pyr.ome.tif"), he, mpp=0.25, n_levels=3, tile=128)
    zar = write_ome_zarr(str(tmp_path / "img.ome.zarr"), he, 0.5, ZarrLayout(chunks=128))
    lab = write_ome_zarr(str(tmp_path / "nuclei.zarr"), mask, 0.25, ZarrLayout(chunks=128, labels=True))
    return {"png": str(png), "tif": tif, "zarr": zar, "labels": lab}


def test_get_reader_accepts_known_kinds_only(tmp_path, files):
    for p in files.values():
        assert get_reader(p) is read_slides
    assert get_reader(list(files.values())) is read_slides
    assert get_reader(files["zarr"] + "/") is read_slides
    csv = tmp_path / "cells.csv"
    csv.write_text("x,y\n1,2\n")
    assert get_reader(str(csv)) is None
    assert get_reader([files["png"], str(csv)]) is None
    plain_dir = tmp_path / "just_a_folder"
    plain_dir.mkdir()
    assert get_reader(str(plain_dir)) is None
    assert get_reader([]) is None


def test_png_layer(files, he):
    [(data, meta, kind)] = get_reader(files["png"])(files["png"])
    assert kind == "image"
    assert meta["scale"] == (1.0, 1.0) and meta["metadata"] == {"mpp": None, "path": files["png"]}
    assert meta["rgb"] is True and meta["multiscale"] is False and meta["name"] == "tile"
    np.testing.assert_array_equal(np.asarray(data), he)


def test_pyramid_and_zarr_layers_are_scaled_in_microns(files, he):
    (pyr, pmeta, _), (zar, zmeta, _) = read_slides([files["tif"], files["zarr"]])
    assert pmeta["multiscale"] is True and len(pyr) == 3
    assert pmeta["scale"] == (0.25, 0.25) and pmeta["metadata"]["mpp"] == 0.25
    assert [lv.shape for lv in pyr] == [(256, 320, 3), (128, 160, 3), (64, 80, 3)]
    assert (
        zmeta["scale"] == (0.5, 0.5) and zmeta["multiscale"] is True and len(zar) == 3
    )  # 256x320 -> 160 -> 80 px (fits a 128 chunk)
    np.testing.assert_array_equal(np.asarray(zar[0]), he)


def test_labels_zarr_is_a_labels_layer(files, mask):
    [(data, meta, kind)] = read_slides(files["labels"])
    assert kind == "labels" and "rgb" not in meta
    assert meta["scale"] == (0.25, 0.25)
    np.testing.assert_array_equal(np.asarray(data[0]), mask)


def test_reader_reports_bad_files_by_name(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    reader = get_reader(str(bad))
    with pytest.raises(InputError, match="broken.tif"):
        reader(str(bad))


def test_writers_round_trip(tmp_path, files, he, mask):
    [(data, meta, _)] = read_slides(files["tif"])
    out = str(tmp_path / "saved.ome.zarr")
    assert write_image_layer(out, data, meta) == [out]
    s = open_slide(out)
    assert s.mpp == pytest.approx(0.25) and not s.is_labels
    np.testing.assert_array_equal(np.asarray(s.levels[0]), he)

    lab = str(tmp_path / "saved_labels.zarr")
    assert write_labels_layer(lab, mask, {"name": "nuclei", "scale": (0.5, 0.5), "metadata": {}}) == [lab]
    t = open_slide(lab)
    assert t.is_labels and t.mpp == pytest.approx(0.5)  # taken from the layer's scale
    np.testing.assert_array_equal(np.asarray(t.levels[0]), mask)
    # napari asks before replacing a file, so the writer overwrites
    write_labels_layer(lab, mask[:64, :64], {"name": "nuclei", "scale": (1, 1), "metadata": {}})
    assert open_slide(lab).shape == (64, 64) and open_slide(lab).mpp is None


def test_writer_rejects_stacks(tmp_path, he):
    stack = np.stack([he[..., 0]] * 5)
    with pytest.raises(InputError, match="stack.zarr.*2-D"):
        write_image_layer(str(tmp_path / "stack.zarr"), stack, {"name": "s", "rgb": False})


def test_viewer_opens_png_and_pyramid(make_napari_viewer, files):
    viewer = make_napari_viewer()
    [tile] = viewer.open(files["png"], plugin="napari-pathreview")
    [pyr] = viewer.open(files["tif"], plugin="napari-pathreview")
    assert tuple(tile.scale) == (1.0, 1.0) and tile.rgb and not tile.multiscale
    assert tuple(pyr.scale) == (0.25, 0.25)
    assert pyr.multiscale and len(pyr.data) == 3 and pyr.rgb
    assert pyr.metadata["mpp"] == 0.25
    assert pyr.data[0].shape == (256, 320, 3)


def test_a_dataset_csv_opens_the_points_of_the_open_image_not_one_layer_per_image(make_napari_viewer, mini_points):
    """points.csv of a data set lists several images: napari gets the points of the image open in the viewer
    (one layer), or of the first image with a warning saying how to get another's — not a layer per image."""
    import warnings

    path = str(mini_points / "points.csv")
    viewer = make_napari_viewer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = viewer.open(path, plugin="napari-pathreview")
    assert len(layers) == 1 and layers[0].name.endswith("TCGA-50-5931")
    assert any("lists 2 images" in str(c.message) for c in caught)
    viewer.layers.clear()
    viewer.add_image(iio.imread(mini_points / "images" / "TCGA-B0-5698.png"), name="TCGA-B0-5698", rgb=True)
    layers = viewer.open(path, plugin="napari-pathreview")
    assert len(layers) == 1 and layers[0].name.endswith("TCGA-B0-5698")
    import csv

    n = sum(1 for r in csv.DictReader(open(path)) if r["image"] == "TCGA-B0-5698")
    assert len(layers[0].data) == n
