"""Labels comparison scoring (no viewer, no data): the pair scores of `evaluate segmenter`, binary masks."""

from __future__ import annotations

import numpy as np

from napari_pathreview.backend.compare import compare_labels, label_errors
from napari_pathreview.backend.seg_metrics import aji, dice, is_binary_mask, panoptic_quality, score_pair


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    gt = np.zeros((120, 120), np.int32)
    pred = np.zeros_like(gt)
    for k in range(1, 25):
        y, x = rng.integers(5, 110, 2)
        gt[y : y + 8, x : x + 9] = k
        dy, dx = rng.integers(-3, 4, 2)
        if k % 5:
            pred[max(y + dy, 0) : y + dy + 8, max(x + dx, 0) : x + dx + 8] = 100 + k  # labels need not be 1..N
    return pred, gt


def test_score_pair_is_evaluate_segmenters_per_image_scoring():
    pred, gt = _pair()
    r = score_pair(pred, gt)
    # segmentation.score_samples: dice(lab > 0, labels > 0), aji(lab, labels), panoptic_quality(lab, labels)
    pq = panoptic_quality(pred, gt)
    assert r["dice"] == dice(pred > 0, gt > 0) and r["aji"] == aji(pred, gt)
    assert (r["pq"], r["dq"], r["sq"], r["tp"], r["fp"], r["fn"]) == (
        pq["pq"],
        pq["dq"],
        pq["sq"],
        pq["tp"],
        pq["fp"],
        pq["fn"],
    )
    assert r["n_pred"] == len(np.unique(pred)) - 1 and r["n_gt"] == len(np.unique(gt)) - 1
    assert compare_labels(pred, gt)["dice"] == r["dice"] and compare_labels(pred, gt)["binary"] is False


def test_binary_annotation_is_scored_with_dice_only():
    pred, gt = _pair()
    mask = (gt > 0).astype(np.uint8) * 255
    assert is_binary_mask(mask) and not is_binary_mask(gt)
    one = np.zeros((10, 10), np.int32)
    one[2:5, 2:5] = 7
    assert not is_binary_mask(one)  # one nucleus, one region: an instance mask
    r = compare_labels(pred, mask)
    assert r["binary"] and r["aji"] is None and r["pq"] is None and r["dice"] == dice(pred, mask)


def test_label_errors_give_the_best_iou_of_unmatched_instances():
    pred = np.zeros((20, 20), np.int32)
    gt = np.zeros_like(pred)
    gt[0:10, 0:10] = 1
    pred[0:10, 5:15] = 4  # IoU 50 / 150
    errs = label_errors(pred, gt)
    assert {(e.kind, e.pred, e.gt) for e in errs} == {("fp", 4, -1), ("fn", -1, 1)}
    assert all(abs(e.best_iou - 1 / 3) < 1e-12 for e in errs)
    assert "IoU 0.33 at best (a match needs above 0.50)" in errs[0].describe()
