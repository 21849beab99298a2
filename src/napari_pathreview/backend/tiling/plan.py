"""Tile plans and tile reads: the minimal-padding plan, reflect padding, one tile as numpy.

The plan is the minimal-padding one from the HuBMAP work: per axis ``n = ceil((size - overlap) /
(tile - overlap))`` tiles whose starts are spread evenly from ``0`` to ``size - tile``. Every tile is
then fully inside the image (no padding when ``size >= tile``) and neighbours overlap by at least
``overlap`` pixels. All coordinates and sizes are in image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Tile:
    """One window ``[y0:y1, x0:x1]`` of the image (pixels), ``index`` in row-major plan order.

    Its size is the full tile size, except along an axis where the image is smaller than a tile: there
    it covers the whole axis and the caller pads the crop (see :func:`pad_to`).
    """

    y0: int
    x0: int
    y1: int
    x1: int
    index: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` of the window in pixels."""
        return (self.y1 - self.y0, self.x1 - self.x0)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(slice(y0, y1), slice(x0, x1))``."""
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))


#: ``glass(tile) -> True`` when a tile is known to be bare glass (it is then not read), or None.
GlassFn = Callable[["Tile"], bool] | None


def _check_tiling(tile: int, overlap: int) -> None:
    if int(tile) != tile or int(overlap) != overlap:
        raise InputError(f"tile ({tile}) and overlap ({overlap}) must be whole numbers of pixels")
    if tile < 16:
        raise InputError(f"tile size {tile} is too small: use at least 16 pixels")
    if not 0 <= overlap < tile:
        raise InputError(f"overlap {overlap} must be >= 0 and smaller than the tile size {tile}")


def axis_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of ``size`` pixels (see module docstring); ``[0]`` if ``size <= tile``."""
    if size < 1:
        raise InputError(f"cannot tile an axis of size {size}: the image is empty")
    if size <= tile:
        return [0]
    n = max(1, math.ceil((size - overlap) / (tile - overlap)))
    # consecutive rounded starts differ by floor/ceil of (size - tile) / (n - 1) <= tile - overlap
    return [int(s) for s in np.round(np.linspace(0, size - tile, n)).astype(int)]


def plan_tiles(shape_yx: tuple[int, int], tile: int, overlap: int) -> list[Tile]:
    """Minimal-padding tile plan for an image of ``shape_yx = (H, W)`` pixels, row-major order.

    ``tile``: window side (pixels, >= 16); ``overlap``: minimum overlap of neighbours (0 <= overlap < tile).
    Returns ``ny * nx`` tiles with ``n = ceil((size - overlap) / (tile - overlap))`` per axis (1 when
    ``size <= tile``). Raises :class:`InputError` on bad arguments.
    """
    _check_tiling(tile, overlap)
    if len(shape_yx) != 2:
        raise InputError(f"plan_tiles needs a (height, width) shape, got {tuple(shape_yx)}")
    h, w = (int(s) for s in shape_yx)
    ys, xs = axis_starts(h, tile, overlap), axis_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    return [Tile(y, x, y + th, x + tw, i * len(xs) + j) for i, y in enumerate(ys) for j, x in enumerate(xs)]


def pad_to(array: np.ndarray, h: int, w: int, mode: str = "reflect") -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pad ``array`` ``(Y, X)`` or ``(Y, X, C)`` at the bottom/right to at least ``(h, w)`` pixels.

    Returns ``(padded, crop)`` where ``padded[crop]`` is the original array (``crop`` is a pair of slices
    over Y and X). Axes already >= the target are left alone. ``mode`` is any ``np.pad`` mode.
    """
    array = np.asarray(array)
    ny, nx = array.shape[:2]
    crop = (slice(0, ny), slice(0, nx))
    py, px = max(0, h - ny), max(0, w - nx)
    if py == 0 and px == 0:
        return array, crop
    if mode == "reflect" and (ny == 1 and py or nx == 1 and px):
        mode = "edge"  # reflect is undefined on a single row/column
    pad = [(0, py), (0, px)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode=mode), crop


def iter_tiles(image_yx_c, tiles: Iterable[Tile], glass: GlassFn = None) -> Iterator[tuple[Tile, np.ndarray]]:
    """Yield ``(tile, crop)`` with ``crop = np.asarray(image[y0:y1, x0:x1])`` (numpy or dask input).

    ``glass(tile)`` True: the tile is known to be bare glass (e.g. ``tissue.CoarseTissue``) and is not
    read; its crop is white (255), which a predict function then treats as glass."""
    for t in tiles:
        if glass is not None and glass(t):
            yield t, np.full((t.y1 - t.y0, t.x1 - t.x0, *image_yx_c.shape[2:]), 255, image_yx_c.dtype)
            continue
        yield t, read_tile(image_yx_c, t)


def read_tile(image_yx_c, t: Tile) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` as numpy; a dask input is computed in this thread (one small read:
    dask's thread pool costs more than it saves)."""
    crop = image_yx_c[t.y0 : t.y1, t.x0 : t.x1]
    if hasattr(crop, "dask"):
        crop = crop.compute(scheduler="synchronous")
    return np.asarray(crop)
