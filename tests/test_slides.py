"""backend.slides: opening slides of every supported kind, mpp, writers, input errors, display conversion.

Every input is built from a real MoNuSeg H&E crop and its mask in tests/data.
"""

from __future__ import annotations

import json
import math
import os
import threading

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from napari_pathreview.backend.errors import Cancelled, InputError
from napari_pathreview.backend.slides import (
    Slide,
    ZarrLayout,
    open_slide,
    to_rgb_uint8,
    validate_mpp,
    write_ome_zarr,
    write_tiff_pyramid,
)

# ---- fixtures built from real data ---------------------------------------------------------------


@pytest.fixture(scope="module")
def he(mini_he_and_mask):
    """An odd-sized (301 x 259) RGB crop of a real MoNuSeg H&E image."""
    return np.ascontiguousarray(mini_he_and_mask[0][:301, :259])


@pytest.fixture(scope="module")
def mask(mini_he_and_mask):
    """The matching crop of its instance mask (uint16 labels)."""
    return np.ascontiguousarray(mini_he_and_mask[1][:301, :259])


@pytest.fixture
def png_path(tmp_path, he):
    p = tmp_path / "tile.png"
    iio.imwrite(p, he)
    return p


@pytest.fixture
def tiff_path(tmp_path, he):
    return write_tiff_pyramid(str(tmp_path / "pyr.ome.tif"), he, mpp=0.25, n_levels=3, tile=128)


def mean2(a: np.ndarray) -> np.ndarray:
    """Reference 2x mean downsampling with replicated edges (independent of the implementation)."""
    h, w = a.shape[:2]
    a = np.pad(a.astype(np.float64), [(0, h % 2), (0, w % 2)] + [(0, 0)] * (a.ndim - 2), mode="edge")
    out = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, *a.shape[2:]).mean(axis=(1, 3))
    return np.rint(out)


# ---- reading ---------------------------------------------------------------------------------------


def test_png_single_level(png_path, he):
    s = open_slide(png_path)
    assert isinstance(s, Slide) and isinstance(s.levels[0], da.Array)
    assert s.shape == (301, 259) and s.channels == 3 and len(s.levels) == 1
    assert s.mpp is None and s.level_mpp(0) is None
    assert s.name == "tile" and s.path == str(png_path)
    np.testing.assert_array_equal(np.asarray(s.levels[0]), he)


def test_tiff_pyramid_levels_mpp_and_pixels(tiff_path, he):
    s = open_slide(tiff_path)
    assert [lv.shape for lv in s.levels] == [(301, 259, 3), (151, 130, 3), (76, 65, 3)]
    assert s.mpp == pytest.approx(0.25)
    assert s.downsamples[0] == 1.0
    assert s.downsamples[1] == pytest.approx(2.0, rel=0.01)
    assert s.level_mpp(2) == pytest.approx(0.25 * s.downsamples[2])
    assert s.name == "pyr"
    np.testing.assert_array_equal(np.asarray(s.levels[0]), he)
    np.testing.assert_array_equal(np.asarray(s.levels[1]), mean2(he))


def test_read_region_is_clipped(tiff_path, he):
    s = open_slide(tiff_path)
    np.testing.assert_array_equal(s.read_region(0, 10, 20, 30, 40), he[10:40, 20:60])
    edge = s.read_region(0, 290, 250, 64, 64)
    assert edge.shape == (11, 9, 3)
    np.testing.assert_array_equal(edge, he[290:, 250:])
    assert s.read_region(0, -5, -5, 10, 10).shape == (5, 5, 3)
    assert s.read_region(1, 500, 500, 10, 10).shape[:2] == (0, 0)


