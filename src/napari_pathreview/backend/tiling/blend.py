"""Overlap-blending windows and the two accumulators of tile predictions: the whole image in memory
(:class:`Stitcher`) and one band of tile rows streamed to an array (:class:`BandBlender`).

Predictions are channel-first ``(C, h, w)`` float32 in image pixels. Overlapping predictions are
blended with a smooth window that is small near tile edges (where a network sees little context),
which removes seams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .plan import Tile

#: smallest weight of each 1-D window profile; 2-D windows are >= WEIGHT_FLOOR ** 2 > 0, so every pixel
#: is covered by a strictly positive weight. (The floor is per axis so that along an image edge, where
#: one profile is tiny for every tile, the other axis still ranks the tiles.)
WEIGHT_FLOOR = 1e-3


def _check_window(kind, border: int | None) -> None:
    if not isinstance(kind, np.ndarray):
        _profile(2, kind, border)


def _profile(n: int, kind: str, border: int | None) -> np.ndarray:
    d = np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float64) + 0.5  # distance to the edge
    if kind == "constant":
        return np.ones(n)
    if kind == "hann":
        b = max(1, n // 2 if border is None else int(border))
        return np.where(d < b, 0.5 - 0.5 * np.cos(np.pi * np.minimum(d, b) / b), 1.0)
    if kind == "gaussian":
        sigma = max(1.0, (n / 4 if border is None else float(border)) / 2)
        c = (n - 1) / 2
        return np.exp(-0.5 * ((np.arange(n) - c) / sigma) ** 2)
    raise InputError(f"unknown blending window {kind!r}: use 'hann', 'gaussian' or 'constant'")


def blend_window(h: int, w: int, kind: str = "hann", border: int | None = None) -> np.ndarray:
    """Separable blending weights, float32 ``(h, w)``, max 1, every value >= ``WEIGHT_FLOOR ** 2`` (1e-6).

    - ``"hann"``: raised-cosine ramp over ``border`` pixels at each edge, flat 1 inside
      (default ``border`` = half the side: a full Hann window);
    - ``"gaussian"``: Gaussian centred on the window with sigma = ``border / 2`` pixels
      (default ``border`` = side / 4, i.e. sigma = side / 8, as nnU-Net);
    - ``"constant"``: all ones (plain averaging of overlaps);
    - an array: those weights (positive, at least ``(h, w)``; cropped to it), e.g. another library's
      importance map, to reproduce its blending exactly.
    """
    if isinstance(kind, np.ndarray):
        win = np.asarray(kind, np.float32)
        if win.ndim != 2 or win.shape[0] < h or win.shape[1] < w or not (win > 0).all():
            raise InputError(
                f"a blending window array must be 2-D, positive and at least {h} x {w}, got shape {win.shape}"
            )
        return np.ascontiguousarray(win[:h, :w])
    wy, wx = (
        np.maximum(p / p.max(), WEIGHT_FLOOR) for p in (_profile(int(h), kind, border), _profile(int(w), kind, border))
    )
    return np.outer(wy, wx).astype(np.float32)


class Stitcher:
    """Weighted accumulation of overlapping tile predictions into one ``out_shape`` array.

    ``out_shape``: ``(C, H, W)`` or ``(H, W)``. ``add(tile, pred)`` with ``pred`` ``(C, h, w)`` (or
    ``(h, w)``) for ``tile``'s window; ``result()`` = sum(weight * pred) / sum(weight), in ``dtype``.

    Memory: holds the weighted sum (``C*H*W`` floats, in ``out`` when given, e.g. a numpy memmap)
    plus an ``H*W`` float32 weight sum: about ``(C + 1) * H * W * 4`` bytes. For slides too large for
    that, use :func:`predict_tiled_to_zarr`, which only keeps one band of tile rows.
    """

    def __init__(
        self,
        out_shape: tuple[int, ...],
        window: str = "hann",
        dtype=np.float32,
        out: np.ndarray | None = None,
        border: int | None = None,
    ):
        if len(out_shape) not in (2, 3):
            raise InputError(f"Stitcher needs a (C, H, W) or (H, W) shape, got {tuple(out_shape)}")
        self._squeeze = len(out_shape) == 2
        shape = (1, *out_shape) if self._squeeze else tuple(out_shape)
        self.dtype = np.dtype(dtype)
        if out is not None:
            if tuple(out.shape) != tuple(out_shape):
                raise InputError(f"out has shape {out.shape}, expected {tuple(out_shape)}")
            out[...] = 0
            self._sum = out.reshape(shape)
        else:
            self._sum = np.zeros(shape, np.float32)
        self._weight = np.zeros(shape[1:], np.float32)
        self.window, self.border = window, border
        _check_window(window, border)  # validate the kind now
        self._windows: dict[tuple[int, int], np.ndarray] = {}
        self._bufs: dict[tuple[int, ...], np.ndarray] = {}
        self._done = False

    def _win(self, h: int, w: int) -> np.ndarray:
        if (h, w) not in self._windows:
            self._windows[(h, w)] = blend_window(h, w, self.window, self.border)
        return self._windows[(h, w)]

    def add(self, tile: Tile, pred: np.ndarray) -> None:
        """Accumulate ``pred`` ``(C, h, w)`` (or ``(h, w)``) over ``tile``'s window."""
        pred = np.asarray(pred, np.float32)
        if pred.ndim == 2:
            pred = pred[None]
        if pred.shape != (self._sum.shape[0], *tile.shape):
            raise InputError(
                f"prediction shape {pred.shape} does not fit tile {tile.shape} with {self._sum.shape[0]} channels"
            )
        win = self._win(*tile.shape)
        sy, sx = tile.slices
        # weighted into a C-ordered scratch: a channels-last prediction (torch's channels_last output
        # viewed as numpy) is then read once in its own order, and the sum is updated contiguously
        buf = self._bufs.get(pred.shape)
        if buf is None:
            buf = self._bufs[pred.shape] = np.empty(pred.shape, np.float32)
        np.multiply(pred, win, out=buf)
        self._sum[:, sy, sx] += buf
        self._weight[sy, sx] += win

    def result(self) -> np.ndarray:
        """Blended prediction, ``out_shape``; raises InputError if some pixel got no tile.

        Normalises in place (no second ``C*H*W`` array): call it once, after the last :meth:`add`."""
        if self._done:
            raise RuntimeError("Stitcher.result() was already called")
        if not np.all(self._weight > 0):
            raise InputError("some pixels were not covered by any tile")
        self._done = True
        self._bufs.clear()
        res = np.divide(self._sum, self._weight, out=self._sum)
        res = res.astype(self.dtype, copy=False)
        return res[0] if self._squeeze else res


