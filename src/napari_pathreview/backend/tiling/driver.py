"""The one tile driver (:func:`map_tiles`) and the blended predictions built on it.

Conventions: images are channel-last ``(H, W, C)`` (or ``(H, W)``, read as one channel), numpy or dask;
predictions are channel-first ``(C, h, w)`` float32. All coordinates and sizes are in image pixels.

:func:`map_tiles` reads tiles (never the glass ones), prepares them, runs a predict function on batches
of them (halving a batch on an accelerator out-of-memory error), reports progress and honours cancel,
and yields each tile's prediction. :func:`predict_tiled` and :func:`predict_tiled_to_zarr` blend those
predictions into maps (segmentation, enhancement); ``detection.detect`` decodes each into cells.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import groupby

import numpy as np

from ..errors import InputError, ProgressFn, check_cancel, report
from .blend import BandBlender, BandWrite, Stitcher, TileSpec, _check_window
from .oom import OomSplitter, PredictFn
from .plan import GlassFn, Tile, pad_to, plan_tiles, read_tile


@dataclass
class TileFeed:
    """How :func:`map_tiles` feeds tiles to a predict function.

    ``batch_size``: tiles per call (consecutive tiles of the plan). ``glass(tile)`` True: the tile is
    known to be bare glass and is never read; with ``skip_glass`` it is dropped (no prediction), else its
    crop is white (255), which a predict function treats as glass. ``prepare(crop, tile)``: the crop read
    (numpy ``(h, w[, C])``, the tile's window) -> the network input ``(h', w', C')`` of this tile, or None
    when there is nothing to run (e.g. glass judged from the pixels); None: the crop as it is. Inputs
    batched together must share one shape. ``channels``: the predictions' channel count, checked (None:
    any).
    """

    batch_size: int = 1
    glass: GlassFn = None
    skip_glass: bool = False
    prepare: Callable[[np.ndarray, Tile], np.ndarray | None] | None = None
    channels: int | None = None


def _crop(image, t: Tile, feed: TileFeed) -> np.ndarray | None:
    """The prepared input of tile ``t``, or None (skipped glass, or ``prepare`` found nothing to run)."""
    if feed.glass is not None and feed.glass(t):
        if feed.skip_glass:
            return None
        crop = np.full((*t.shape, *image.shape[2:]), 255, image.dtype)
    else:
        crop = read_tile(image, t)
    return crop if feed.prepare is None else feed.prepare(crop, t)


def _run(predict_fn, tiles: list[Tile], crops: list[np.ndarray], channels: int | None) -> np.ndarray:
    """``predict_fn`` on the stacked ``crops``: ``(B, C, h, w)``, its shape checked."""
    batch = np.stack(crops)
    pred = np.asarray(predict_fn(batch))
    want = (len(tiles), pred.shape[1] if channels is None and pred.ndim == 4 else channels, *batch.shape[1:3])
    if pred.shape != want:
        raise ValueError(f"predict_fn returned shape {pred.shape}, expected {want} (B, C, h, w)")
    return pred


def map_tiles(
    image_hwc,
    tiles: list[Tile],
    predict_fn: PredictFn,
    feed: TileFeed | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[tuple[Tile, np.ndarray]]:
    """Run ``predict_fn`` over ``tiles`` of ``image_hwc`` batch by batch; yield ``(tile, prediction)``.

    ``image_hwc``: numpy or dask ``(H, W[, C])``; only one batch of tiles is read at a time, each with
    :func:`read_tile`. ``predict_fn``: float32-or-any ``(B, h, w, C)`` numpy -> ``(B, C', h, w)`` numpy
    (at the prepared inputs' size), wrapped in an :class:`OomSplitter` unless it is one. ``feed``: batch
    size, glass, preparation (:class:`TileFeed`). ``cancel`` is checked before each batch is read (raises
    :class:`Cancelled`); ``progress(i, n, msg)`` is called after each of the ``n = ceil(len(tiles) /
    batch_size)`` batches. Tiles with no input (see :class:`TileFeed`) yield nothing. Predictions
    ``(C', h, w)`` are in plan order.
    """
    feed = feed or TileFeed()
    if feed.batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {feed.batch_size}")
    predict_fn = predict_fn if isinstance(predict_fn, OomSplitter) else OomSplitter(predict_fn)
    k = feed.batch_size
    n = math.ceil(len(tiles) / k)
    for i in range(n):
        check_cancel(cancel)
        group = tiles[i * k : (i + 1) * k]
        got = [(t, c) for t, c in ((t, _crop(image_hwc, t, feed)) for t in group) if c is not None]
        for _, run in groupby(got, key=lambda tc: tc[1].shape):  # one shape per call
            ts, crops = zip(*run)
            yield from zip(ts, _run(predict_fn, list(ts), list(crops), feed.channels))
        report(progress, i + 1, n, f"tiles {group[0].index + 1}-{group[-1].index + 1} of {len(tiles)}")


def _padded(crop: np.ndarray, t: Tile, size: tuple[int, int]) -> np.ndarray:
    """A crop as float32 ``(h, w, C)`` reflect-padded at the bottom / right to ``size`` (images smaller
    than a tile)."""
    crop = crop.astype(np.float32, copy=False)
    if crop.ndim == 2:
        crop = crop[..., None]
    return pad_to(crop, *size)[0]


def _check_image(image) -> tuple[int, int]:
    if image.ndim not in (2, 3):
        raise InputError(f"expected an image of shape (H, W, C) or (H, W), got {tuple(image.shape)}")
    return int(image.shape[0]), int(image.shape[1])


def _blended(image_hwc, predict_fn, tiles: list[Tile], spec: TileSpec, out_channels: int, glass, progress, cancel):
    """Yield ``(tile, prediction (C, h, w))`` cropped back to the tile's window."""
    size = (max(tiles[0].shape[0], spec.tile), max(tiles[0].shape[1], spec.tile))
    feed = TileFeed(spec.batch_size, glass, prepare=partial(_padded, size=size), channels=out_channels)
    for t, p in map_tiles(image_hwc, tiles, predict_fn, feed, progress, cancel):
        yield t, p[:, : t.shape[0], : t.shape[1]]


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
    ``cancel`` is checked before each batch (raises :class:`Cancelled`). ``glass``: tiles known to be
    bare glass, not read and run as white crops (see :class:`TileFeed`).
    """
    h, w = _check_image(image_hwc)
    tiles = plan_tiles((h, w), spec.tile, spec.overlap)
    st = Stitcher((out_channels, h, w), spec.window, border=spec.border)
    for t, p in _blended(image_hwc, predict_fn, tiles, spec, out_channels, glass, progress, cancel):
        st.add(t, p)
    return st.result()


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
    :func:`predict_tiled`.
    """
    write = write or BandWrite()
    h, w = _check_image(image_hwc)
    tiles = plan_tiles((h, w), spec.tile, spec.overlap)
    th = tiles[0].shape[0]
    cx0, cx1 = write.cols if write.cols is not None else (0, w)
    tiles = [t for t in tiles if t.y1 > write.start_row and t.x1 > cx0 and t.x0 < cx1]
    _check_window(spec.window, spec.border)
    blender = BandBlender(out, (h, w), th, tiles, spec, out_channels, write)
    if tiles:
        for t, p in _blended(image_hwc, predict_fn, tiles, spec, out_channels, glass, progress, cancel):
            blender.add(t, p)
    blender.flush(h)
    return blender.out
