"""Detect cells in an image or a lazy slide of any size and scale.

Pixels vs microns: the model works at its card's ``mpp``; inputs at another mpp are resampled per tile,
and points come back in the input's level-0 pixels. Each tile keeps the points in the region it owns
(halfway to its neighbours' centres), so a cell near a border is taken from the tile that saw it with
the most context; :func:`~.maps.dedupe` then drops the rare pair split across a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, ProgressFn, check_cancel, report
from ..memory import detect_bytes, require_memory
from ..modelio import check_mpp
from ..points import CellPoints
from ..slides import Slide, check_model_scale, to_rgb_uint8
from ..stain import image_factor, scale_hematoxylin
from ..tiling import plan_tiles, read_tile
from ..tissue import glass_tiles, is_background
from ..weights import class_colors
from .maps import DetectParams, decode, dedupe, normalise, predict_tile


def _axis_bounds(starts: np.ndarray, tile: float) -> np.ndarray:
    """Boundaries between the regions each tile owns along one axis (midpoints of tile centres)."""
    centres = np.unique(starts) + tile / 2.0
    return np.r_[-np.inf, (centres[1:] + centres[:-1]) / 2.0, np.inf]


def _stain_factor(arr, params: DetectParams, to_uint8, image=None, level: int = 0) -> float:
    """One hematoxylin factor for the whole image (1.0 without a reference). ``to_uint8``: the
    conversion tiles get, applied here to in-memory non-8-bit arrays; a lazy non-8-bit slide keeps 1.0.
    A Slide ``image``'s coarse level places the measured windows on tissue."""
    if params.stain_reference is None:
        return 1.0
    if np.dtype(arr.dtype) != np.uint8:
        if not isinstance(arr, np.ndarray):
            return 1.0
        arr = to_uint8(arr)
    return image_factor(arr, params.stain_reference, image, level)


def _input_array(image, card, mpp, level, name):
    """-> (array to read (H, W[, C]), level, its downsample, level-0 mpp, name) for an array or a Slide
    (default level: the coarsest one at least as fine as the model's mpp, within 10 %)."""
    if isinstance(image, Slide):
        mpp = image.mpp if mpp is None else mpp
        mpp = check_mpp(mpp, image.path or name)
        if level is None:
            level = 0
            for i in range(len(image.levels)):
                if image.level_mpp(i) <= card.mpp * 1.1:
                    level = i
        arr, down = image.levels[level], image.downsamples[level]
        name = image.path or name
    else:
        arr, down = image, 1.0
        mpp = check_mpp(mpp if mpp is not None else card.mpp, name)
    check_model_scale(mpp, card.mpp, name)
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 1:
        raise InputError(f"{name}: expected a 2-D RGB image, got shape {tuple(arr.shape)}")
    return arr, level, down, mpp, name


