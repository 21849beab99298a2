"""Segmentation metrics: Dice (binary, per class), AJI and panoptic quality for instance masks.

Masks are 2-D (or any equal-shape) integer arrays in pixels. Instance masks use 0 for background and any
positive integers (not necessarily contiguous) for instances. Instance metrics are computed from one
sparse contingency matrix (pixel overlaps of every GT/prediction pair that touches), built with
``np.unique`` in ``O(pixels log pixels)``, never by looping over pairs of full-size masks.

Empty-image conventions: Dice of two empty masks is ``empty`` (default 1.0: nothing to find, nothing
found); AJI and PQ of two empty instance masks are 1.0; if only one side is empty they are 0.0.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .errors import InputError


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{what}: prediction shape {a.shape} differs from ground truth {b.shape}")


def dice(pred_mask: np.ndarray, gt_mask: np.ndarray, empty: float = 1.0) -> float:
    """Dice ``2|P∩G| / (|P| + |G|)`` of two binary masks (nonzero = foreground); ``empty`` if both empty."""
    p, g = np.asarray(pred_mask) != 0, np.asarray(gt_mask) != 0
    _same_shape(p, g, "dice")
    s = int(p.sum()) + int(g.sum())
    return float(empty) if s == 0 else 2.0 * int(np.count_nonzero(p & g)) / s


def dice_per_class(pred_labels: np.ndarray, gt_labels: np.ndarray, n_classes: int, empty: float = 1.0) -> np.ndarray:
    """Dice of each class ``0..n_classes-1`` of two semantic label maps: float64 ``(n_classes,)``.

    A class absent from both maps scores ``empty`` (1.0 by default, as :func:`dice`; pass ``np.nan``
    to leave it out of a ``np.nanmean``). Labels outside ``[0, n_classes)`` are ignored.
    """
    p, g = np.asarray(pred_labels).ravel(), np.asarray(gt_labels).ravel()
    _same_shape(p, g, "dice_per_class")
    n = int(n_classes)
    if n < 1:
        raise InputError(f"n_classes must be >= 1, got {n_classes}")
    p_cnt = np.bincount(p[(p >= 0) & (p < n)].astype(np.int64), minlength=n)[:n]
    g_cnt = np.bincount(g[(g >= 0) & (g < n)].astype(np.int64), minlength=n)[:n]
    both = (p == g) & (g >= 0) & (g < n)
    inter = np.bincount(g[both].astype(np.int64), minlength=n)[:n]
    s = p_cnt + g_cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, 2.0 * inter / np.maximum(s, 1), empty).astype(np.float64)


def contingency(pred_instances: np.ndarray, gt_instances: np.ndarray):
    """Sparse overlaps of GT and predicted instances.

    Returns ``(inter, gt_area, pred_area)``: ``inter`` a ``scipy.sparse.coo_matrix`` ``(n_gt, n_pred)``
    of pixel counts (only touching pairs stored), ``gt_area`` ``(n_gt,)`` and ``pred_area`` ``(n_pred,)``
    pixel counts; rows/columns follow the sorted nonzero labels of each mask.
    """
    p, g = np.asarray(pred_instances).ravel(), np.asarray(gt_instances).ravel()
    _same_shape(p, g, "instance metric")
    g_ids, g_inv = np.unique(g, return_inverse=True)
    p_ids, p_inv = np.unique(p, return_inverse=True)
    g_off, p_off = int(g_ids.size > 0 and g_ids[0] == 0), int(p_ids.size > 0 and p_ids[0] == 0)
    gi, pi = g_inv.astype(np.int64) - g_off, p_inv.astype(np.int64) - p_off  # background -> -1
    n_g, n_p = g_ids.size - g_off, p_ids.size - p_off
    gt_area = np.bincount(gi[gi >= 0], minlength=n_g)
    pred_area = np.bincount(pi[pi >= 0], minlength=n_p)
    both = (gi >= 0) & (pi >= 0)
    keys, counts = np.unique(gi[both] * max(n_p, 1) + pi[both], return_counts=True)
    inter = sparse.coo_matrix((counts, (keys // max(n_p, 1), keys % max(n_p, 1))), shape=(n_g, n_p))
    return inter, gt_area, pred_area


def _pair_iou(inter, gt_area, pred_area) -> np.ndarray:
    return inter.data / (gt_area[inter.row] + pred_area[inter.col] - inter.data)


def aji(pred_instances: np.ndarray, gt_instances: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017, IEEE TMI), the original definition.

    Each GT instance ``G_i`` is paired with the prediction ``S_j`` of highest IoU (ties: lowest label);
    ``C += |G_i ∩ S_j|``, ``U += |G_i ∪ S_j|`` (``U += |G_i|`` if it touches none). Predictions never
    picked add their area to ``U``. A prediction may be picked by several GT instances (as in the
    paper). Returns ``C / U``; 1.0 if both masks are empty.
    """
    inter, gt_area, pred_area = contingency(pred_instances, gt_instances)
    if gt_area.size == 0 and pred_area.size == 0:
        return 1.0
    c = 0
    u = int(gt_area.sum())
    used = np.zeros(pred_area.size, bool)
    if inter.nnz:
        iou = _pair_iou(inter, gt_area, pred_area)
        order = np.lexsort((inter.col, -iou, inter.row))  # by row, then IoU desc, then label asc
        rows = inter.row[order]
        first = order[np.r_[True, rows[1:] != rows[:-1]]]
        k, i = inter.col[first], inter.data[first]
        c = int(i.sum())
        u += int(pred_area[k].sum() - i.sum())  # |G ∪ S| = |G| + |S| - |G ∩ S| for the paired GT
        used[k] = True
    u += int(pred_area[~used].sum())
    return c / u if u else 1.0