def test_ome_zarr_round_trip(tmp_path, he):
    out = write_ome_zarr(str(tmp_path / "he.ome.zarr"), he, 0.5, ZarrLayout(chunks=64))
    assert out == str(tmp_path / "he.ome.zarr")
    assert not os.path.exists(out + ".partial")
    s = open_slide(out)
    assert s.mpp == pytest.approx(0.5)
    assert len(s.levels) == 4  # 301 -> 151 -> 76 -> 38 (fits one 64-chunk)
    np.testing.assert_array_equal(np.asarray(s.levels[0]), he)
    np.testing.assert_array_equal(np.asarray(s.levels[1]), mean2(he))
    np.testing.assert_array_equal(np.asarray(s.levels[2]), mean2(np.asarray(s.levels[1])))
    attrs = json.loads((tmp_path / "he.ome.zarr" / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["axes"][1]["unit"] == "micrometer"
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.5, 0.5]


def test_ome_zarr_from_lazy_dask_and_unknown_mpp(tmp_path, he):
    lazy = da.from_array(he, chunks=(100, 100, 3)).map_blocks(lambda b: b.copy())
    out = write_ome_zarr(tmp_path / "lazy.zarr", lazy, None, ZarrLayout(n_levels=2, chunks=128))
    s = open_slide(out)
    assert s.mpp is None and len(s.levels) == 2
    np.testing.assert_array_equal(np.asarray(s.levels[0]), he)
    assert open_slide(out, mpp=0.3).mpp == 0.3


def test_ome_zarr_labels_use_stride(tmp_path, mask):
    out = write_ome_zarr(str(tmp_path / "lab.zarr"), mask, 0.25, ZarrLayout(n_levels=3, chunks=64, labels=True))
    s = open_slide(out)
    assert s.is_labels and s.channels == 1 and s.mpp == pytest.approx(0.25)
    assert s.levels[0].dtype == mask.dtype
    np.testing.assert_array_equal(np.asarray(s.levels[0]), mask)
    np.testing.assert_array_equal(np.asarray(s.levels[1]), mask[::2, ::2])
    np.testing.assert_array_equal(np.asarray(s.levels[2]), mask[::4, ::4])
    assert set(np.unique(np.asarray(s.levels[2]))) <= set(np.unique(mask))


def test_ome_zarr_refuses_to_overwrite_and_is_atomic(tmp_path, he):
    p = str(tmp_path / "o.zarr")
    write_ome_zarr(p, he, 0.25, ZarrLayout(chunks=128))
    with pytest.raises(InputError, match="o.zarr.*already exists"):
        write_ome_zarr(p, he, 0.25)
    write_ome_zarr(p, he[:100, :100], 0.5, ZarrLayout(chunks=128), overwrite=True)
    assert open_slide(p).shape == (100, 100) and open_slide(p).mpp == 0.5

    cancel = threading.Event()
    seen = []

    def progress(i, n, msg):
        seen.append((i, n))
        if i == 2:
            cancel.set()

    q = str(tmp_path / "c.zarr")
    with pytest.raises(Cancelled):
        write_ome_zarr(q, he, 0.25, ZarrLayout(chunks=64), progress=progress, cancel=cancel)
    assert not os.path.exists(q) and not os.path.exists(q + ".partial")
    assert seen[0][1] > 2


def test_zarr_v3_ngff05_channel_first_nanometres(tmp_path, he):
    """A zarr v3 OME-Zarr 0.5 store, channel-first, scale in nanometres."""
    p = tmp_path / "v3.ome.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=3)
    a = g.create_array("s0", shape=(3,) + he.shape[:2], chunks=(3, 128, 128), dtype="uint8")
    a[:] = np.moveaxis(he, -1, 0)
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "nanometer"},
                    {"name": "x", "type": "space", "unit": "nanometer"},
                ],
                "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 250, 250]}]}],
            }
        ],
    }
    s = open_slide(p)
    assert (p / "zarr.json").exists()
    assert s.mpp == pytest.approx(0.25) and s.channels == 3
    np.testing.assert_array_equal(np.asarray(s.levels[0]), he)


