"""Segmenting an image (or one level of a slide) in memory, and what every segmentation run resolves
first: the level read, its scale, the tile plan and the predict function (:func:`prepare_job`).

Pixels vs microns: a model works at its card's ``mpp``; each tile is resampled to it inside the
prediction function and the probabilities are resampled back, so results come out at the pixels of
the input (or of the pyramid level read). Areas users give are µm².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, ProgressFn, check_cancel
from ..memory import require_memory
from ..modelio import LevelInput, resolve_input
from ..stain import image_factor
from ..tiling import TileSpec, predict_tiled
from ..tissue import glass_tiles
from .instances import instance_table, postprocess_maps
from .params import SegmentationResult, SegmentParams, SegmentSettings, apply_options
from .predict import SegmenterPredictor, check_ensemble, n_fg_channels


def _tiling(params: SegmentParams, scale: float, shape) -> tuple[int, int]:
    """Input-pixel tile and overlap for model-pixel ``params.tile`` / ``params.overlap``."""
    if params.tile < 32:
        raise InputError(f"tile {params.tile} is too small: use at least 32 model pixels")
    if not 0 <= params.overlap < params.tile / 2:
        raise InputError(f"overlap {params.overlap} must be >= 0 and under half the tile ({params.tile})")
    tile_in = max(16, int(round(params.tile / scale)))
    overlap_in = min(tile_in // 2, max(0, int(round(params.overlap / scale))))
    return tile_in, overlap_in


@dataclass
class SegmentJob:
    """A segmentation run resolved before its first tile: the models and cards (an ensemble shares the
    first card's classes and scale), the params after the options' overrides, the level read, the
    input-pixel tile plan (``spec``) and the predict function."""

    models: list
    cards: list
    params: SegmentParams
    options: SegmentSettings
    src: LevelInput
    spec: TileSpec
    predict: SegmenterPredictor

    @property
    def n_fg(self) -> int:
        return n_fg_channels(self.cards[0])

    def glass(self):
        """The ``tiling`` glass predicate of the level read (None when not a Slide or not skipping)."""
        return glass_tiles(self.src.image, self.src.level, self.options.skip_background)


def prepare_job(image, model, card, mpp, params: SegmentParams | None, options: SegmentSettings, cancel) -> SegmentJob:
    """Check the ensemble, apply the options to ``params`` (the card's when None), resolve the level
    read and build the predict function (``cancel`` is checked before every network pass)."""
    models, cards = check_ensemble(model, card)
    c0 = cards[0]
    params = apply_options(params or SegmentParams.from_card(c0), options)
    src = resolve_input(image, c0, mpp, options.level, options.name)
    scale = src.scale
    tile_in, overlap_in = _tiling(params, scale, src.shape)
    fn = SegmenterPredictor(
        models,
        cards,
        scale,
        tta=params.tta,
        ensemble=options.ensemble,
        skip_background=options.skip_background,
        compile=options.compile,
        h_factor=image_factor(src.array, params.stain_reference, image, src.level),
        cancel=cancel,
    )
    spec = TileSpec(tile_in, overlap_in, batch_size=fn.batch_size)
    return SegmentJob(models, cards, params, options, src, spec, fn)


def segment(
    image,
    model,
    card,
    mpp: float | None = None,
    params: SegmentParams | None = None,
    options: SegmentSettings | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel=None,
) -> SegmentationResult:
    """Segment an image (or one level of a slide) in memory: overlapping tiles, blended, watershed.

    Args:
        image: (H, W, 3) array (uint8 RGB or anything ``to_rgb_uint8`` takes) or a Slide.
        model, card: from ``weights.load_model``; or lists of them (an ensemble, see
            ``SegmentSettings.ensemble``).
        mpp: µm per pixel of ``image`` (a Slide's own when None; for arrays the model's is assumed).
        params: post-processing / tiling (the card's tuned values by default).
        options: overrides of ``params`` (tile, overlap, tta, stain_norm), the pyramid level, the
            ensemble rule, glass skipping, ``torch.compile``, the input's name (:class:`SegmentSettings`).
        progress, cancel: ``progress(i, n, msg)`` after each batch of tiles; an Event checked before
            every network pass.

    Returns a :class:`SegmentationResult` at the pixels of the level read.
    """
    job = prepare_job(image, model, card, mpp, params, options or SegmentSettings(), cancel)
    src, fn = job.src, job.predict
    check_fits_in_memory(src.shape, fn.out_channels, src.name)
    maps = predict_tiled(src.array, fn, job.spec, fn.out_channels, glass=job.glass(), progress=progress, cancel=cancel)
    check_cancel(cancel)
    prob, dist, labels, semantic, grey = postprocess_maps(maps, job.n_fg, job.params, src.level_mpp)
    table = instance_table(labels, grey, src.mpp, downsample=src.downsample)
    return SegmentationResult(
        labels,
        prob,
        dist,
        list(job.cards[0].classes),
        src.mpp,
        table,
        semantic,
        src.level,
        src.downsample,
        "+".join(c.name for c in job.cards),
        job.params.__dict__.copy(),
    )


def in_memory_bytes(shape_yx, channels: int) -> int:
    """Bytes the in-memory ``segment`` holds for an (H, W) level: the RGB level (uint8), the blended maps
    and their weights (float32, ``channels + 1``), probability / distance / grey maps (float32) and the
    labels (int32) at once."""
    h, w = (int(s) for s in shape_yx)
    return h * w * (3 + 4 * (channels + 1) + 4 * 3 + 4)


def check_fits_in_memory(shape_yx, channels: int, name: str, fraction: float = 0.7) -> None:
    """Refuse, before any work, an in-memory segmentation that would need more than ``fraction`` of the
    available memory; the tile-by-tile zarr path (``segment_to_zarr``) has bounded memory instead."""
    require_memory(
        in_memory_bytes(shape_yx, channels),
        f"{name}: segmenting {shape_yx[0]} x {shape_yx[1]} px in memory",
        "write to an OME-Zarr instead (`pathreview segment INPUT --out OUT.zarr`, bounded memory; the Segment "
        "dock does this for pyramids) or segment a region (the dock's region row)",
        fraction,
    )


def predict_maps(model, card, image: np.ndarray, mpp: float, params: SegmentParams | None = None) -> np.ndarray:
    """Blended maps (K + 2, H, W) of one in-memory image at ``mpp`` (one tile when it fits), with
    ``params``' tta, tile, overlap and stain reference (default: :class:`SegmentParams`' defaults)."""
    p = params or SegmentParams()
    scale = mpp / card.mpp
    fn = SegmenterPredictor([model], [card], scale, p.tta, h_factor=image_factor(image, p.stain_reference))
    t_in = max(16, int(round(p.tile / scale)))
    spec = TileSpec(t_in, min(t_in // 2, int(round(p.overlap / scale))))
    return predict_tiled(image, fn, spec, fn.out_channels)
