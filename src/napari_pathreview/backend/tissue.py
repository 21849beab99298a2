"""Tissue versus glass in bright-field (H&E) tiles: tiles of bare glass are not sent to a model.

A pixel is tissue when it is coloured (RGB spread > ``SPREAD``) or dark (mean < ``DARK``); bare glass is
bright and grey. A tile with fewer than ``MIN_FRACTION`` tissue pixels (0.1 %: a 256² tile holding a single
nucleus already counts as tissue) is background. Not for fluorescence, where the background is dark:
callers take ``skip_background=False`` there.
"""
from __future__ import annotations

import numpy as np

SPREAD = 20.0
DARK = 200.0
MIN_FRACTION = 1e-3


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """``(..., H, W, C)`` RGB (or grey, C = 1) values 0..255 -> ``(..., H, W)`` bool, True on tissue."""
    a = np.asarray(rgb, np.float32)
    if a.shape[-1] == 1:
        return a[..., 0] < DARK
    a = a[..., :3]
    return (a.max(-1) - a.min(-1) > SPREAD) | (a.mean(-1) < DARK)


def is_background(tile: np.ndarray, min_fraction: float = MIN_FRACTION, step: int = 4) -> bool:
    """True when an ``(H, W, C)`` tile (0..255) is bare glass: fewer than ``min_fraction`` tissue pixels,
    counted on every ``step``-th row and column (a nucleus spans several samples at any usual scale)."""
    sample = tile[::step, ::step]
    if sample.size == 0:
        return True
    return float(tissue_mask(sample).mean()) < min_fraction
