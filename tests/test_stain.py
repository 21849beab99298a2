"""Hematoxylin level and normalisation on real MoNuSeg images."""

import numpy as np
import pytest

from napari_pathreview.backend.segmentation import load_masks_dataset
from napari_pathreview.backend.stain import (
    FACTOR_RANGE,
    hematoxylin_factor,
    hematoxylin_level,
    scale_hematoxylin,
    stain_density,
)


@pytest.fixture(scope="module")
def images(shared_data):
    s = {x.name: x for x in load_masks_dataset(shared_data / "monuseg", "train")}
    # the palest held-out image and a darkly stained one: hematoxylin levels 0.89 and 2.34 (MoNuSeg: 0.61-2.87)
    return s["TCGA-18-5592-01Z-00-DX1"].image, s["TCGA-NH-A8F7-01A-01-TS1"].image


def test_scaling_changes_the_nuclear_stain_only(images):
    pale, _ = images
    assert np.array_equal(scale_hematoxylin(pale, 1.0), pale.astype(np.float32))
    out = scale_hematoxylin(pale, 2.0)
    before, after = stain_density(pale), stain_density(out)
    ok = (out > 1).all(-1) & (out < 254).all(-1) & (pale > 1).all(-1)  # not clipped at black / white
    assert ok.mean() > 0.9
    assert np.allclose(after[ok, 0], 2.0 * before[ok, 0], atol=1e-3)
    assert np.allclose(after[ok, 1:], before[ok, 1:], atol=1e-3)
    assert out.mean() < pale.mean() - 5  # darker, by the extra hematoxylin


def test_factor_brings_an_image_to_the_reference_level(images):
    pale, dark = images
    lp, ld = hematoxylin_level(pale), hematoxylin_level(dark)
    assert 1.5 * lp < ld
    reference = float(np.sqrt(lp * ld))
    for img, level in ((pale, lp), (dark, ld)):
        k = hematoxylin_factor(img, reference)
        assert k == pytest.approx(reference / level)
        assert hematoxylin_level(scale_hematoxylin(img, k).round().astype(np.uint8)) == pytest.approx(
            reference, rel=0.03
        )
    assert hematoxylin_factor(pale, 100 * lp) == FACTOR_RANGE[1]
    assert hematoxylin_factor(pale, None) == 1.0
    glass = np.full((300, 300, 3), 235, np.uint8)
    assert hematoxylin_level(glass) is None and hematoxylin_factor(glass, reference) == 1.0


def test_a_large_image_is_measured_on_windows_lazy_or_in_memory(images):
    import dask.array as da

    pale, _ = images
    big = np.tile(pale, (3, 3, 1))  # 3000² px: measured on 64 windows of 256² (lazy: an 8 x 8 grid)
    lazy = da.from_array(big, chunks=(700, 700, 3))
    assert hematoxylin_level(lazy) == pytest.approx(hematoxylin_level(big), rel=0.02)
    assert hematoxylin_level(big) == pytest.approx(hematoxylin_level(pale), rel=0.05)


@pytest.mark.slow
def test_a_sparse_slide_is_measured_where_its_coarse_level_shows_tissue(images):
    """One 1000² tissue block on a 12 000² glass slide: the regular grid of windows (a lazy image without
    a coarse level) misses it; a coarse tissue mask, or an in-memory array's own, puts the windows on it."""
    import dask.array as da

    from napari_pathreview.backend.tissue import CoarseTissue, tissue_mask

    pale, _ = images
    slide = np.full((12000, 12000, 3), 238, np.uint8)
    slide[4000:5000, 9900:10900] = pale  # between the grid windows (centres 750 + 1500 k, 256 px)
    lazy = da.from_array(slide, chunks=(2048, 2048, 3))
    assert hematoxylin_level(lazy) is None  # no grid window holds tissue
    coarse = CoarseTissue(tissue_mask(slide[::32, ::32]), 32.0)
    for level in (hematoxylin_level(lazy, tissue=coarse), hematoxylin_level(slide)):
        assert level == pytest.approx(hematoxylin_level(pale), rel=0.05)
