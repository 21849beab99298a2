"""Bare glass is found from a slide's coarse level before tiles are read; tissue is never skipped."""

import numpy as np
import pytest
import torch

from napari_pathreview.backend.detection import detect
from napari_pathreview.backend.segmentation import segment
from napari_pathreview.backend.slides import ZarrLayout, open_slide, write_ome_zarr
from napari_pathreview.backend.tiling import iter_tiles, plan_tiles
from napari_pathreview.backend.tissue import coarse_tissue, is_background
from napari_pathreview.backend.weights import load_model

torch.set_num_threads(2)
GLASS = 236


@pytest.fixture(scope="module")
def glass_slide(sample_he, tmp_path_factory):
    """A 4096² slide at 0.25 µm/px: bare glass holding one real 1000² H&E block (the bundled MoNuSeg crop,
    mirrored out) at (1500, 2200)."""
    img = np.full((4096, 4096, 3), GLASS, np.uint8)
    img[1500:2500, 2200:3200] = np.pad(sample_he, ((0, 488), (0, 488), (0, 0)), mode="reflect")
    out = tmp_path_factory.mktemp("tissue") / "slide.zarr"
    write_ome_zarr(out, img, 0.25, ZarrLayout(chunks=512))
    return open_slide(out)


class CountingReads:
    """An image whose crops are counted (``reads``)."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim, self.reads = a, a.shape, a.dtype, a.ndim, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.a[key]


def test_coarse_map_keeps_every_tissue_tile_and_drops_far_glass(glass_slide):
    coarse = coarse_tissue(glass_slide, 0)
    assert coarse is not None and coarse.factor >= 4
    level0 = np.asarray(glass_slide.levels[0])
    tiles = plan_tiles(level0.shape[:2], 256, 0)
    tissue = [t for t in tiles if not is_background(level0[t.slices])]
    assert len(tissue) >= 16  # the 1000² block spans 4 x 4 tiles of 256 at least
    assert all(coarse.has_tissue(t.y0, t.y1, t.x0, t.x1) for t in tissue)
    kept = [t for t in tiles if coarse.has_tissue(t.y0, t.y1, t.x0, t.x1)]
    assert len(kept) <= len(tissue) + 32  # a one-tile margin around the block, not the slide
    assert not coarse.has_tissue(0, 1000, 0, 1000) and coarse.has_tissue(1900, 2000, 2600, 2700)


def test_iter_tiles_does_not_read_glass_tiles():
    img = CountingReads(np.zeros((100, 100, 3), np.uint8))
    tiles = plan_tiles((100, 100), 50, 0)
    crops = list(iter_tiles(img, tiles, glass=lambda t: t.x0 > 0))
    assert img.reads == 2
    assert all((c == 255).all() and c.shape == (50, 50, 3) for t, c in crops if t.x0 > 0)


@pytest.mark.slow
def test_segmenting_and_detecting_a_slide_skip_glass_unread_with_the_same_result(glass_slide):
    model, card = load_model(None, "segmenter", "cpu")
    level = 1  # 0.5 µm/px: the level the segmenter reads
    arr = np.asarray(glass_slide.levels[level])
    ref = segment(arr, model, card, mpp=0.5)  # an array: every tile read and judged on its pixels
    counting = CountingReads(glass_slide.levels[level])
    glass_slide.levels[level] = counting
    try:
        res = segment(glass_slide, model, card)
        n_tiles = len(plan_tiles(arr.shape[:2], *_tiling_of(card, 0.5, arr.shape[:2])))
        seg_reads = counting.reads
        counting.reads = 0
        dmodel, dcard = load_model(None, "detector", "cpu")
        cells = detect(glass_slide, dmodel, dcard)
        det_reads = counting.reads
    finally:
        glass_slide.levels[level] = counting.a
    assert res.level == level and np.array_equal(res.labels, ref.labels) and len(res) > 100
    assert seg_reads < n_tiles / 2
    ref_cells = detect(arr, dmodel, dcard, mpp=0.5)
    assert 0 < det_reads < n_tiles and len(cells) == len(ref_cells) > 100
    assert np.allclose(cells.yx, (ref_cells.yx + 0.5) * 2 - 0.5, atol=1e-3)


def _tiling_of(card, level_mpp, shape):
    from napari_pathreview.backend.segmentation import SegmentParams, _tiling

    return _tiling(SegmentParams.from_card(card), level_mpp / card.mpp, shape)
