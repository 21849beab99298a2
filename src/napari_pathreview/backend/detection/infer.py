"""Detect cells in an image or a lazy slide of any size and scale.

Pixels vs microns: the model works at its card's ``mpp``; inputs at another mpp are resampled per tile,
and points come back in the input's level-0 pixels. Each tile keeps the points in the region it owns
(halfway to its neighbours' centres), so a cell near a border is taken from the tile that saw it with
the most context; :func:`~.maps.dedupe` then drops the rare pair split across a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import ProgressFn
from ..memory import detect_bytes, require_memory
from ..modelio import LevelInput, resolve_input
from ..points import CellPoints
from ..slides import to_rgb_uint8
from ..stain import image_factor, scale_hematoxylin
from ..tiling import Tile, TileFeed, map_tiles, plan_tiles
from ..tissue import glass_tiles, is_background
from ..weights import class_colors
from .adaptive import bn_adapted, build_adaptive, build_bn_adaptation
from .maps import DetectorPredictor, DetectParams, decode, dedupe, normalise, split_maps


def _axis_bounds(starts: np.ndarray, tile: float) -> np.ndarray:
    """Boundaries between the regions each tile owns along one axis (midpoints of tile centres)."""
    centres = np.unique(starts) + tile / 2.0
    return np.r_[-np.inf, (centres[1:] + centres[:-1]) / 2.0, np.inf]


@dataclass
class _TileInput:
    """Prepares one tile as the network sees it (a ``tiling.TileFeed.prepare``): 8-bit RGB resampled by
    ``scale`` (model pixels per input pixel), hematoxylin scaled by ``h_factor``, normalised with the
    card's mean / std; None for bare glass judged from its pixels (``skip_background``)."""

    card: object
    name: str
    scale: float
    h_factor: float
    skip_background: bool

    def __call__(self, crop: np.ndarray, t: Tile) -> np.ndarray | None:
        """(h, w[, C]) input pixels -> (h', w', 3) float32 at the model's scale, or None for glass."""
        from skimage.transform import resize

        crop = to_rgb_uint8(crop, self.name)
        if self.skip_background and is_background(crop):  # bare glass: no cells, no network call
            return None
        th, tw = crop.shape[:2]
        if abs(self.scale - 1) > 0.02:
            mh, mw = max(1, int(round(th * self.scale))), max(1, int(round(tw * self.scale)))
            crop = resize(crop, (mh, mw), order=1, anti_aliasing=self.scale < 1, preserve_range=True)
            crop = crop.astype(np.uint8)
        if self.h_factor != 1.0:
            crop = scale_hematoxylin(crop, self.h_factor)
        return normalise(crop, self.card)


class _Owned:
    """Per-tile post-processing: a tile's stacked maps -> its cells (input pixels of the level read)
    inside the region the tile owns (halfway to its neighbours' centres)."""

    def __init__(self, card, params: DetectParams, tiles: list[Tile], tile_in: float):
        self.card, self.params = card, params
        self.by = _axis_bounds(np.array([t.y0 for t in tiles]), tile_in)
        self.bx = _axis_bounds(np.array([t.x0 for t in tiles]), tile_in)
        self.ys, self.xs = np.unique([t.y0 for t in tiles]), np.unique([t.x0 for t in tiles])

    def holding(self, tiles: list[Tile], yx: np.ndarray) -> list[Tile]:
        """The tiles of ``tiles`` that own at least one of the points ``yx`` (N, 2), pixels of the level read."""
        iy = np.searchsorted(self.by, yx[:, 0], side="right") - 1
        ix = np.searchsorted(self.bx, yx[:, 1], side="right") - 1
        owners = set(zip(iy.tolist(), ix.tolist()))
        return [t for t in tiles if (np.searchsorted(self.ys, t.y0), np.searchsorted(self.xs, t.x0)) in owners]

    def __call__(self, t: Tile, maps: np.ndarray) -> CellPoints:
        card, params = self.card, self.params
        pts = decode(split_maps(maps, len(card.classes)), card.classes, params, card.mpp)
        (th, tw), (mh, mw) = t.shape, maps.shape[1:]
        pts.yx = (pts.yx + 0.5) * np.array([th / mh, tw / mw], np.float32) - 0.5
        pts.yx += np.array([t.y0, t.x0], np.float32)
        iy, ix = np.searchsorted(self.ys, t.y0), np.searchsorted(self.xs, t.x0)
        by, bx = self.by, self.bx
        own = (
            (pts.yx[:, 0] >= by[iy])
            & (pts.yx[:, 0] < by[iy + 1])
            & (pts.yx[:, 1] >= bx[ix])
            & (pts.yx[:, 1] < bx[ix + 1])
        )
        return pts.select(own)


