"""Scoring enhanced classes on cached detections (``metrics.PointScores``), and the per-class logit
offsets that maximise mF1 on held-out images."""

from __future__ import annotations

import numpy as np

from ..metrics import PointScores
from .data import CachedImage


def predict_cached(model, cache: list[CachedImage], mpp: float, class_bias=None) -> list[np.ndarray]:
    """Enhanced labels for each cached image (no noise)."""
    import torch

    out = []
    with torch.inference_mode():
        for c in cache:
            if len(c.yx) == 0:
                out.append(np.zeros(0, np.int64))
                continue
            lg = model(c.features, c.probs, c.yx * mpp)["logits"].float().cpu().numpy()
            if class_bias is not None:
                lg = lg + np.asarray(class_bias)
            out.append(lg.argmax(1))
    return out


def score_cached(
    cache: list[CachedImage], labels: list[np.ndarray] | None, classes, radius_px: float, radius_um: float
) -> dict:
    """PointScores dict of the cached detections with ``labels`` (base classes when None)."""

    s = PointScores(classes, radius_px)
    for i, c in enumerate(cache):
        s.add(c.yx, c.probs.argmax(1) if labels is None else labels[i], c.gt_yx, c.gt_labels)
    return s.as_dict(radius_um)


def _logits_cached(model, cache, mpp):
    import torch

    with torch.inference_mode():
        return [
            model(c.features, c.probs, c.yx * mpp)["logits"].float().cpu().numpy()
            if len(c.yx)
            else np.zeros((0, c.probs.shape[1]), np.float32)
            for c in cache
        ]


def search_class_bias(
    logits: list[np.ndarray],
    cache,
    classes,
    radius_px,
    radius_um,
    steps=(-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0),
    rounds: int = 2,
) -> np.ndarray:
    """Per-class logit offsets that maximise mF1 on held-out images (coordinate ascent)."""
    k = len(classes)
    bias = np.zeros(k)
    best = score_cached(cache, [lg.argmax(1) for lg in logits], classes, radius_px, radius_um)["mF1"]
    for _ in range(rounds):
        for j in range(k):
            for s in steps:
                b = bias.copy()
                b[j] += s
                if s == 0:
                    continue
                m = score_cached(cache, [(lg + b).argmax(1) for lg in logits], classes, radius_px, radius_um)["mF1"]
                if m > best + 1e-9:
                    best, bias = m, b
    return bias