def test_plain_zarr_array_channel_first(tmp_path, he):
    p = tmp_path / "plain.zarr"
    z = zarr.create_array(str(p), shape=(3,) + he.shape[:2], chunks=(3, 100, 100), dtype="uint8")
    z[:] = np.moveaxis(he, -1, 0)
    s = open_slide(p)
    assert s.mpp is None and len(s.levels) == 1
    np.testing.assert_array_equal(np.asarray(s.levels[0]), he)


def test_ome_tiff_channel_first_and_physical_size_units(tmp_path, he):
    p = tmp_path / "cyx.ome.tif"
    cyx = np.moveaxis(he[..., :2], -1, 0).astype(np.uint16) * 200  # 2 "fluorescence" channels
    tifffile.imwrite(p, cyx, ome=True, metadata={"axes": "CYX", "PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm"})
    s = open_slide(p)
    assert s.channels == 2 and s.shape == he.shape[:2] and s.mpp == pytest.approx(0.5)
    np.testing.assert_array_equal(np.asarray(s.levels[0]), np.moveaxis(cyx, 0, -1))
    # two channels cannot be shown as H&E: the message names the file
    with pytest.raises(InputError, match="cyx.ome.tif.*2 channels"):
        to_rgb_uint8(s.read_region(0, 0, 0, 64, 64), source=s.path)


def test_svs_description_mpp(tmp_path, he):
    p = tmp_path / "slide.svs"
    desc = "Aperio Image Library v12.0.15 \n259x301 [0,0 259x301] (256x256) JPEG/RGB Q=70|AppMag = 40|MPP = 0.2527"
    tifffile.imwrite(p, he, description=desc, tile=(128, 128), photometric="rgb")
    s = open_slide(p)
    assert s.mpp == pytest.approx(0.2527)
    np.testing.assert_array_equal(np.asarray(s.levels[0]), he)


