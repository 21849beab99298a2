"""The detector's maps and their decoding: one normalised tile -> objectness, class probabilities and
features (optionally averaged over the 8 dihedral transforms); peaks -> :class:`CellPoints`.

Units: maps are at the model's pixels (``card.mpp``); distances in :class:`DetectParams` are µm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import modelio
from ..points import CellPoints, find_peaks, sample_bilinear
from ..precision import autocast
from ..stain import normalised_image


@dataclass
class DetectParams:
    """Decoding parameters. threshold: objectness in [0, 1]; min_distance_um: between peaks (µm);
    smooth_um: sigma (µm) of a Gaussian applied to the objectness map before peak finding (0: none);
    tile / overlap: model-scale pixels per tile and shared by neighbouring tiles (128: 64 px of context each
    side, what reproduces the whole-image cells; tests/test_detector.py); tta: average the objectness
    and class probabilities over the 8 rotations / flips of each tile (8x slower); stain_reference: the
    hematoxylin level each input image is scaled to before the network (``stain``; None: as it is);
    adaptive: the card's per-image threshold rule (``adaptive.AdaptiveThreshold`` fields; None: the fixed
    ``threshold``); adapt_bn: the card's test-time batch-norm rule (``adaptive.BatchNormAdaptation`` fields;
    None: off). A ``threshold`` given as an override is a fixed one: both rules are then off."""

    threshold: float = 0.35
    min_distance_um: float = 2.2
    smooth_um: float = 0.0
    tile: int = 512
    overlap: int = 128
    tta: bool = False
    stain_reference: float | None = None
    adaptive: dict | None = None
    adapt_bn: dict | None = None

    @classmethod
    def from_card(cls, card, **override) -> DetectParams:
        """The card's tuned values, then the ``override`` values that are not None (a ``threshold`` among
        them turns the card's per-image rules off unless they are given too)."""
        if override.get("threshold") is not None:
            for rule in ("adaptive", "adapt_bn"):
                override[rule] = override.get(rule) or {}
        return modelio.from_card(cls, card, **override)


def stain_normalised(img: np.ndarray, card) -> np.ndarray:
    """(H, W, 3) uint8 image scaled to the card's hematoxylin reference (unchanged when it has none):
    for whole in-memory images read outside :func:`detect`, which applies the same factor tile by tile."""
    return normalised_image(img, (card.params or {}).get("stain_reference"))


def normalise(img: np.ndarray, card) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) float32 normalised with the card's mean / std."""
    mean = np.asarray(card.normalisation["mean"], np.float32)
    std = np.asarray(card.normalisation["std"], np.float32)
    return (img.astype(np.float32) / 255.0 - mean) / std


def predict_maps(model, img: np.ndarray, device=None, tta: bool = False) -> dict:
    """Run the detector on one normalised (H, W, 3) float32 tile.

    Returns numpy maps at the tile's pixels: objectness (H, W) in [0, 1], probs (K, H, W), features (F, H, W).
    ``tta``: objectness and probs are the means over the 8 dihedral transforms of the tile (each mapped
    back); features stay those of the tile as given, the ones the enhancer was trained on.
    """
    obj, probs, feats = _maps(model, img[None], device, tta)
    return {"objectness": obj[0], "probs": probs[0], "features": feats[0]}


def split_maps(stacked: np.ndarray, n_classes: int) -> dict:
    """One tile's stacked maps ``(1 + K + F, H, W)`` (:func:`predict_batch`) as the dict of
    :func:`predict_maps`: objectness (H, W), probs (K, H, W), features (F, H, W)."""
    return {"objectness": stacked[0], "probs": stacked[1 : 1 + n_classes], "features": stacked[1 + n_classes :]}


def predict_batch(model, batch: np.ndarray, device=None, tta: bool = False) -> np.ndarray:
    """The detector on normalised float32 tiles ``(B, H, W, 3)`` -> ``(B, 1 + K + F, H, W)`` float32:
    objectness in [0, 1], K class probabilities, F features, at the tiles' pixels (:func:`predict_maps`
    per tile, stacked; ``tta`` as there). A ``tiling`` predict function (see :class:`DetectorPredictor`)."""
    obj, probs, feats = _maps(model, batch, device, tta)
    return np.concatenate([obj[:, None], probs, feats], 1)


