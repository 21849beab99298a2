"""The vision transformer classifier: the classifier's data, options and evaluation with ``arch="vit"``."""

from __future__ import annotations

from ..registry import EvalRun, Task, TrainRun, register
from .classifier import ClassifierEvalOptions, ClassifierTrainOptions, evaluate_task, train_arch


def train(run: TrainRun, o: ClassifierTrainOptions) -> dict:
    return train_arch(run, o, "vit")


def evaluate(run: EvalRun, o: ClassifierEvalOptions) -> dict:
    return evaluate_task(run, o, "vit")


register(
    Task.of_module(
        __name__,
        "vit",
        "image-region classes, a vision transformer (labels dataset: images/ + labels.csv)",
        "napari_pathreview.backend.models.vit:build_vit",
        ClassifierTrainOptions,
        ClassifierEvalOptions,
        describe="napari_pathreview.backend.tasks.classifier:describe",
    )
)
