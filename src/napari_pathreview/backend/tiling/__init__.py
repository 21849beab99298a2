"""Tiled inference: tile plans (:mod:`.plan`), overlap-blending (:mod:`.blend`), out-of-memory batch
halving (:mod:`.oom`) and the one tile driver with the blended predictions built on it (:mod:`.driver`).

Images are channel-last ``(H, W, C)`` (or ``(H, W)``), numpy or dask; predictions channel-first
``(C, h, w)`` float32; coordinates and sizes in image pixels. Every tiled model run goes through
:func:`map_tiles`: segmentation and enhancement blend its predictions (:func:`predict_tiled`,
:func:`predict_tiled_to_zarr`), detection decodes each tile's maps into cells.
"""

from .blend import WEIGHT_FLOOR, BandBlender, BandWrite, Stitcher, TileSpec, blend_window
from .driver import TileFeed, map_tiles, predict_tiled, predict_tiled_to_zarr
from .oom import OomSplitter, PredictFn, free_accelerator_memory, is_out_of_memory
from .plan import GlassFn, Tile, axis_starts, iter_tiles, pad_to, plan_tiles, read_tile

__all__ = [
    "WEIGHT_FLOOR",
    "BandBlender",
    "BandWrite",
    "GlassFn",
    "OomSplitter",
    "PredictFn",
    "Stitcher",
    "Tile",
    "TileFeed",
    "TileSpec",
    "axis_starts",
    "blend_window",
    "free_accelerator_memory",
    "is_out_of_memory",
    "iter_tiles",
    "map_tiles",
    "pad_to",
    "plan_tiles",
    "predict_tiled",
    "predict_tiled_to_zarr",
    "read_tile",
]
