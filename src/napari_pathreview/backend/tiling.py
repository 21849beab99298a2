"""Tile plans, overlap-blending windows, stitching, and the one tiled-inference driver.

Conventions: images are channel-last ``(H, W, C)`` (or ``(H, W)``, read as one channel), numpy or dask;
predictions are channel-first ``(C, H, W)`` float32. All coordinates and sizes are in image pixels.

The plan is the minimal-padding one from the HuBMAP work: per axis ``n = ceil((size - overlap) /
(tile - overlap))`` tiles whose starts are spread evenly from ``0`` to ``size - tile``. Every tile is
then fully inside the image (no padding when ``size >= tile``) and neighbours overlap by at least
``overlap`` pixels. Overlapping predictions are blended with a smooth window that is small near tile
edges (where a network sees little context), which removes seams.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, ProgressFn, check_cancel, report

#: smallest weight of each 1-D window profile; 2-D windows are >= WEIGHT_FLOOR ** 2 > 0, so every pixel
#: is covered by a strictly positive weight. (The floor is per axis so that along an image edge, where
#: one profile is tiny for every tile, the other axis still ranks the tiles.)
WEIGHT_FLOOR = 1e-3

PredictFn = Callable[[np.ndarray], np.ndarray]


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


def _batches(image, tiles: list[Tile], tile: int, batch_size: int, glass: GlassFn = None):
    """Yield ``(tiles, batch)``: batch float32 ``(B, th, tw, C)``, crops reflect-padded to the tile size."""
    th, tw = tiles[0].y1 - tiles[0].y0, tiles[0].x1 - tiles[0].x0
    th, tw = max(th, tile), max(tw, tile)
    buf: list[tuple[Tile, np.ndarray]] = []
    for t, crop in iter_tiles(image, tiles, glass):
        crop = crop.astype(np.float32, copy=False)
        if crop.ndim == 2:
            crop = crop[..., None]
        buf.append((t, pad_to(crop, th, tw)[0]))
        if len(buf) == batch_size:
            yield [b[0] for b in buf], np.stack([b[1] for b in buf])
            buf = []
    if buf:
        yield [b[0] for b in buf], np.stack([b[1] for b in buf])


def _check_image(image) -> tuple[int, int]:
    if image.ndim not in (2, 3):
        raise InputError(f"expected an image of shape (H, W, C) or (H, W), got {tuple(image.shape)}")
    return int(image.shape[0]), int(image.shape[1])


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error (``torch.cuda.OutOfMemoryError`` and its kin)."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class OomSplitter:
    """Wraps a ``predict_fn`` so that an out-of-memory error halves the batch and retries.

    ``limit`` (the largest batch that ran) then caps every later call, so one OOM costs one retry for
    the whole run, not one per batch. A single tile that does not fit raises :class:`InputError`
    naming the tile size and what to do.
    """

    def __init__(self, predict_fn: PredictFn, limit: int | None = None):
        self.predict_fn, self.limit, self.retries = predict_fn, limit, 0
        self.out_channels = getattr(predict_fn, "out_channels", None)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if self.limit is not None and n > self.limit:
            k = self.limit
            return np.concatenate([self(batch[i : i + k]) for i in range(0, n, k)])
        try:
            return np.asarray(self.predict_fn(batch))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        free_accelerator_memory()
        self.retries += 1
        if n == 1:
            raise InputError(
                f"out of accelerator memory on a single {batch.shape[1]}x{batch.shape[2]} tile; "
                "use a smaller --tile or run on the CPU (--device cpu)"
            )
        self.limit = n // 2
        return self(batch)


def _run_batch(predict_fn: PredictFn, tiles: list[Tile], batch: np.ndarray, out_channels: int):
    """Call ``predict_fn`` and crop each prediction back to its tile window: list of ``(C, h, w)``."""
    pred = np.asarray(predict_fn(batch))
    want = (len(tiles), out_channels, batch.shape[1], batch.shape[2])
    if pred.shape != want:
        raise ValueError(f"predict_fn returned shape {pred.shape}, expected {want} (B, C, h, w)")
    return [p[:, : t.y1 - t.y0, : t.x1 - t.x0] for t, p in zip(tiles, pred)]


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


def _planned(image_hwc, predict_fn: PredictFn, spec: TileSpec):
    """-> (h, w, predict_fn wrapped in an :class:`OomSplitter`, tile plan)."""
    if spec.batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {spec.batch_size}")
    h, w = _check_image(image_hwc)
    predict_fn = predict_fn if isinstance(predict_fn, OomSplitter) else OomSplitter(predict_fn)
    return h, w, predict_fn, plan_tiles((h, w), spec.tile, spec.overlap)


def _predicted(image_hwc, predict_fn, tiles: list[Tile], spec: TileSpec, out_channels: int, progress, cancel, glass):
    """Yield ``(tile, prediction (C, h, w))`` batch by batch, checking ``cancel`` before and reporting
    ``progress`` after each batch."""
    n = math.ceil(len(tiles) / spec.batch_size)
    for i, (ts, batch) in enumerate(_batches(image_hwc, tiles, spec.tile, spec.batch_size, glass)):
        check_cancel(cancel)
        yield from zip(ts, _run_batch(predict_fn, ts, batch, out_channels))
        report(progress, i + 1, n, f"tiles {ts[0].index + 1}-{ts[-1].index + 1} of {len(tiles)}")


def predict_tiled(
    image_hwc,
    predict_fn: PredictFn,
    spec: TileSpec,
    out_channels: int,
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    glass: GlassFn = None,
) -> np.ndarray:
    """Run ``predict_fn`` over overlapping tiles of ``image_hwc`` and blend: float32 ``(C, H, W)``.

    ``image_hwc``: numpy or dask ``(H, W, C)`` or ``(H, W)``; only one batch of crops is read at a time.
    ``predict_fn``: float32 ``(B, tile, tile, C)`` numpy -> ``(B, out_channels, tile, tile)`` numpy
    (framework-agnostic: a torch model is wrapped by its caller). Crops of images smaller than a tile
    are reflect-padded to the tile size and their predictions cropped back. ``spec``: tile, overlap,
    blending window and batch size. ``progress(i, n, msg)`` is called after each of the ``n`` batches;
    ``cancel`` is checked before each batch (raises :class:`Cancelled`). ``glass``: see :func:`iter_tiles`.
    """
    h, w, predict_fn, tiles = _planned(image_hwc, predict_fn, spec)
    st = Stitcher((out_channels, h, w), spec.window, border=spec.border)
    for t, p in _predicted(image_hwc, predict_fn, tiles, spec, out_channels, progress, cancel, glass):
        st.add(t, p)
    return st.result()


class _BandBlender:
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


def predict_tiled_to_zarr(
    image_hwc,
    predict_fn: PredictFn,
    out,
    spec: TileSpec,
    out_channels: int,
    write: BandWrite | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    glass: GlassFn = None,
):
    """Same blending as :func:`predict_tiled`, written band by band into a zarr array; returns it.

    Bounded memory: tiles are processed in row-major plan order. Because tile rows start at increasing
    ``y``, once the first tile of the next row (start ``y_next``) arrives, image rows ``< y_next`` can
    receive no more contributions: they are normalised, passed through ``write.postprocess`` and written
    to ``out[..., y_prev:y_next, :]``. Only one band of ``tile`` rows is kept, about
    ``(out_channels + 1) * tile * W * 4`` bytes, plus one batch of crops.

    ``out``: an existing array supporting slice assignment (zarr, numpy) of the post-processed shape,
    or a path (str / Path) where a zarr array of ``write.dtype`` is created with ``(.., tile, tile)``
    chunks. Default post-processing: identity, ``out`` shape ``(C, H, W)``. The result is cast to
    ``out``'s dtype on writing.

    ``write.start_row`` (resuming): only the tiles reaching below it are run and only rows
    ``>= start_row`` are written; they get the same contributions in the same order as in a full run, so
    they are bit-identical to it. ``write.cols=(x0, x1)`` (a vertical strip): only the tiles reaching
    into those columns are run and only ``out[..., x0:x1]`` is written, again bit-identical to a full
    run there; the band kept in memory is then as wide as the strip, not the image. ``glass``: see
    :func:`iter_tiles`.
    """
    write = write or BandWrite()
    h, w, predict_fn, tiles = _planned(image_hwc, predict_fn, spec)
    th = tiles[0].y1 - tiles[0].y0
    cx0, cx1 = write.cols if write.cols is not None else (0, w)
    tiles = [t for t in tiles if t.y1 > write.start_row and t.x1 > cx0 and t.x0 < cx1]
    _check_window(spec.window, spec.border)
    blender = _BandBlender(out, (h, w), th, tiles, spec, out_channels, write)
    for t, p in _predicted(image_hwc, predict_fn, tiles, spec, out_channels, progress, cancel, glass):
        blender.add(t, p)
    blender.flush(h)
    return blender.out
