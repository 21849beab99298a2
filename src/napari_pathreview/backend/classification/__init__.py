"""Image classification: labels.csv data, model-scale input, tiled + TTA prediction, metrics, training.

Pixels vs microns: a classifier works at its card's ``mpp`` (see :mod:`.model_input`). Modules:
:mod:`.data` (labels.csv split, label matrix), :mod:`.model_input` (scale, tiles, normalisation,
probabilities, decisions, stain shift), :mod:`.metrics` (scores, threshold search), :mod:`.loading`
(which models are classifiers), :mod:`.options`, :mod:`.train` and :mod:`.folds` (thresholds from
out-of-fold probabilities). Evaluation, which also scores the explanations' faithfulness, is ``backend.classifier_eval`` (it sits above ``backend.explain``, which sits above this).
"""

from .data import GLAS_MPP, LabelledImage, load_split, read_labels_csv, targets_of
from .loading import CLASSIFIER_TASKS, classifier_task, load_classifier
from .metrics import binary_auc, classification_metrics, search_thresholds
from .model_input import (
    decide,
    input_mpp,
    model_tiles,
    normalise,
    pad_for_model,
    predict_probs,
    probabilities,
    stain_shifted,
    tile_side,
    to_model_scale,
)
from .options import ClassifierEvalOptions, ClassifierTrainOptions
from .train import classifier_loss, train_classifier

__all__ = [
    "CLASSIFIER_TASKS",
    "GLAS_MPP",
    "ClassifierEvalOptions",
    "ClassifierTrainOptions",
    "LabelledImage",
    "binary_auc",
    "classification_metrics",
    "classifier_loss",
    "classifier_task",
    "decide",
    "input_mpp",
    "load_classifier",
    "load_split",
    "model_tiles",
    "normalise",
    "pad_for_model",
    "predict_probs",
    "probabilities",
    "read_labels_csv",
    "search_thresholds",
    "stain_shifted",
    "targets_of",
    "tile_side",
    "to_model_scale",
    "train_classifier",
]
