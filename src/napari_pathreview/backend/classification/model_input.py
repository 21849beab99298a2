"""A classifier's input and output: model-scale pixels, tiles, normalisation, probabilities, decisions.

Pixels vs microns: a classifier works at its card's ``mpp``. An input at ``mpp`` µm/px is resampled by
``mpp / card.mpp``; an input without a known mpp is assumed to be at ``card.params["input_mpp"]`` (the
training data's scale: GlaS 0.62 µm/px). Images whose model-scale side exceeds ``card.params["tile"]``
are classified (and explained, see ``backend.explain``) tile by tile; tile probabilities are averaged.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, check_cancel
from ..normalisation import normalise_pixels
from ..slides import Slide, check_model_scale, to_rgb_uint8
from ..tiling import Tile, pad_to, plan_tiles


def to_model_scale(image, card, mpp: float | None = None) -> np.ndarray:
    """An ``(H, W, C)`` array or a Slide -> float32 ``(h, w, C)`` in [0, 1] at the card's mpp.

    ``mpp``: µm per level-0 pixel of ``image`` (default: the slide's, else ``card.params["input_mpp"]``).
    A pyramid is read at its coarsest level that is still at least as fine as the model's scale.
    """
    name = (image.path or image.name or "image") if isinstance(image, Slide) else "image"
    if isinstance(image, Slide):
        mpp = mpp or image.mpp
        level = 0
        if mpp:  # the coarsest pyramid level still at least as fine as the model's scale
            level = max(i for i, d in enumerate(image.downsamples) if i == 0 or mpp * d <= card.mpp * 1.05)
            mpp = mpp * image.downsamples[level]
        image = np.asarray(image.levels[level])
    a = np.asarray(image)
    if card.in_channels == 3:
        a = to_rgb_uint8(a, "image")
    elif a.ndim != 3 or a.shape[2] != card.in_channels:
        raise InputError(f"image has shape {a.shape}; this model needs {card.in_channels} channels")
    a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else max(1.0, float(a.max())))
    factor = check_model_scale(input_mpp(card, mpp), card.mpp, name)
    if abs(factor - 1) > 1e-3:
        from skimage.transform import resize

        shape = (max(1, round(a.shape[0] * factor)), max(1, round(a.shape[1] * factor)))
        a = resize(a, shape, order=1, anti_aliasing=factor < 1, preserve_range=True).astype(np.float32)
    return a


def input_mpp(card, mpp: float | None) -> float:
    """The µm/px assumed for an input: ``mpp`` when known, else the card's training-data scale."""
    return float(mpp) if mpp else float(card.params.get("input_mpp") or card.mpp)


def normalise(batch_hwc: np.ndarray, card):
    """float ``(B, H, W, C)`` in [0, 1] -> torch ``(B, C, H, W)`` normalised with the card's mean / std."""
    import torch

    x = normalise_pixels(np.asarray(batch_hwc, np.float32), card.normalisation)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def tile_side(card) -> int:
    """Model-scale side of one input tile: the ViT's fixed size, else ``params["tile"]`` (512)."""
    if card.task == "vit":
        return int(card.config.get("img_size", 224))
    return int(card.params.get("tile", 512))


def model_tiles(shape_hw, card):
    """Tiles ``backend.tiling.Tile`` covering a model-scale image (one tile when it fits)."""
    side = tile_side(card)
    h, w = shape_hw
    if card.task != "vit" and h <= side and w <= side:
        return [Tile(0, 0, h, w, 0)]
    return plan_tiles((h, w), side, side // 4)


def pad_for_model(crop: np.ndarray, card) -> np.ndarray:
    """Reflect-pad ``(h, w, C)`` at bottom/right to the ViT size or a multiple of 16 (CNN stride)."""
    h, w = crop.shape[:2]
    if card.task == "vit":
        side = tile_side(card)
        return pad_to(crop, side, side)[0]
    m = 2 ** len(card.config.get("widths", (0, 0, 0, 0)))
    return pad_to(crop, -(-h // m) * m, -(-w // m) * m)[0]


def probabilities(logits, card):
    """torch logits ``(B, K)`` -> probabilities (sigmoid for multi-label, else softmax)."""
    import torch

    return torch.sigmoid(logits) if card.config.get("multilabel") else torch.softmax(logits, 1)


def predict_probs(model, card, images_hwc: np.ndarray, tta: bool = False, cancel=None) -> np.ndarray:
    """Class probabilities ``(B, K)`` for model-scale images ``(B, H, W, C)`` (same size), float [0, 1].

    Tile probabilities are averaged; ``tta``: also over the 4 flips (none, horizontal, vertical, both).
    """
    import torch

    images_hwc = np.asarray(images_hwc, np.float32)
    dev = next(model.parameters()).device
    tiles = model_tiles(images_hwc.shape[1:3], card)
    flips = [(), (2,), (1,), (1, 2)] if tta else [()]
    acc = 0.0
    with torch.no_grad():
        for t in tiles:
            check_cancel(cancel)
            crops = np.stack([pad_for_model(im[t.y0 : t.y1, t.x0 : t.x1], card) for im in images_hwc])
            for f in flips:
                c = np.flip(crops, f) if f else crops
                acc = acc + probabilities(model(normalise(c, card).to(dev)), card).float().cpu().numpy()
    return acc / (len(tiles) * len(flips))


def stain_shifted(img: np.ndarray, index: int, strength: float | None) -> np.ndarray:
    """``img`` (float ``(H, W, 3)`` in [0, 1]) with a stain shift fixed by ``index``: HED optical densities
    scaled by ``U(1 - strength, 1 + strength)`` and shifted by ``U(-strength / 4, strength / 4)`` per
    stain (``backend.augment.hed_jitter``; a later-batch proxy); unchanged when ``strength`` is None or 0 or not RGB."""
    if not strength or img.ndim != 3 or img.shape[2] != 3:
        return img
    from ..augment import hed_jitter

    rng = np.random.default_rng(1000 + int(index))
    return hed_jitter(np.asarray(img, np.float32), rng, sigma=float(strength), bias=float(strength) / 4)


def decide(probs: np.ndarray, card) -> np.ndarray:
    """0/1 decisions ``(B, K)`` from probabilities with the card's per-class thresholds.

    Multi-label: ``p_k >= t_k``. Single-label: one class per image, ``argmax_k (p_k - t_k)`` (for two
    classes this is ``p_1 >= t_1`` with ``t_0 = 1 - t_1``).
    """
    probs = np.atleast_2d(probs)
    t = np.asarray(card.params.get("thresholds") or [0.5] * probs.shape[1], np.float32)
    if card.config.get("multilabel"):
        return (probs >= t).astype(np.int64)
    out = np.zeros(probs.shape, np.int64)
    out[np.arange(len(probs)), np.argmax(probs - t, 1)] = 1
    return out