@dataclass
class TileSpec:
    """How an image is cut and blended: ``tile`` x ``tile`` px windows overlapping by at least
    ``overlap`` px (:func:`plan_tiles`), blended with ``window`` / ``border`` (:func:`blend_window`),
    ``batch_size`` tiles per ``predict_fn`` call."""

    tile: int
    overlap: int
    window: str | np.ndarray = "hann"
    border: int | None = None
    batch_size: int = 1


@dataclass
class BandWrite:
    """What :func:`predict_tiled_to_zarr` writes. ``postprocess(band)``: float32 ``(C, h, W)`` ->
    ``(C', h, W)`` or ``(h, W)`` (argmax, threshold ...; None: identity); ``dtype``: of the zarr array
    created when ``out`` is a path; ``start_row`` (resuming): only rows ``>= start_row``;
    ``cols = (x0, x1)`` (a vertical strip): only those columns (None: all)."""

    postprocess: Callable[[np.ndarray], np.ndarray] | None = None
    dtype: object = np.float32
    start_row: int = 0
    cols: tuple[int, int] | None = None


class BandBlender:
    """The rows of a streamed prediction that may still receive tile contributions.

    ``acc`` ``(C, tile, xb - xa)``: weighted sums, ``wsum``: weights, ``b0``: the image row of
    ``acc[:, 0]``; columns ``xa..xb`` are those of the tiles run. :meth:`flush` writes the rows above a
    row no later tile reaches (normalised and post-processed) to ``out`` and drops them.
    """

    def __init__(self, out, shape_yx, rows: int, tiles: list[Tile], spec: TileSpec, out_channels: int, write):
        self.out, (self.h, self.w), self.spec, self.write, self.c = out, shape_yx, spec, write, out_channels
        self.cx0, self.cx1 = write.cols if write.cols is not None else (0, self.w)
        self.xa = min((t.x0 for t in tiles), default=self.cx0)
        self.width = max((t.x1 for t in tiles), default=self.cx1) - self.xa
        self.acc = np.zeros((out_channels, rows, self.width), np.float32)
        self.wsum = np.zeros((rows, self.width), np.float32)
        self.b0 = tiles[0].y0 if tiles else self.h
        self.wins: dict[tuple[int, int], np.ndarray] = {}

    def add(self, t: Tile, p: np.ndarray) -> None:
        if t.y0 > self.b0:
            self.flush(t.y0)
        if t.shape not in self.wins:
            self.wins[t.shape] = blend_window(*t.shape, self.spec.window, self.spec.border)
        win = self.wins[t.shape]
        self.acc[:, t.y0 - self.b0 : t.y1 - self.b0, t.x0 - self.xa : t.x1 - self.xa] += p * win
        self.wsum[t.y0 - self.b0 : t.y1 - self.b0, t.x0 - self.xa : t.x1 - self.xa] += win

    def flush(self, y_end: int) -> None:
        k = y_end - self.b0
        if k <= 0:
            return
        lo = max(self.b0, self.write.start_row)
        if y_end > lo:
            xs = slice(self.cx0 - self.xa, self.cx1 - self.xa)
            band = self.acc[:, lo - self.b0 : k, xs] / self.wsum[lo - self.b0 : k, xs]
            if self.write.postprocess is not None:
                band = np.asarray(self.write.postprocess(band))
            if isinstance(self.out, (str, Path)):
                import zarr

                lead, (h, w), t = band.shape[:-2], (self.h, self.w), self.spec.tile
                chunks = (*lead, min(t, h), min(t, w))
                self.out = zarr.open_array(
                    str(self.out), mode="w", shape=(*lead, h, w), dtype=self.write.dtype, chunks=chunks
                )
            self.out[..., lo:y_end, self.cx0 : self.cx1] = band
        self.acc = np.concatenate([self.acc[:, k:], np.zeros((self.c, k, self.width), np.float32)], axis=1)
        self.wsum = np.concatenate([self.wsum[k:], np.zeros((k, self.width), np.float32)], axis=0)
        self.b0 = y_end
