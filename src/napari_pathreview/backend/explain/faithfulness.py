"""Faithfulness of heat maps: deletion / insertion curves of the explained class' probability, against random maps."""

from __future__ import annotations

import numpy as np

from ..classification.model_input import predict_probs
from ..tiling import pad_to
from .images import explain_array


def _blocks(heat: np.ndarray, block: int) -> np.ndarray:
    h, w = heat.shape
    p = pad_to(heat, -(-h // block) * block, -(-w // block) * block, mode="edge")[0]
    return p.reshape(p.shape[0] // block, block, p.shape[1] // block, block).mean((1, 3))


def deletion_curves(
    model, card, image: np.ndarray, heat: np.ndarray, target: int, steps: int = 10, block: int = 8, blur: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Probability of ``target`` as the most relevant ``block`` x ``block`` cells of a model-scale image
    ``(H, W, C)`` are replaced by a blurred copy (deletion) or revealed on it (insertion).

    heat ``(H, W)``: any map (higher = more relevant). Returns (deletion, insertion), each ``(steps + 1,)``
    at fractions ``0, 1/steps, ... 1`` of the cells.
    """
    from scipy.ndimage import gaussian_filter

    h, w = heat.shape
    cells = _blocks(np.asarray(heat, np.float64), block)
    order = np.argsort(-cells.ravel(), kind="stable")
    base = gaussian_filter(image, (blur, blur, 0))
    masks = []
    for i in range(steps + 1):
        m = np.zeros(cells.size, np.float32)
        m[order[: round(i / steps * cells.size)]] = 1
        masks.append(np.kron(m.reshape(cells.shape), np.ones((block, block), np.float32))[:h, :w, None])
    masks = np.stack(masks)
    dele = predict_probs(model, card, image * (1 - masks) + base * masks)[:, target]
    ins = predict_probs(model, card, base * (1 - masks) + image * masks)[:, target]
    return dele, ins


def curve_auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoid rule)."""
    c = np.asarray(curve, np.float64)
    return float(((c[1:] + c[:-1]) / 2).mean())


def faithfulness(
    model,
    card,
    image: np.ndarray,
    target: int,
    methods,
    seed: int = 0,
    n_random: int = 2,
    block: int = 8,
    steps: int = 10,
) -> dict:
    """Deletion / insertion AUCs of each method's map for class ``target`` on a model-scale image, and of
    ``n_random`` random maps (same cells): ``{method: {deletion_auc, random_deletion_auc, insertion_auc,
    random_insertion_auc}}``. A faithful map has a lower deletion and a higher insertion AUC than random.
    """
    rng = np.random.default_rng(seed)
    rd, ri = [], []
    for _ in range(n_random):
        d, i = deletion_curves(model, card, image, rng.random(image.shape[:2]), target, steps, block)
        rd.append(curve_auc(d))
        ri.append(curve_auc(i))
    out = {}
    for m in methods:
        heat = explain_array(model, card, image, m, [target])[0][0]
        d, i = deletion_curves(model, card, image, heat, target, steps, block)
        out[m] = {
            "deletion_auc": curve_auc(d),
            "random_deletion_auc": float(np.mean(rd)),
            "insertion_auc": curve_auc(i),
            "random_insertion_auc": float(np.mean(ri)),
        }
    return out