def _relabelled(progress: ProgressFn | None, prefix: str) -> ProgressFn | None:
    """``progress`` with ``prefix`` before each message (the passes after the first say what they are)."""
    if progress is None:
        return None
    return lambda i, n, msg="": progress(i, n, prefix + msg)


def _check_memory(src: LevelInput, params: DetectParams, card) -> None:
    h, w = src.shape
    require_memory(
        detect_bytes((h, w), src.level_mpp, params.tile, len(card.classes) + 40),
        f"{src.name}: detecting cells in {h} x {w} px at {src.level_mpp:.3g} µm/px",
        "draw a region in the Detect dock (its region row) or detect a crop of the slide exported from "
        "QuPath / napari, or use a machine with more memory",
        0.9,
    )


def detect(
    image,
    model,
    card,
    mpp: float | None = None,
    params: DetectParams | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
    level: int | None = None,
    skip_background: bool = True,
) -> CellPoints:
    """Detect cells in an image or a lazy slide.

    Args:
        image: (H, W, 3) numpy/dask array (uint8 RGB or anything ``to_rgb_uint8`` accepts) or a Slide.
        model, card: from ``weights.load_model``.
        mpp: microns per pixel of ``image`` (a Slide's own mpp when None); None and no metadata -> the
            model's mpp is assumed only when ``card.mpp`` is None, else InputError.
        params: decoding / tiling parameters; the card's tuned values by default.
        progress, cancel: ``progress(i, n, msg)`` after each batch of tiles; an Event checked before each.
        name: the input's name in messages.
        level: pyramid level of a Slide to read; default: the level closest to the model's mpp from below.
        skip_background: tiles of bare glass (``tissue.is_background``) are not sent to the network
            (bright-field slides; pass False for dark-background images).

    Returns CellPoints in level-0 pixels of the input, with ``mpp`` = the input's level-0 mpp, and
    ``threshold`` = the score the cells passed: ``params.threshold``, or the image's own under the card's
    adaptive rule (``adaptive.AdaptiveThreshold``; one threshold for the whole image or region). Where
    the card has ``adapt_bn`` and the first pass finds the image far from the training data, where the
    cells are is decided by a model copy with the image's batch-norm statistics
    (``adaptive.BatchNormAdaptation``); their classes, probabilities and features stay ``model``'s.
    """
    params = params or DetectParams.from_card(card)
    src = resolve_input(image, card, mpp, level, name)
    _check_memory(src, params, card)
    tile_in = max(16, int(round(params.tile / src.scale)))
    overlap_in = min(tile_in - 8, max(0, int(round(params.overlap / src.scale))))
    tiles = plan_tiles(src.shape, tile_in, overlap_in)
    h_factor = image_factor(src.array, params.stain_reference, image, src.level)
    prepare = _TileInput(card, src.name, src.scale, h_factor, skip_background)
    glass = glass_tiles(image, src.level, skip_background)
    rule, bn = build_adaptive(params.adaptive), build_bn_adaptation(params.adapt_bn)
    floor = params if rule is None else replace(params, threshold=min(params.threshold, rule.lowest))
    owned = _Owned(card, floor, tiles, tile_in)

    def cells(adapted=None, steps=progress) -> CellPoints:
        fn = DetectorPredictor(model, params.tta, objectness_from=adapted)
        feed = TileFeed(fn.batch_size, glass, True, prepare)
        parts = [owned(t, maps) for t, maps in map_tiles(src.array, tiles, fn, feed, steps, cancel)]
        dim = model.cfg.feature_dim
        return CellPoints.concat(parts) if parts else CellPoints.empty(card.classes, dim, mpp=card.mpp)

    pts = cells()
    if bn is not None and rule is not None and rule.unsure(pts.scores, params.threshold) > bn.above:
        tissue = owned.holding(tiles, pts.yx)
        stats = tissue[:: max(1, -(-len(tissue) // bn.max_tiles))]  # at most max_tiles, spread over the cells

        def run(m):
            feed = TileFeed(1, glass, True, prepare)
            again = _relabelled(progress, "adapting the model to this image: ")
            for _ in map_tiles(src.array, stats, DetectorPredictor(m), feed, again, cancel):
                pass

        adapted = bn_adapted(model, run, bn.mix)
        if adapted is not None:
            pts = cells(adapted, _relabelled(progress, "detecting again, adapted: "))
            pts.adapted = True
    threshold = float(params.threshold) if rule is None else rule.threshold(pts.scores, params.threshold)
    if rule is not None:  # peaks above the image's threshold: those decoding at it would have found
        pts = pts.select(pts.scores > threshold)
    pts = dedupe(pts, params.min_distance_um / src.level_mpp)
    pts.threshold = threshold
    pts.yx = (pts.yx + 0.5) * src.downsample - 0.5
    pts.mpp, pts.source = src.mpp, card.name
    pts.colors = card.colors or class_colors(card.classes)
    return pts
