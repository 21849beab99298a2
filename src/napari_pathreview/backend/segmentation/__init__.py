"""Nucleus / tissue segmentation: tiled inference on images and lazy slides, training, evaluation.

One module per job:

- :mod:`.data`: masks datasets (``images/`` + ``masks/`` + ``splits.csv``) as :class:`MaskSample`;
- :mod:`.params`: the card's :class:`SegmentParams`, a run's :class:`SegmentSettings`, the result;
- :mod:`.predict`: the network(s) as a ``tiling`` predict function (:class:`SegmenterPredictor`);
- :mod:`.infer`: :func:`segment` in memory, and the input / tiling resolution every run shares;
- :mod:`.instances`: maps -> instances (marker-controlled watershed) and the instance table;
- :mod:`.bands`, :mod:`.plan`, :mod:`.zarr`: :func:`segment_to_zarr`, slides streamed band by band and
  strip by strip into an OME-Zarr labels store, resumable, working only where the coarse level shows
  tissue;
- :mod:`.tiles`, :mod:`.train`: the multi-scale training tiles, their augmentation and loss, and
  :func:`train_segmenter`;
- :mod:`.evaluate`: scores against masks, the post-processing grid search, :func:`evaluate_segmenter`;

Maps: the network's foreground probability (and, for several classes, per-class probabilities) and a
normalised distance map are blended over overlapping tiles (``tiling.predict_tiled``); instances are
then split by a marker-controlled watershed (markers: connected parts of ``distance > marker_threshold``
inside the foreground). Over slides, :func:`segment_to_zarr` streams the same maps band by band
(``tiling.predict_tiled_to_zarr``) into an instance labeller that keeps ``halo`` rows of context, so
memory is bounded by a band of rows whatever the slide height.
"""

from .bands import BandLabeller, Strip, strip_plan
from .data import MASK_KINDS, MONUSEG_MPP, MaskSample, distance_target, load_masks_dataset, read_splits_csv
from .evaluate import evaluate_segmenter, score_samples, tune_params
from .infer import (
    LevelInput,
    SegmentJob,
    _tiling,
    check_fits_in_memory,
    in_memory_bytes,
    predict_maps,
    prepare_job,
    resolve_input,
    segment,
)
from .instances import instance_table, label_instances, postprocess_maps, read_table_csv, write_table_csv
from .params import SegmentationResult, SegmentParams, SegmentSettings, apply_options
from .predict import SegmenterPredictor, check_ensemble, make_predict_fn, n_fg_channels
from .tiles import MultiScaleTiles, augment_item, lovasz_hinge, segmenter_loss
from .train import MODEL_MPP, SegmenterTrainOptions, train_segmenter
from .zarr import INCOMPLETE_MARKER, ResumeCheckpoint, ZarrTarget, segment_to_zarr

__all__ = [
    "INCOMPLETE_MARKER",
    "MASK_KINDS",
    "MODEL_MPP",
    "MONUSEG_MPP",
    "BandLabeller",
    "LevelInput",
    "MaskSample",
    "MultiScaleTiles",
    "ResumeCheckpoint",
    "SegmentJob",
    "SegmentSettings",
    "SegmentParams",
    "SegmentationResult",
    "SegmenterPredictor",
    "SegmenterTrainOptions",
    "Strip",
    "ZarrTarget",
    "_tiling",
    "apply_options",
    "augment_item",
    "check_ensemble",
    "check_fits_in_memory",
    "distance_target",
    "evaluate_segmenter",
    "in_memory_bytes",
    "instance_table",
    "label_instances",
    "load_masks_dataset",
    "lovasz_hinge",
    "make_predict_fn",
    "n_fg_channels",
    "postprocess_maps",
    "predict_maps",
    "prepare_job",
    "read_splits_csv",
    "read_table_csv",
    "resolve_input",
    "score_samples",
    "segment",
    "segment_to_zarr",
    "segmenter_loss",
    "strip_plan",
    "train_segmenter",
    "tune_params",
    "write_table_csv",
]
