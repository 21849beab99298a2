"""Running the enhancer: detected cells (with the detector's feature vectors) -> corrected classes, and
the detector's features sampled at points that lack them (hand-made or edited Points layers).

Positions go to the model in µm (``points.mpp``, else the card's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..detection import normalise, predict_maps, stain_normalised
from ..errors import InputError
from ..memory import enhance_bytes, require_memory
from ..modelio import check_mpp
from ..points import CellPoints, sample_bilinear
from ..precision import autocast
from ..slides import Slide, check_model_scale, to_rgb_uint8
from ..tiling import TileSpec, predict_tiled


@dataclass
class EnhanceResult:
    """Base and enhanced cells (same points, same order), which changed class, and the attention
    (:class:`~.models.enhancer.Attention` edges, or None)."""

    base: CellPoints
    enhanced: CellPoints
    changed: np.ndarray
    attention: object = None


def _positions_um(points: CellPoints, card) -> np.ndarray:
    mpp = points.mpp or card.mpp
    if not mpp:
        raise InputError("points have no microns per pixel; give --mpp / set the layer's mpp")
    return np.asarray(points.yx, np.float64) * float(mpp)


def enhance_points(points: CellPoints, model, card, return_attention: bool = False, chunk: int = 2048) -> EnhanceResult:
    """Run the enhancer on detected cells (with feature vectors) -> :class:`EnhanceResult`."""
    import torch

    if points.features is None:
        raise InputError(
            "these cells carry no detector feature vectors; detect them with the detector "
            f"'{card.params.get('detector', '?')}' (or give the image so they can be sampled)"
        )
    if list(points.classes) != list(card.classes):
        raise InputError(f"cells have classes {list(points.classes)}, the enhancer expects {list(card.classes)}")
    if points.features.shape[1] != model.cfg.feature_dim:
        raise InputError(
            f"cells carry {points.features.shape[1]}-d features, the enhancer expects "
            f"{model.cfg.feature_dim}-d (features of detector '{card.params.get('detector')}')"
        )
    if len(points) == 0:
        return EnhanceResult(points, points.select(np.zeros(0, bool)), np.zeros(0, bool), None)

    cfg = model.cfg
    require_memory(
        enhance_bytes(len(points), cfg.width, cfg.heads, cfg.layers, cfg.max_neighbours, return_attention),
        f"enhancing {len(points)} cells" + (" with attention" if return_attention else ""),
        "enhance a region at a time (fewer cells)" + (", or without attention lines" if return_attention else ""),
    )

    with torch.inference_mode(), autocast(next(model.parameters()).device):
        out = model(
            points.features, points.probs, _positions_um(points, card), chunk=chunk, return_attention=return_attention
        )
        logits = out["logits"].float().cpu() + torch.tensor(card.params.get("class_bias") or [0.0] * len(card.classes))
        probs = torch.softmax(logits, 1).numpy().astype(np.float32)
    enhanced = replace(
        points,
        labels=probs.argmax(1).astype(np.int64),
        probs=probs,
        source=f"{points.source}+{card.name}" if points.source else card.name,
    )
    return EnhanceResult(points, enhanced, enhanced.labels != points.labels, out.get("attention"))


def features_at_points(
    image, yx: np.ndarray, model, card, mpp: float | None, progress=None, cancel=None, max_pixels: float = 64e6
) -> tuple[np.ndarray, np.ndarray]:
    """Detector feature vectors (N, F) and class probabilities (N, K) sampled at given points.

    For Points layers that do not carry the features (hand-made or edited): runs the detector's maps
    over the (H, W, 3) image in tiles at the model's scale and samples them at ``yx`` (input pixels).
    """
    from skimage.transform import resize

    if isinstance(image, Slide):
        mpp = image.mpp if mpp is None else mpp
        image = image.levels[0]
    mpp = check_mpp(mpp if mpp is not None else card.mpp, "image")
    scale = check_model_scale(mpp, card.mpp, "image")
    h, w = image.shape[:2]
    if h * w * scale * scale > max_pixels:
        raise InputError(
            f"image of {h}x{w} px is too large to sample features at arbitrary points; "
            "run 'Detect cells' first (its points keep their feature vectors)"
        )
    img = stain_normalised(to_rgb_uint8(np.asarray(image)), card)
    if abs(scale - 1) > 0.02:
        img = resize(
            img,
            (max(1, round(h * scale)), max(1, round(w * scale))),
            order=1,
            anti_aliasing=scale < 1,
            preserve_range=True,
        ).astype(np.uint8)
    nf, nk = model.cfg.feature_dim, len(card.classes)

    def predict(batch):
        outs = []
        for b in batch:
            m = predict_maps(model, normalise(b.astype(np.uint8), card))
            outs.append(np.concatenate([m["features"], m["probs"]]))
        return np.stack(outs)

    maps = predict_tiled(img, predict, TileSpec(512, 64), nf + nk, progress=progress, cancel=cancel)
    at = (np.asarray(yx, np.float32) + 0.5) * np.array([img.shape[0] / h, img.shape[1] / w], np.float32) - 0.5
    s = sample_bilinear(maps, at)
    probs = s[:, nf:] / np.maximum(s[:, nf:].sum(1, keepdims=True), 1e-6)
    return s[:, :nf].astype(np.float32), probs.astype(np.float32)
