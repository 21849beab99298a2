"""Augmentations for H&E tiles (numpy, channel-last uint8 or float in [0, 1])."""
from __future__ import annotations

import numpy as np

# Ruifrok & Johnston H&E-DAB stain vectors (rows: H, E, DAB), as in skimage.color.rgb2hed.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED[2] = np.cross(_RGB_FROM_HED[0], _RGB_FROM_HED[1])
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def hed_jitter(img: np.ndarray, rng: np.random.Generator, sigma: float = 0.05, bias: float = 0.05) -> np.ndarray:
    """Stain jitter in HED optical-density space: each stain scaled by 1±sigma and shifted by ±bias.

    img: (H, W, 3) float in [0, 1]. Returns the same shape, clipped to [0, 1].
    """
    od = -np.log(np.clip(img, 1e-6, 1.0))
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB
    alpha = rng.uniform(1 - sigma, 1 + sigma, 3)
    beta = rng.uniform(-bias, bias, 3)
    hed = hed * alpha + beta
    out = np.exp(-(hed @ _RGB_FROM_HED)).reshape(img.shape)
    return np.clip(out, 0, 1).astype(np.float32)


def brightness_contrast(img: np.ndarray, rng: np.random.Generator, b: float = 0.1, c: float = 0.15) -> np.ndarray:
    """Random brightness (±b) and contrast (×1±c) around the mean; img float in [0, 1]."""
    mean = img.mean()
    out = (img - mean) * rng.uniform(1 - c, 1 + c) + mean + rng.uniform(-b, b)
    return np.clip(out, 0, 1).astype(np.float32)


def random_dihedral(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply the same random flip / 90° rotation to every (H, W, ...) array."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(0, 1))
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out