def panoptic_quality(pred_instances: np.ndarray, gt_instances: np.ndarray, iou_thresh: float = 0.5) -> dict:
    """Panoptic quality (Kirillov et al. 2019) of instance masks: ``{"pq", "dq", "sq", "tp", "fp", "fn"}``.

    Pairs with IoU > ``iou_thresh`` are true positives. For ``iou_thresh >= 0.5`` the matching is unique
    by construction; below 0.5 a maximum-IoU one-to-one assignment (Hungarian) among those pairs is used.
    ``dq = TP / (TP + FP/2 + FN/2)``, ``sq`` = mean IoU of the TPs (0 if none), ``pq = dq * sq``.
    Both masks empty: all three 1.0.
    """
    inter, gt_area, pred_area = contingency(pred_instances, gt_instances)
    n_g, n_p = gt_area.size, pred_area.size
    if n_g == 0 and n_p == 0:
        return {"pq": 1.0, "dq": 1.0, "sq": 1.0, "tp": 0, "fp": 0, "fn": 0}
    iou = _pair_iou(inter, gt_area, pred_area) if inter.nnz else np.zeros(0)
    keep = iou > iou_thresh
    rows, cols, ious = inter.row[keep], inter.col[keep], iou[keep]
    if iou_thresh < 0.5 and ious.size:
        from scipy.optimize import linear_sum_assignment

        ur, ri = np.unique(rows, return_inverse=True)
        uc, ci = np.unique(cols, return_inverse=True)
        m = np.zeros((ur.size, uc.size))
        m[ri, ci] = ious
        a, b = linear_sum_assignment(-m)
        ious = m[a, b][m[a, b] > iou_thresh]
    tp = int(ious.size)
    fp, fn = n_p - tp, n_g - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(ious.sum() / tp) if tp else 0.0
    return {"pq": dq * sq, "dq": dq, "sq": sq, "tp": tp, "fp": fp, "fn": fn}


def is_binary_mask(mask: np.ndarray) -> bool:
    """True for a semantic (binary) mask drawn as one label: a single nonzero value over more than one
    connected region (a 0/255 PNG, a painted foreground). Such a mask has no instances to score with
    AJI or PQ; a one-nucleus instance mask (one value, one region) is not binary."""
    from scipy import ndimage

    m = np.asarray(mask)
    values = np.unique(m[m != 0])
    if values.size != 1:
        return False
    return ndimage.label(m != 0)[1] > 1


def score_pair(pred: np.ndarray, gt: np.ndarray, instances: bool = True, iou_thresh: float = 0.5) -> dict:
    """The scores ``pathreview evaluate segmenter`` reports for one image (``segmentation.score_samples``):
    Dice of the foregrounds (``dice(pred > 0, gt > 0)``) and, for an instance ``gt``, AJI and PQ / DQ / SQ
    of the instances (:func:`aji`, :func:`panoptic_quality` at ``iou_thresh``, 0.5 there).

    Returns ``{"dice", "aji", "pq", "dq", "sq", "tp", "fp", "fn", "n_pred", "n_gt"}``; with
    ``instances=False`` (a binary ``gt``) the instance entries are None and ``n_gt`` is None.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    _same_shape(pred, gt, "segmentation scores")
    out = {
        "dice": dice(pred > 0, gt > 0),
        "aji": None,
        "pq": None,
        "dq": None,
        "sq": None,
        "tp": None,
        "fp": None,
        "fn": None,
        "n_pred": int(np.unique(pred[pred != 0]).size),
        "n_gt": None,
    }
    if instances:
        out.update(panoptic_quality(pred, gt, iou_thresh))
        out["aji"] = aji(pred, gt)
        out["n_gt"] = int(np.unique(gt[gt != 0]).size)
    return out
