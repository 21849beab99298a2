"""Cell detection: the detector's maps and their decoding (``maps``), inference over images and slides
of any size and scale (``infer``), training batches (``data``), training (``train``) and evaluation
(``evaluate``).

Pixels vs microns: a model works at its card's ``mpp``; inputs at another mpp are resampled per tile,
and points come back in the input's pixels. Distances users give (min distance, match radius) are µm.
"""

from ..points import point_targets
from .data import CRCHISTO_MPP, _crop_batches, _to_tensors
from .evaluate import evaluate_detector, score_points, tune_params
from .infer import detect
from .maps import DetectParams, decode, dedupe, normalise, predict_maps, smooth_objectness, stain_normalised
from .train import DetectorTrainOptions, _deepened, detector_loss, train_detector

__all__ = [
    "CRCHISTO_MPP",
    "DetectParams",
    "DetectorTrainOptions",
    "_crop_batches",
    "_deepened",
    "_to_tensors",
    "decode",
    "dedupe",
    "detect",
    "detector_loss",
    "evaluate_detector",
    "normalise",
    "point_targets",
    "predict_maps",
    "score_points",
    "smooth_objectness",
    "stain_normalised",
    "train_detector",
    "tune_params",
]
