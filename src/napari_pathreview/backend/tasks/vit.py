"""The vision transformer classifier: the classifier's data, options and evaluation with ``arch="vit"``."""

from __future__ import annotations

from .base import EvalRun, Task, TrainRun, register
from .classifier import ClassifierEvalOptions, ClassifierTrainOptions, evaluate_task, train_arch


def train(run: TrainRun, o: ClassifierTrainOptions) -> dict:
    return train_arch(run, o, "vit")


def evaluate(run: EvalRun, o: ClassifierEvalOptions) -> dict:
    return evaluate_task(run, o, "vit")


register(
    Task(
        name="vit",
        summary="image-region classes, a vision transformer (labels dataset: images/ + labels.csv)",
        builder="napari_pathreview.backend.models.vit:build_vit",
        train=f"{__name__}:train",
        train_options=ClassifierTrainOptions,
        evaluate=f"{__name__}:evaluate",
        eval_options=ClassifierEvalOptions,
        describe="napari_pathreview.backend.tasks.classifier:describe",
    )
)
