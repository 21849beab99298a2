"""Whole-slide segmentation works only where the coarse level shows tissue: glass strips and bands are
never read, predicted or labelled, and the labels equal those of reading every tile."""

import numpy as np
import pytest
import torch
import zarr

from napari_pathreview.backend.segmentation import SegmentSettings, ZarrTarget, read_table_csv, segment_to_zarr
from napari_pathreview.backend.segmentation.plan import TissuePlan, band_runs, tissue_strips
from napari_pathreview.backend.slides import open_slide
from napari_pathreview.backend.tiling import plan_tiles
from napari_pathreview.backend.tissue import CoarseTissue
from napari_pathreview.backend.weights import load_model
from napari_pathreview.bench.slides import _sparse_slide

torch.set_num_threads(2)


def test_band_runs_are_exactly_the_cuts_whose_window_meets_tissue():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, band, halo = int(rng.integers(1, 5000)), int(rng.integers(1, 1200)), int(rng.integers(0, 200))
        starts = np.sort(rng.integers(0, h, 3))
        rows = [(int(a), int(min(h, a + rng.integers(1, 400)))) for a in starts]
        runs = band_runs(h, band, halo, rows)
        cuts = [(c, min(c + band, h)) for c in range(0, h, band)]
        want = [(a, b) for a, b in cuts if any(a - halo < y1 and b + halo > y0 for y0, y1 in rows)]
        got = [(a, b) for a, b in cuts if any(s <= a and b <= e for s, e in runs)]
        assert got == want
        assert all(s % band == 0 and (e % band == 0 or e == h) and s < e for s, e in runs)
    assert band_runs(3000, 1024, 80, None) == [(0, 3000)] and band_runs(3000, 1024, 80, []) == []


def test_tissue_strips_cover_the_tissue_columns_once_and_skip_glass():
    mask = np.zeros((100, 200), bool)
    mask[30:32, 20:22] = mask[80:82, 150:152] = True  # two specks of tissue, far apart (cells of 32 px)
    coarse = CoarseTissue(mask, 32.0)
    tiles = plan_tiles((3200, 6400), 512, 64)
    plan = TissuePlan(coarse, tiles)
    busy = [t for t in tiles if not coarse.is_glass(t)]
    assert 0 < len(busy) <= 8 and len(plan.boxes) == len(busy)
    strips = tissue_strips(6400, 8192, 80, plan)
    assert len(strips) == 2  # two narrow strips, the glass between them has none
    (a0, a1), (b0, b1) = strips[0][0], strips[1][0]
    assert a0 <= 20 * 32 and a1 >= 22 * 32 and a1 < b0 <= 150 * 32 and b1 >= 152 * 32 and b1 - b0 <= 2 * 512
    assert strips[0][1] == (a0 - 80, a1 + 80)
    assert all(a0 <= t.x0 and t.x1 <= a1 or b0 <= t.x0 and t.x1 <= b1 for t in busy)  # every busy tile
    [(r0, r1)], [(s0, s1)] = plan.rows(*strips[0][1]), plan.rows(*strips[1][1])
    assert r0 <= 30 * 32 < 32 * 32 <= r1 <= 30 * 32 + 2 * 512 and s0 <= 80 * 32 < 82 * 32 <= s1
    narrow = tissue_strips(6400, 300, 80, plan)  # a tissue region wider than a strip is cut
    assert all(c1 - c0 <= 300 for (c0, c1), _ in narrow) and len(narrow) > 2
    assert tissue_strips(6400, 8192, 80, None) == [((0, 6400), (0, 6400))]


