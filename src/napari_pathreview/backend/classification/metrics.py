"""Classification scores (accuracy, balanced accuracy, AUC, F1 per class) and the threshold search."""

from __future__ import annotations

import numpy as np

from .model_input import decide


def binary_auc(scores: np.ndarray, target: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count half); None when one class is absent."""
    scores, target = np.asarray(scores, np.float64), np.asarray(target).astype(bool)
    pos, neg = scores[target], scores[~target]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _prf(pred: np.ndarray, t: np.ndarray) -> dict:
    tp, fp, fn = int((pred & t).sum()), int((pred & ~t).sum()), int((~pred & t).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": int(t.sum())}


def classification_metrics(probs: np.ndarray, targets: np.ndarray, card) -> dict:
    """accuracy, balanced_accuracy, auc, f1 and per_class {precision, recall, f1, support, auc}.

    Binary single-label: ``auc`` and ``f1`` are those of the second (positive) class; otherwise macro
    means. Multi-label accuracy is the exact-match ratio.
    """
    classes = list(card.classes)
    pred = decide(probs, card).astype(bool)
    t = np.asarray(targets) > 0.5
    per = {}
    for k, c in enumerate(classes):
        per[c] = {**_prf(pred[:, k], t[:, k]), "auc": binary_auc(probs[:, k], t[:, k])}
    recalls = [per[c]["recall"] for c in classes if per[c]["support"]]
    aucs = [per[c]["auc"] for c in classes if per[c]["auc"] is not None]
    binary = len(classes) == 2 and not card.config.get("multilabel")
    return {
        "accuracy": float(np.mean(np.all(pred == t, 1))),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "auc": per[classes[1]]["auc"] if binary else (float(np.mean(aucs)) if aucs else None),
        "f1": per[classes[1]]["f1"] if binary else float(np.mean([per[c]["f1"] for c in classes])),
        "per_class": per,
        "n_images": int(len(t)),
    }


def search_thresholds(probs: np.ndarray, targets: np.ndarray, multilabel: bool) -> list[float]:
    """Per-class threshold (grid 0.02 ... 0.98, step 0.01) maximising that class' F1 on validation.

    Ties (e.g. tune images separated at any threshold) -> the largest margin: the tied threshold
    farthest, in logit units, from every validation probability (the middle of the gap between the
    classes, not simply the one nearest 0.5, so that a threshold is actually chosen). Binary
    single-label: only the positive class is searched and ``t_0 = 1 - t_1`` (see :func:`decide`).
    """
    grid = np.round(np.arange(0.02, 0.985, 0.01), 2)
    t = np.asarray(targets) > 0.5
    k_all = range(probs.shape[1]) if (multilabel or probs.shape[1] != 2) else [1]
    out = [0.5] * probs.shape[1]
    for k in k_all:
        f1 = np.array([_prf(probs[:, k] >= g, t[:, k])["f1"] for g in grid])
        best = grid[np.flatnonzero(f1 >= f1.max() - 1e-9)]
        margin = np.abs(_logit(best)[:, None] - _logit(probs[:, k])[None, :]).min(1)
        out[k] = float(best[np.argmax(margin - 1e-6 * np.abs(best - 0.5))])
    if not multilabel and probs.shape[1] == 2:
        out[0] = round(1 - out[1], 2)
    return out


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))
