"""Tile labels (the only supervision) and the crops stage 1 trains and tunes on."""

from __future__ import annotations

import numpy as np

from ..augment import brightness_contrast, hed_jitter
from ..normalisation import normalise_pixels


def tile_labels(
    yx: np.ndarray, labels: np.ndarray, y0: int, x0: int, size: int, n_classes: int, margin: float = 2.0
) -> np.ndarray:
    """Types present in the crop ``[y0, y0+size) x [x0, x0+size)`` -> ``(K,)`` float32 0/1.

    yx ``(N, 2)`` pixels, labels ``(N,)`` (-1 = unlabelled, ignored). Points closer than ``margin`` px
    to the crop's border do not count (their nucleus is mostly outside).
    """
    out = np.zeros(n_classes, np.float32)
    if len(yx) == 0:
        return out
    inside = (
        (yx[:, 0] >= y0 + margin)
        & (yx[:, 0] < y0 + size - margin)
        & (yx[:, 1] >= x0 + margin)
        & (yx[:, 1] < x0 + size - margin)
        & (labels >= 0)
    )
    out[np.unique(labels[inside])] = 1.0
    return out


def normalise(img: np.ndarray, normalisation: dict) -> np.ndarray:
    """(H, W, 3) uint8 (or float in [0, 1]) -> (3, H, W) float32 normalised with a card's ``normalisation``."""
    return normalise_pixels(img, normalisation).transpose(2, 0, 1)


def jitter_and_turn(img: np.ndarray, rng: np.random.Generator, *aligned: np.ndarray) -> tuple:
    """A uint8 crop -> float [0, 1] with stain (HED) and brightness / contrast jitter, then a random
    90° turn and horizontal flip applied to it and to the ``aligned`` arrays (label maps) alike.
    Returns contiguous copies: (image, *aligned)."""
    img = brightness_contrast(hed_jitter(img / 255.0, rng), rng)
    out = [img, *aligned]
    k = int(rng.integers(4))
    out = [np.rot90(a, k) for a in out]
    if rng.random() < 0.5:
        out = [a[:, ::-1] for a in out]
    return tuple(np.ascontiguousarray(a) for a in out)


def random_crops(samples, n: int, size: int, n_classes: int, rng: np.random.Generator, normalisation: dict):
    """``n`` random crops with dihedral + colour jitter -> x ``(n, 3, size, size)``, y ``(n, K)``."""
    xs, ys = [], []
    for _ in range(n):
        s = samples[rng.integers(len(samples))]
        h, w = s.image.shape[:2]
        y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        (img,) = jitter_and_turn(s.image[y0 : y0 + size, x0 : x0 + size], rng)
        xs.append(normalise(img, normalisation))
        ys.append(tile_labels(s.yx, s.labels, y0, x0, size, n_classes))
    return np.stack(xs), np.stack(ys)


def grid_crops(samples, size: int, n_classes: int):
    """Non-overlapping crops of every sample -> list of (sample index, y0, x0, size, tile label ``(K,)``)."""
    out = []
    for i, s in enumerate(samples):
        h, w = s.image.shape[:2]
        for y0 in range(0, h - size + 1, size):
            for x0 in range(0, w - size + 1, size):
                out.append((i, y0, x0, size, tile_labels(s.yx, s.labels, y0, x0, size, n_classes)))
    return out


def crop_tensor(samples, crops, normalisation: dict) -> tuple[np.ndarray, np.ndarray]:
    """The :func:`grid_crops` ``crops`` of ``samples`` -> x ``(n, 3, size, size)`` normalised, y ``(n, K)``."""
    x = np.stack([normalise(samples[i].image[y0 : y0 + s, x0 : x0 + s], normalisation) for i, y0, x0, s, _ in crops])
    return x, np.stack([c[-1] for c in crops])