def _intensity_range(image, arr, name: str):
    """-> (lo, hi): one intensity stretch for a whole non-8-bit image (not per tile), from its coarsest
    level or a ~512 px subsample; (None, None) for 8-bit images and values already in [0, 1]."""
    if np.dtype(arr.dtype) == np.uint8:
        return None, None
    small = (
        image.levels[-1]
        if isinstance(image, Slide)
        else arr[:: max(1, arr.shape[0] // 512), :: max(1, arr.shape[1] // 512)]
    )
    small = np.asarray(small, np.float64)
    if not np.isfinite(small).all():
        raise InputError(f"{name}: image has NaN or infinite pixels; fix or export the image again")
    if small.max() > 1.0 or small.min() < 0.0:
        lo, hi = np.percentile(small, [0.5, 99.5])
        return lo, hi
    return None, None


@dataclass
class _TileReader:
    """Reads one tile as the network sees it: 8-bit RGB (``lo``/``hi`` stretch), resampled by ``scale``
    (model pixels per input pixel), hematoxylin scaled by ``h_factor``."""

    arr: object
    name: str
    lo: float | None
    hi: float | None
    scale: float
    h_factor: float
    skip_background: bool

    def read(self, t):
        """-> (crop (h, w, 3) uint8 at the model's scale, (th, tw) input pixels read), or None for glass."""
        from skimage.transform import resize

        crop = to_rgb_uint8(read_tile(self.arr, t), self.name, self.lo, self.hi)
        if self.skip_background and is_background(crop):  # bare glass: no cells, no network call
            return None
        th, tw = crop.shape[:2]
        if abs(self.scale - 1) > 0.02:
            mh, mw = max(1, int(round(th * self.scale))), max(1, int(round(tw * self.scale)))
            crop = resize(crop, (mh, mw), order=1, anti_aliasing=self.scale < 1, preserve_range=True)
            crop = crop.astype(np.uint8)
        if self.h_factor != 1.0:
            crop = scale_hematoxylin(crop, self.h_factor)
        return crop, (th, tw)


def _detect_tiles(model, card, params, reader: _TileReader, tiles, tile_in, glass, progress, cancel) -> list:
    """Each tile's points (input pixels of the level read) inside the region it owns."""
    by = _axis_bounds(np.array([t.y0 for t in tiles]), tile_in)
    bx = _axis_bounds(np.array([t.x0 for t in tiles]), tile_in)
    ys, xs = np.unique([t.y0 for t in tiles]), np.unique([t.x0 for t in tiles])
    parts = []
    for i, t in enumerate(tiles):
        check_cancel(cancel)
        got = None if glass is not None and glass(t) else reader.read(t)  # glass by the coarse level: not read
        if got is None:
            report(progress, i + 1, len(tiles), f"tile {i + 1}/{len(tiles)} (glass)")
            continue
        crop, (th, tw) = got
        pts = decode(predict_tile(model, normalise(crop, card), params.tta), card.classes, params, card.mpp)
        pts.yx = (pts.yx + 0.5) * np.array([th / crop.shape[0], tw / crop.shape[1]], np.float32) - 0.5
        pts.yx += np.array([t.y0, t.x0], np.float32)
        iy, ix = np.searchsorted(ys, t.y0), np.searchsorted(xs, t.x0)
        own = (
            (pts.yx[:, 0] >= by[iy])
            & (pts.yx[:, 0] < by[iy + 1])
            & (pts.yx[:, 1] >= bx[ix])
            & (pts.yx[:, 1] < bx[ix + 1])
        )
        parts.append(pts.select(own))
        report(progress, i + 1, len(tiles), f"tile {i + 1}/{len(tiles)}")
    return parts


def detect(
    image,
    model,
    card,
    mpp: float | None = None,
    params: DetectParams | None = None,
    level: int | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
    skip_background: bool = True,
) -> CellPoints:
    """Detect cells in an image or a lazy slide.

    Args:
        image: (H, W, 3) numpy/dask array (uint8 RGB or anything ``to_rgb_uint8`` accepts) or a Slide.
        model, card: from ``weights.load_model``.
        mpp: microns per pixel of ``image`` (a Slide's own mpp when None); None and no metadata -> the
            model's mpp is assumed only when ``card.mpp`` is None, else InputError.
        params: decoding / tiling parameters; the card's tuned values by default.
        level: pyramid level of a Slide to read; default: the level closest to the model's mpp from below.
        skip_background: tiles of bare glass (``tissue.is_background``) are not sent to the network
            (bright-field slides; pass False for dark-background images).

    Returns CellPoints in level-0 pixels of the input, with ``mpp`` = the input's level-0 mpp.
    """
    params = params or DetectParams.from_card(card)
    arr, level, down, mpp, name = _input_array(image, card, mpp, level, name)
    level_mpp = mpp * down
    lo, hi = _intensity_range(image, arr, name)
    scale = level_mpp / card.mpp  # model pixels per input pixel
    h, w = arr.shape[:2]
    h_factor = _stain_factor(arr, params, lambda a: to_rgb_uint8(a, name, lo, hi), image, level)
    tile_in = max(16, int(round(params.tile / scale)))
    overlap_in = min(tile_in - 8, max(0, int(round(params.overlap / scale))))
    require_memory(
        detect_bytes((h, w), level_mpp, params.tile, len(card.classes) + 40),
        f"{name}: detecting cells in {h} x {w} px at {level_mpp:.3g} µm/px",
        "draw a region in the Detect dock (its region row) or detect a crop of the slide exported from "
        "QuPath / napari, or use a machine with more memory",
        0.9,
    )
    tiles = plan_tiles((h, w), tile_in, overlap_in)
    reader = _TileReader(arr, name, lo, hi, scale, h_factor, skip_background)
    glass = glass_tiles(image, level, skip_background)
    parts = _detect_tiles(model, card, params, reader, tiles, tile_in, glass, progress, cancel)
    pts = CellPoints.concat(parts) if parts else CellPoints.empty(card.classes, model.cfg.feature_dim, mpp=card.mpp)
    pts = dedupe(pts, params.min_distance_um / level_mpp)
    pts.yx = (pts.yx + 0.5) * down - 0.5
    pts.mpp, pts.source = mpp, card.name
    pts.colors = card.colors or class_colors(card.classes)
    return pts
