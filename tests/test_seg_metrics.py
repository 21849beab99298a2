"""Segmentation metrics: Dice, AJI, PQ on hand-computed cases and a real MoNuSeg instance mask."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage
from skimage.io import imread

from napari_pathreview.backend.errors import InputError
from napari_pathreview.backend.seg_metrics import aji, contingency, dice, dice_per_class, panoptic_quality


@pytest.fixture(scope="module")
def monuseg_instances(shared_data) -> np.ndarray:
    """A real MoNuSeg instance mask (first ``mask=instance`` row of splits.csv), (1000, 1000) uint16."""
    root = shared_data / "monuseg"
    with open(root / "splits.csv") as f:
        name = next(r["image"] for r in csv.DictReader(f) if r["mask"] == "instance")
    m = imread(root / "masks" / f"{name}.png")
    assert m.dtype == np.uint16 and m.max() > 50
    return m


def _relabel(m: np.ndarray, seed: int) -> np.ndarray:
    """Same instances, labels permuted and spread to large non-contiguous values."""
    ids = np.unique(m[m > 0])
    new = np.random.default_rng(seed).permutation(ids.size) * 7 + 1000
    lut = np.zeros(int(m.max()) + 1, np.int64)
    lut[ids] = new
    return lut[m]


def _erode(m: np.ndarray, it: int = 2) -> np.ndarray:
    """Erode every instance by ``it`` pixels (an instance shrinks, or vanishes if it is thin)."""
    out = np.zeros_like(m)
    for lab, sl in zip(range(1, m.max() + 1), ndimage.find_objects(m)):
        if sl is not None:
            out[sl][ndimage.binary_erosion(m[sl] == lab, iterations=it)] = lab
    return out


def _aji_bruteforce(pred, gt):
    """Reference AJI with full-size masks (slow; small crops only)."""
    g_ids, p_ids = [i for i in np.unique(gt) if i], [i for i in np.unique(pred) if i]
    c = u = 0
    used = set()
    for g in g_ids:
        gm = gt == g
        best, best_iou = None, -1.0
        for p in p_ids:
            pm = pred == p
            iou = (gm & pm).sum() / (gm | pm).sum()
            if iou > best_iou:
                best, best_iou = p, iou
        if best is None or best_iou == 0:
            u += gm.sum()
            continue
        pm = pred == best
        c += (gm & pm).sum()
        u += (gm | pm).sum()
        used.add(best)
    u += sum((pred == p).sum() for p in p_ids if p not in used)
    return c / u


def _pq_bruteforce(pred, gt):
    """Reference PQ at IoU > 0.5 with full-size masks (slow; small crops only)."""
    g_ids, p_ids = [i for i in np.unique(gt) if i], [i for i in np.unique(pred) if i]
    ious = []
    for g in g_ids:
        for p in p_ids:
            gm, pm = gt == g, pred == p
            iou = (gm & pm).sum() / (gm | pm).sum()
            if iou > 0.5:
                ious.append(iou)
    tp = len(ious)
    dq = tp / (tp + 0.5 * (len(p_ids) - tp) + 0.5 * (len(g_ids) - tp))
    return dq * (sum(ious) / tp if tp else 0.0)


def test_dice_basic():
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    b = np.zeros_like(a)
    b[6:9, 6:9] = True
    assert dice(a, a) == 1.0
    assert dice(a, b) == 0.0
    c = np.zeros_like(a)
    c[2:6, 2:4] = True  # |A|=16, |C|=8, |A∩C|=8 -> 2*8/24
    assert dice(c, a) == pytest.approx(2 / 3)
    assert dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0  # both empty: defined as 1.0
    assert np.isnan(dice(np.zeros((4, 4)), np.zeros((4, 4)), empty=np.nan))
    assert dice(np.zeros((4, 4)), np.ones((4, 4))) == 0.0
    with pytest.raises(InputError):
        dice(a, a[:5])


def test_dice_per_class():
    gt = np.array([[0, 0, 1, 1], [0, 2, 2, 1]])
    pr = np.array([[0, 1, 1, 1], [0, 2, 0, 1]])
    # class 0: |P|=3 |G|=3 inter 2 -> 4/6; class 1: |P|=4 |G|=3 inter 3 -> 6/7;
    # class 2: |P|=1 |G|=2 inter 1 -> 2/3; class 3 absent from both -> 1.0 (or nan)
    np.testing.assert_allclose(dice_per_class(pr, gt, 4), [4 / 6, 6 / 7, 2 / 3, 1.0])
    assert np.isnan(dice_per_class(pr, gt, 4, empty=np.nan)[3])
    for k in range(3):
        assert dice_per_class(pr, gt, 3)[k] == pytest.approx(dice(pr == k, gt == k))


def _hand_case():
    """4x6 image. GT: 1 = rows 0-1 cols 0-1 (4 px), 2 = rows 0-1 cols 3-5 (6 px).
    Pred: 5 = rows 0-1 cols 0-2 (6 px), 7 = rows 0-1 cols 4-5 (4 px), 9 = row 3 cols 0-1 (2 px)."""
    gt = np.zeros((4, 6), np.int32)
    gt[0:2, 0:2], gt[0:2, 3:6] = 1, 2
    pr = np.zeros((4, 6), np.int32)
    pr[0:2, 0:3], pr[0:2, 4:6], pr[3, 0:2] = 5, 7, 9
    return pr, gt


def test_aji_and_pq_hand_computed():
    pr, gt = _hand_case()
    # AJI: GT1 best is 5 (inter 4, union 6); GT2 best is 7 (inter 4, union 6); 9 unused adds 2.
    # C = 8, U = 6 + 6 + 2 = 14 -> 8/14 = 4/7
    assert aji(pr, gt) == pytest.approx(4 / 7)
    # PQ: IoU(1,5) = IoU(2,7) = 4/6 > 0.5 -> TP 2, FP 1 (9), FN 0.
    # DQ = 2 / (2 + 0.5) = 0.8, SQ = 2/3, PQ = 0.8 * 2/3 = 8/15
    q = panoptic_quality(pr, gt)
    assert (q["tp"], q["fp"], q["fn"]) == (2, 1, 0)
    assert q["dq"] == pytest.approx(0.8) and q["sq"] == pytest.approx(2 / 3)
    assert q["pq"] == pytest.approx(8 / 15)
    # At threshold 0.7 nothing matches: TP 0, FP 3, FN 2 -> all 0
    assert panoptic_quality(pr, gt, iou_thresh=0.7)["pq"] == 0.0


def test_aji_gt_overlapping_two_predictions():
    # GT 1 = row 0 cols 0-3 (4 px). Pred 1 = row 0 cols 0-2 (3 px, IoU 3/4);
    # pred 2 = row 0 cols 3-4 (2 px, inter 1, IoU 1/5). GT 2 = row 2 col 0 (1 px) touches nothing.
    # AJI: C = 3, U = |G1 ∪ P1| 4 + |G2| 1 + unused P2 2 = 7 -> 3/7.
    # PQ: TP 1 (IoU 0.75), FP 1, FN 1 -> DQ = 1/2, SQ = 0.75, PQ = 0.375.
    gt = np.zeros((3, 6), np.uint16)
    gt[0, 0:4], gt[2, 0] = 1, 2
    pr = np.zeros((3, 6), np.uint16)
    pr[0, 0:3], pr[0, 3:5] = 1, 2
    assert aji(pr, gt) == pytest.approx(3 / 7)
    q = panoptic_quality(pr, gt)
    assert q["dq"] == pytest.approx(0.5) and q["sq"] == pytest.approx(0.75)
    assert q["pq"] == pytest.approx(0.375)
    # Below 0.5 the one-to-one assignment keeps only the best pair per GT: still 1 TP at 0.1
    q = panoptic_quality(pr, gt, iou_thresh=0.1)
    assert (q["tp"], q["fp"], q["fn"]) == (1, 1, 1)


def test_empty_conventions():
    z = np.zeros((5, 5), int)
    one = z.copy()
    one[1:3, 1:3] = 4
    assert aji(z, z) == 1.0 and panoptic_quality(z, z)["pq"] == 1.0
    assert aji(one, z) == 0.0 and aji(z, one) == 0.0
    assert panoptic_quality(one, z)["pq"] == 0.0 and panoptic_quality(z, one)["pq"] == 0.0


def test_contingency_is_sparse_and_right():
    pr, gt = _hand_case()
    inter, ga, pa = contingency(pr, gt)
    assert inter.shape == (2, 3) and inter.nnz == 2
    np.testing.assert_array_equal(inter.toarray(), [[4, 0, 0], [0, 4, 0]])
    np.testing.assert_array_equal(ga, [4, 6])
    np.testing.assert_array_equal(pa, [6, 4, 2])


def test_permutation_invariance():
    pr, gt = _hand_case()
    for seed in range(3):
        assert aji(_relabel(pr, seed), _relabel(gt, seed + 10)) == pytest.approx(aji(pr, gt))
        assert panoptic_quality(_relabel(pr, seed), gt) == panoptic_quality(pr, gt)


def test_real_monuseg_mask(monuseg_instances):
    gt = monuseg_instances
    assert aji(gt, gt) == 1.0
    q = panoptic_quality(gt, gt)
    assert q["pq"] == 1.0 and q["fp"] == 0 and q["fn"] == 0 and q["tp"] == len(np.unique(gt)) - 1
    eroded = _erode(gt, 2)
    a = aji(eroded, gt)
    assert 0.2 < a < 1.0
    assert aji(_relabel(eroded, 1), _relabel(gt, 2)) == pytest.approx(a)
    assert panoptic_quality(_relabel(eroded, 1), gt)["pq"] == pytest.approx(panoptic_quality(eroded, gt)["pq"])
    # a shifted + eroded prediction agrees with a brute-force AJI on a real crop
    crop = gt[:200, :200]
    pred = np.roll(_erode(crop, 1), (3, -2), axis=(0, 1))
    assert aji(pred, crop) == pytest.approx(_aji_bruteforce(pred, crop))
    assert panoptic_quality(pred, crop)["pq"] == pytest.approx(_pq_bruteforce(pred, crop))
    assert aji(pred, crop) < aji(_erode(crop, 1), crop) < 1.0
