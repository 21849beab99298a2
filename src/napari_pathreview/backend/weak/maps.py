"""Per-pixel maps of the weak-cells models: CAM presence probabilities, pseudo-labels, the stage-2 U-Net
softmax, and a type per cell sampled from them. Images are (H, W, 3) uint8 at the models' scale,
normalised with the models' card ``normalisation``."""

from __future__ import annotations

import numpy as np

from .crops import normalise


def cam_probs(models, img: np.ndarray, normalisation: dict, scales=(1.0,), flips: bool = False, device=None):
    """Per-pixel class presence probabilities ``(K, H, W)`` float32 of an (H, W, 3) uint8 image at the
    models' scale: sigmoid of the bilinearly upsampled local logits, averaged over models and TTA.
    ``normalisation``: the CAM models' card ``normalisation``."""
    import torch
    import torch.nn.functional as F

    models = models if isinstance(models, (list, tuple)) else [models]
    device = device or next(models[0].parameters()).device
    h, w = img.shape[:2]
    x0 = torch.from_numpy(normalise(img, normalisation))[None].to(device)
    acc, n = None, 0
    flip_sets = [(), (-1,), (-2,), (-2, -1)] if flips else [()]
    with torch.inference_mode():
        for m in models:
            s8 = m.stride
            for sc in scales:
                hs, ws = int(round(h * sc / s8)) * s8, int(round(w * sc / s8)) * s8
                x = F.interpolate(x0, size=(hs, ws), mode="bilinear", align_corners=False) if (hs, ws) != (h, w) else x0
                for fl in flip_sets:
                    xi = x.flip(fl) if fl else x
                    c = m.cams(xi)
                    c = c.flip(fl) if fl else c
                    p = torch.sigmoid(F.interpolate(c, size=(h, w), mode="bilinear", align_corners=False))[0]
                    acc = p if acc is None else acc + p
                    n += 1
    return (acc / n).float().cpu().numpy()


def pseudo_labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    """``(K, H, W)`` probabilities -> ``(H, W)`` int32: 0 background (all < threshold), else 1 + argmax."""
    lab = probs.argmax(0).astype(np.int32) + 1
    lab[probs.max(0) < threshold] = 0
    return lab


def cell_types(probs: np.ndarray, yx: np.ndarray, radius: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Type per cell from class maps. probs ``(K, H, W)`` (per-class maps, background excluded),
    yx ``(N, 2)`` pixels -> labels ``(N,)`` and per-class scores ``(N, K)`` (mean in a
    ``(2 radius + 1)`` px box, renormalised to sum 1)."""
    from scipy.ndimage import uniform_filter

    k, h, w = probs.shape
    if len(yx) == 0:
        return np.zeros(0, np.int64), np.zeros((0, k), np.float32)
    sm = uniform_filter(probs, size=(1, 2 * radius + 1, 2 * radius + 1), mode="nearest") if radius else probs
    iy = np.clip(np.round(yx[:, 0]).astype(int), 0, h - 1)
    ix = np.clip(np.round(yx[:, 1]).astype(int), 0, w - 1)
    sc = sm[:, iy, ix].T.astype(np.float32)
    sc = sc / np.maximum(sc.sum(1, keepdims=True), 1e-8)
    return sc.argmax(1).astype(np.int64), sc


def seg_probs(model, img: np.ndarray, normalisation: dict, device=None, flips: bool = True) -> np.ndarray:
    """Stage-2 U-Net softmax ``(1 + K, H, W)`` of an (H, W, 3) uint8 image (padded to the stride);
    ``normalisation``: the U-Net's card ``normalisation``."""
    import torch
    import torch.nn.functional as F

    device = device or next(model.parameters()).device
    h, w = img.shape[:2]
    s = model.stride
    x = torch.from_numpy(normalise(img, normalisation))[None].to(device)
    x = F.pad(x, (0, (-w) % s, 0, (-h) % s), mode="reflect")
    acc, n = 0, 0
    with torch.inference_mode():
        for fl in [(), (-1,), (-2,), (-2, -1)] if flips else [()]:
            xi = x.flip(fl) if fl else x
            p = torch.softmax(model(xi)["logits"], 1)
            acc = acc + (p.flip(fl) if fl else p)
            n += 1
    return (acc / n)[0, :, :h, :w].float().cpu().numpy()