def _maps(model, batch: np.ndarray, device, tta: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objectness (B, H, W), probs (B, K, H, W) (TTA means when ``tta``), features (B, F, H, W)."""
    obj, probs, feats = _predict_once(model, batch, device)
    if tta:
        obj, probs = obj.copy(), probs.copy()
        for k in range(1, 8):
            turns, flip = k % 4, k >= 4
            x = np.rot90(batch[:, :, ::-1] if flip else batch, turns, axes=(1, 2))
            o, p, _ = _predict_once(model, np.ascontiguousarray(x), device)
            obj += _undo_dihedral(o, turns, flip)
            probs += _undo_dihedral(p, turns, flip)
        obj, probs = obj / 8.0, probs / 8.0
    return obj, probs, feats


class DetectorPredictor:
    """The detector as a ``tiling`` predict function: normalised tiles (B, H, W, 3) -> stacked maps
    (:func:`predict_batch`). ``batch_size``: tiles per forward that suit the device (4 on a GPU; 1 on the
    CPU, where it keeps every tile's result independent of how tiles are grouped). ``objectness_from``: a
    second model (e.g. one adapted to the image, ``adaptive.bn_adapted``) whose objectness replaces
    ``model``'s: where cells are is its call, their class probabilities and features stay ``model``'s."""

    def __init__(self, model, tta: bool = False, objectness_from=None):
        self.model, self.tta, self.objectness_from = model, tta, objectness_from
        self.device = next(model.parameters()).device
        self.batch_size = 4 if self.device.type == "cuda" else 1

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        maps = predict_batch(self.model, batch, self.device, self.tta)
        if self.objectness_from is not None:
            maps[:, 0] = predict_batch(self.objectness_from, batch, self.device, self.tta)[:, 0]
        return maps


def _undo_dihedral(a: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """Map (..., H, W) computed on ``rot90(fliplr(tile) if flip else tile, turns)`` back to the tile."""
    a = np.rot90(a, -turns, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def _predict_once(model, batch: np.ndarray, device=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One forward pass on (B, H, W, 3) float32 -> objectness (B, H, W), probs (B, K, H, W), features
    (B, F, H, W), float32 numpy."""
    import torch
    import torch.nn.functional as F

    device = device or next(model.parameters()).device
    h, w = batch.shape[1:3]
    s = model.stride
    ph, pw = (-h) % s, (-w) % s
    x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    with torch.inference_mode(), autocast(device):
        out = model(x.contiguous(memory_format=torch.channels_last))
    out = {k: v.float() for k, v in out.items()}
    crop = (slice(None), slice(None), slice(0, h), slice(0, w))
    return (
        torch.sigmoid(out["objectness"][crop])[:, 0].float().cpu().numpy(),
        torch.softmax(out["class_logits"][crop], 1).float().cpu().numpy(),
        out["features"][crop].float().cpu().numpy(),
    )


def decode(maps: dict, classes, params: DetectParams, mpp: float) -> CellPoints:
    """Peaks of the objectness map -> CellPoints at the maps' pixels (mpp = the model's)."""
    md = max(1, int(round(params.min_distance_um / mpp)))
    obj = smooth_objectness(maps["objectness"], params.smooth_um / mpp)
    peaks = find_peaks(obj, params.threshold, md)
    if len(peaks) == 0:
        return CellPoints.empty(classes, maps["features"].shape[0], mpp=mpp)
    probs = maps["probs"][:, peaks[:, 0], peaks[:, 1]].T
    feats = sample_bilinear(maps["features"], peaks.astype(np.float32))
    return CellPoints(
        peaks.astype(np.float32),
        probs.argmax(1),
        obj[peaks[:, 0], peaks[:, 1]],
        probs.astype(np.float32),
        list(classes),
        mpp,
        feats,
    )


def smooth_objectness(objectness: np.ndarray, sigma_px: float) -> np.ndarray:
    """(H, W) objectness blurred by a Gaussian of ``sigma_px`` pixels (unchanged when 0).

    The network's centre peaks are broad and ragged where annotations disagree by a few pixels; one
    blur merges the ragged maxima of a nucleus into one peak (chosen on the tune images, see tune_params).
    """
    if sigma_px <= 0:
        return objectness
    from scipy import ndimage

    return ndimage.gaussian_filter(objectness, sigma_px, mode="nearest")


def dedupe(points: CellPoints, distance: float) -> CellPoints:
    """Drop the lower-scoring point of any pair closer than ``distance`` (same units as yx)."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return points
    pairs = cKDTree(points.yx).query_pairs(distance, output_type="ndarray")
    if len(pairs) == 0:
        return points
    keep = np.ones(len(points), bool)
    order = np.argsort(-points.scores[pairs].max(1))
    for a, b in pairs[order]:
        if keep[a] and keep[b]:
            keep[b if points.scores[a] >= points.scores[b] else a] = False
    return points.select(keep)