def test_plain_tiff_resolution_tags(tmp_path, he):
    inch = tmp_path / "inch.tif"
    tifffile.imwrite(inch, he, photometric="rgb", resolution=(25400 / 0.5, 25400 / 0.5), resolutionunit="INCH")
    assert open_slide(inch).mpp == pytest.approx(0.5)
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, he, photometric="rgb", resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    assert open_slide(cm).mpp == pytest.approx(0.25)
    screen = tmp_path / "screen.tif"  # 72 dpi = 353 µm/px: nonsense for a slide, ignored
    tifffile.imwrite(screen, he, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    assert open_slide(screen).mpp is None


def test_mpp_override_and_with_mpp(tiff_path):
    s = open_slide(tiff_path, mpp=0.5)
    assert s.mpp == 0.5 and s.level_mpp(1) == pytest.approx(1.0, rel=0.01)
    t = s.with_mpp(0.3)
    assert t.mpp == 0.3 and s.mpp == 0.5 and t.levels[0] is s.levels[0]
    assert s.with_mpp(None).mpp is None


# ---- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 1e6, "abc"])
def test_implausible_mpp_is_an_input_error(tiff_path, bad):
    with pytest.raises(InputError, match=r"pyr\.ome\.tif.*mpp.*above 0\.01 and up to 100"):
        open_slide(tiff_path, mpp=bad)
    with pytest.raises(InputError, match="mpp"):
        open_slide(tiff_path).with_mpp(bad)
    with pytest.raises(InputError):
        validate_mpp(bad)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nothere.png.*no such file"):
        open_slide(tmp_path / "nothere.png")


def test_truncated_png(tmp_path, png_path):
    data = png_path.read_bytes()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.png"):
        open_slide(bad)


def test_text_file_named_tif(tmp_path):
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not an image\n")
    with pytest.raises(InputError, match="notes.tif.*cannot read as TIFF"):
        open_slide(bad)


def test_truncated_tiff(tmp_path, tiff_path):
    data = open(tiff_path, "rb").read()
    bad = tmp_path / "cut.ome.tif"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.ome.tif"):
        open_slide(bad)


def test_unsupported_extension_and_non_zarr_folder(tmp_path):
    f = tmp_path / "table.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="table.csv.*unsupported"):
        open_slide(f)
    d = tmp_path / "folder"
    d.mkdir()
    with pytest.raises(InputError, match="folder.*not a zarr"):
        open_slide(d)
    broken = tmp_path / "empty.zarr"
    broken.mkdir()
    with pytest.raises(InputError, match="empty.zarr"):
        open_slide(broken)


# ---- display conversion -----------------------------------------------------------------------------


def test_to_rgb_grey_and_rgba(he):
    grey = he[..., 1]
    out = to_rgb_uint8(grey)
    assert out.shape == he.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], grey)
    np.testing.assert_array_equal(out[..., 2], grey)
    np.testing.assert_array_equal(to_rgb_uint8(grey[..., None]), out)
    rgba = np.concatenate([he, np.full(he.shape[:2] + (1,), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), he)
    np.testing.assert_array_equal(to_rgb_uint8(he), he)


def test_to_rgb_uint16_and_float(he):
    u16 = he.astype(np.uint16) * 257
    out = to_rgb_uint8(u16)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    # a monotonic stretch keeps the order of pixel values
    flat_in, flat_out = u16[..., 0].ravel(), out[..., 0].ravel()
    order = np.argsort(flat_in, kind="stable")
    assert np.all(np.diff(flat_out[order].astype(int)) >= 0)
    np.testing.assert_array_equal(to_rgb_uint8(u16, lo=0, hi=65535), he)

    f01 = he.astype(np.float32) / 255.0
    np.testing.assert_array_equal(to_rgb_uint8(f01), he)
    big = he.astype(np.float64) * 10.0 + 1000.0
    outb = to_rgb_uint8(big)
    assert outb.min() == 0 and outb.max() == 255
    assert to_rgb_uint8(np.zeros((4, 4), np.uint16)).max() == 0


def test_to_rgb_rejects_nan_inf_and_channel_counts(he):
    f = he.astype(np.float32) / 255.0
    f[3, 4, 1] = np.nan
    with pytest.raises(InputError, match="tile_7.*NaN"):
        to_rgb_uint8(f, source="tile_7")
    f[3, 4, 1] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        to_rgb_uint8(f)
    with pytest.raises(InputError, match="2 channels"):
        to_rgb_uint8(he[..., :2])
    with pytest.raises(InputError, match="5 channels"):
        to_rgb_uint8(np.concatenate([he, he[..., :2]], axis=-1))
    assert math.isfinite(float(to_rgb_uint8(he.astype(np.float32)).mean()))


def test_lazy_rgb_uint8_stretches_a_16_bit_level_tile_by_tile(sample_he):
    """A 16-bit level becomes uint8 RGB lazily (a dask graph, nothing read), with one slide-wide stretch
    taken from the coarse level: the same pixels as converting the whole level at once with those limits."""
    import dask.array as da

    from napari_pathreview.backend.errors import InputError
    from napari_pathreview.backend.slides import lazy_rgb_uint8, to_rgb_uint8

    img = sample_he.astype(np.uint16) * 257
    level = da.from_array(img, chunks=(256, 256, 3))
    small = img[::8, ::8]
    out = lazy_rgb_uint8(level, small, "x.zarr")
    assert isinstance(out, da.Array) and out.dtype == np.uint8 and out.shape == img.shape
    lo, hi = np.percentile(small.astype(np.float64), [0.5, 99.5])
    np.testing.assert_array_equal(np.asarray(out), to_rgb_uint8(img, "x", lo, hi))
    grey = lazy_rgb_uint8(da.from_array(img[..., 0], chunks=256), small[..., 0], "g")
    assert grey.shape == img.shape and np.asarray(grey[:5, :5]).shape == (5, 5, 3)
    bad = small.astype(np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        lazy_rgb_uint8(level.astype(np.float32), bad, "nan.zarr")
