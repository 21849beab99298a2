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


class CoarseTissue:
    """Where a slide may hold tissue, from one of its coarse pyramid levels: asked per tile *before* the
    tile is read, so bare glass is neither read nor sent to a network.

    ``mask``: ``(h, w)`` bool at the coarse level, True where tissue may be (lenient thresholds, dilated
    by one coarse pixel); ``factor``: pixels of the read level per coarse pixel.
    """

    def __init__(self, mask: np.ndarray, factor: float):
        self.mask, self.factor = np.asarray(mask, bool), float(factor)

    def has_tissue(self, y0: int, y1: int, x0: int, x1: int) -> bool:
        """Whether the read-level box ``[y0, y1) x [x0, x1)`` (pixels) may hold tissue."""
        f = self.factor
        a, b = max(0, int(y0 // f)), int(-(-y1 // f))
        c, d = max(0, int(x0 // f)), int(-(-x1 // f))
        return bool(self.mask[a:b, c:d].any())

    def is_glass(self, tile) -> bool:
        """The ``tiling`` glass predicate: True when ``tile`` (a ``tiling.Tile``) shows no tissue here."""
        return not self.has_tissue(tile.y0, tile.y1, tile.x0, tile.x1)


def coarse_tissue(slide, level: int, max_factor: float = 32.0, min_factor: float = 4.0):
    """A :class:`CoarseTissue` for reading ``slide`` at ``level``, or None when the slide has no level
    between ``min_factor`` and ``max_factor`` times coarser, or is not 8-bit RGB (then every tile is read
    and judged by :func:`is_background` alone). The coarse level is read whole: at most
    ``(H / min_factor) * (W / min_factor)`` pixels, ~5 MB for a 40 000² slide with a /32 level."""
    from scipy import ndimage

    base = slide.downsamples[level]
    arr = slide.levels[level]
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] < 3:
        return None
    best = None
    for j in range(level + 1, len(slide.levels)):
        f = slide.downsamples[j] / base
        if min_factor <= f <= max_factor:
            best = j
    if best is None:
        return None
    small = np.asarray(slide.levels[best][..., :3], np.float32)
    # lenient: a coarse pixel averages glass with the few cells it may hold
    mask = (small.max(-1) - small.min(-1) > SPREAD / 2) | (small.mean(-1) < DARK + 20)
    mask = ndimage.binary_dilation(mask, iterations=1)
    fy = arr.shape[0] / small.shape[0]
    return CoarseTissue(mask, fy)


def slide_tissue(image, level: int, skip_background: bool = True) -> CoarseTissue | None:
    """The :class:`CoarseTissue` of reading ``image`` at ``level``, or None (not a Slide,
    ``skip_background`` off, or no usable coarse level: see :func:`coarse_tissue`)."""
    from .slides import Slide

    if not skip_background or not isinstance(image, Slide):
        return None
    return coarse_tissue(image, level)


def glass_tiles(image, level: int, skip_background: bool = True):
    """A ``tiling`` glass predicate (``Tile -> bool``, True where the slide's coarse level shows no
    tissue) for reading ``image`` at ``level``, or None (see :func:`slide_tissue`)."""
    coarse = slide_tissue(image, level, skip_background)
    return None if coarse is None else coarse.is_glass