class CountingReads:
    """A slide level whose crops are counted, with the rows and columns each read spans."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim, self.boxes = a, a.shape, a.dtype, a.ndim, []

    def __getitem__(self, key):
        ys, xs = key[0], key[1]
        self.boxes.append((ys.start, ys.stop, xs.start, xs.stop))
        return self.a[key]


def _relabel_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """The same instances, whatever their ids: same foreground and a one-to-one map of ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.slow
def test_slide_segmentation_skips_glass_bands_unread_with_the_labels_of_reading_every_tile(shared_data, tmp_path):
    """A 6144² lazy slide at 0.5 µm/px holding 4 real MoNuSeg blocks (500² px each) on glass, made as
    ``bench slide-throughput`` makes its slide: segmented into an OME-Zarr with the tissue plan, every
    read lies within a tile of the tissue and the labels are those of the same pixels given as an array
    (every tile read, no coarse level)."""
    model, card = load_model(None, "segmenter", "cpu")
    path = tmp_path / "slide.zarr"
    _sparse_slide(path, 6144, 0.5, 4)  # blocks at rows / columns 1000-1500 and 4000-4500
    slide = open_slide(path)
    level0 = np.asarray(slide.levels[0])
    opts = SegmentSettings(stain_norm=False)  # one hematoxylin factor (1) whichever windows would measure it
    ref = segment_to_zarr(level0, ZarrTarget(tmp_path / "ref.zarr", band=512), model, card, 0.5, options=opts)
    counting = CountingReads(slide.levels[0])
    slide.levels[0] = counting
    failed = []

    def fail_after_first_run(i, n, msg):  # an error after the first checkpoint: the scratch is kept
        if "strip 2/" in msg and not failed:
            failed.append(msg)
            raise RuntimeError("interrupted")

    target = ZarrTarget(tmp_path / "seg.zarr", band=512)
    with pytest.raises(RuntimeError, match="interrupted"):
        segment_to_zarr(slide, target, model, card, options=opts, progress=fail_after_first_run)
    out = segment_to_zarr(slide, target, model, card, options=opts)  # resumes from the checkpoint
    a, b = (np.asarray(zarr.open_group(str(p), mode="r")["0"]) for p in (ref, out))
    assert a.max() > 100 and _relabel_equal(a, b)
    near = np.zeros(level0.shape[:2], bool)
    for lo in (1000, 4000):
        for lo2 in (1000, 4000):
            near[max(0, lo - 600) : lo + 1100, max(0, lo2 - 600) : lo2 + 1100] = True
    assert not b[~near].any()  # glass holds no label
    assert counting.boxes and all(near[y0:y1, x0:x1].any() for y0, y1, x0, x1 in counting.boxes)
    read_px = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in counting.boxes)
    assert read_px < 0.4 * level0.shape[0] * level0.shape[1]
    ta, tb = read_table_csv(ref / "instances.csv"), read_table_csv(out / "instances.csv")
    assert len(tb["label"]) == len(ta["label"]) == len(np.unique(b)) - 1
    order = lambda t: np.lexsort((t["centroid_x"], t["centroid_y"]))
    for k in ("area_px", "centroid_y", "centroid_x"):
        assert np.allclose(ta[k][order(ta)], tb[k][order(tb)], atol=1e-3)
    assert failed and not (tmp_path / ".seg.zarr.scratch").exists()


def test_label_pyramid_stores_only_labelled_tiles_and_equals_write_ome_zarr(tmp_path):
    from napari_pathreview.backend.segmentation.zarr import write_label_pyramid
    from napari_pathreview.backend.slides import write_ome_zarr
    from napari_pathreview.backend.slides.writers import ZarrLayout

    labels = np.zeros((1500, 2100), np.uint32)
    labels[700:800, 1200:1400] = 7  # one instance across four tiles of 256
    labels[1490:, 2090:] = 3  # one in the corner tile
    store = zarr.open_array(str(tmp_path / "scratch"), mode="w", shape=labels.shape, chunks=(256, 256), dtype=np.uint32)
    store[:] = labels
    layout = ZarrLayout(n_levels=5, chunks=256, labels=True, name="seg")
    ref = write_ome_zarr(tmp_path / "ref.zarr", store, 0.5, layout)
    boxes = [(600, 800, 1100, 1500), (1400, 1500, 2000, 2100)]
    write_label_pyramid(tmp_path / "ours.zarr", store, 0.5, layout, boxes)
    a, b = zarr.open_group(ref, mode="r"), zarr.open_group(str(tmp_path / "ours.zarr"), mode="r")
    assert dict(a.attrs) == dict(b.attrs) and sorted(a.keys()) == sorted(b.keys()) == [str(k) for k in range(5)]
    for k in a.keys():
        assert a[k].chunks == b[k].chunks and np.array_equal(np.asarray(a[k]), np.asarray(b[k]))
    stored = sorted(
        p.relative_to(tmp_path / "ours.zarr" / "0").as_posix() for p in (tmp_path / "ours.zarr" / "0").rglob("[0-9]*")
    )
    assert [s for s in stored if "/" in s] == ["2/4", "2/5", "3/4", "3/5", "5/8"]  # tiles holding labels, nothing else
