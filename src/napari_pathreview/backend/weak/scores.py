"""Scores of the weak-cells recipe: tile-level presence F1 (tuning, using tile labels only), agreement with
the pseudo-labels, and per-type F1 of typed cells (evaluation)."""

from __future__ import annotations

import numpy as np

from .maps import pseudo_labels


def crop_presence_f1(maps: list[np.ndarray], crops, n_classes: int, min_px: int) -> float:
    """Tile-level macro F1 of "class k has >= min_px pixels in the crop's label map" vs the tile labels.

    maps: label maps ``(H, W)`` (0 background, 1..K) per sample; crops from :func:`grid_crops`.
    """
    tp = np.zeros(n_classes)
    fp = np.zeros(n_classes)
    fn = np.zeros(n_classes)
    for i, y0, x0, size, lab in crops:
        sub = maps[i][y0 : y0 + size, x0 : x0 + size]
        counts = np.bincount(sub.ravel(), minlength=n_classes + 1)[1:]
        pred = counts >= min_px
        tp += pred & (lab > 0)
        fp += pred & (lab == 0)
        fn += ~pred & (lab > 0)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(f1.mean())


def threshold_sweep(prob_maps: list[np.ndarray], crops, n_classes: int, thresholds, min_px: int) -> list[dict]:
    """Per threshold: tile-level F1 of the pseudo-labels and their foreground fraction (non-increasing
    in the threshold). prob_maps ``(K, H, W)`` per held-out image."""
    rows = []
    for t in thresholds:
        maps = [pseudo_labels(p, t) for p in prob_maps]
        fg = float(np.mean([np.mean(m > 0) for m in maps]))
        rows.append(
            {
                "threshold": float(t),
                "tile_f1": round(crop_presence_f1(maps, crops, n_classes, min_px), 4),
                "foreground": round(fg, 4),
            }
        )
    return rows


def class_f1(pred: np.ndarray, true: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K,)`` F1 of each class index 0..K-1 between two equally long label arrays (0 where a class is
    absent from both)."""
    return np.array(
        [
            2 * np.sum((pred == k) & (true == k)) / max(np.sum(pred == k) + np.sum(true == k), 1)
            for k in range(n_classes)
        ],
        np.float64,
    )


def type_scores(pred: np.ndarray, gt: np.ndarray, classes) -> dict:
    """Per-class F1, ``mF1`` and ``accuracy`` of predicted vs annotated types (labelled cells only)."""
    keep = gt >= 0
    pred, gt = pred[keep], gt[keep]
    out = {c: round(float(f), 4) for c, f in zip(classes, class_f1(pred, gt, len(classes)))}
    out["mF1"] = round(float(np.mean([out[c] for c in classes])), 4)
    out["accuracy"] = round(float(np.mean(pred == gt)) if len(gt) else 0.0, 4)
    out["n_cells"] = int(len(gt))
    return out


def pseudo_agreement(pred_maps: list[np.ndarray], pseudo_maps: list[np.ndarray], n_classes: int) -> float:
    """Macro F1 over the K classes of predicted types against pseudo-labels, on the pixels the
    pseudo-labels call foreground.

    pred_maps: ``(H, W)`` class index 0..K-1 (the U-Net's argmax over classes, background excluded);
    pseudo_maps: ``(H, W)`` 0 = background, 1..K (, -1 = ignored). Uses no point labels.
    """
    fg = [m > 0 for m in pseudo_maps]
    pred = np.concatenate([p[f] for p, f in zip(pred_maps, fg)]) if fg else np.zeros(0, np.int64)
    true = np.concatenate([m[f] - 1 for m, f in zip(pseudo_maps, fg)]) if fg else np.zeros(0, np.int64)
    return float(class_f1(pred, true, n_classes).mean())


def tile_presence_f1(pred: np.ndarray, y: np.ndarray) -> float:
    """Macro F1 over classes of crop-level presence decisions ``pred`` ``(n, K)`` bool vs tile labels ``y``."""
    tp = (pred & (y > 0)).sum(0)
    fp = (pred & (y == 0)).sum(0)
    fn = (~pred & (y > 0)).sum(0)
    return float(np.mean(2 * tp / np.maximum(2 * tp + fp + fn, 1)))
