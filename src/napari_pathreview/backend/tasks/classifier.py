"""The image classifier (``arch`` cnn): a ResNet-like network grading image regions (``backend.classification``).

``vit`` (``tasks.vit``) trains and evaluates through the same functions with ``arch="vit"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import EvalRun, Task, TrainRun, option, register
from .common import FitOptions, trained


@dataclass
class ClassifierTrainOptions(FitOptions):
    loss: str = option("ce", "ce, focal, f1, lovasz joined by '+' (f1: multi-label)")
    se: bool = option(False, "squeeze-and-excitation blocks")
    arcface: bool = option(False, "ArcFace (angular margin) head")
    dual: bool = option(False, "auto-encoder decoder, reconstruction MSE x10")


@dataclass
class ClassifierEvalOptions:
    faithfulness: bool = option(True, "skip the deletion curves", flag="--no-faithfulness")
    limit: int | None = option(None, "first N images of the split only", parse=int)


def train_arch(run: TrainRun, o: ClassifierTrainOptions, arch: str) -> dict:
    """Train a classifier of ``arch`` ("cnn" or "vit") with the options of ``pathreview train classifier``."""
    from ..classification import train_classifier

    _, card = train_classifier(
        run.data,
        run.out,
        arch=arch,
        epochs=o.epochs,
        seed=run.seed,
        device=run.device,
        progress=run.progress,
        command=run.command,
        checkpoints=o.checkpoints,
        loss=o.loss,
        se=o.se,
        decoder=o.dual,
        head="arcface" if o.arcface else "linear",
        init=o.init,
        data_mpp=run.mpp,
        on_epoch=run.on_epoch,
    )
    return trained(run.out, card, ("params", "metrics"))


def evaluate_task(run: EvalRun, o: ClassifierEvalOptions, task: str) -> dict:
    from ..classifier_eval import evaluate_classifier

    return evaluate_classifier(
        run.data,
        run.split,
        run.weights,
        device=run.device,
        mpp=run.mpp,
        faithfulness=o.faithfulness,
        limit=o.limit,
        progress=run.progress,
        task=task,
    )


def train(run: TrainRun, o: ClassifierTrainOptions) -> dict:
    return train_arch(run, o, "cnn")


def evaluate(run: EvalRun, o: ClassifierEvalOptions) -> dict:
    return evaluate_task(run, o, "classifier")


def describe(res: dict) -> list[str]:
    auc = res["auc"] if res["auc"] is None else round(res["auc"], 3)
    lines = [
        f"accuracy {res['accuracy']:.3f}  balanced {res['balanced_accuracy']:.3f}  "
        f"AUC {auc}  F1 {res['f1']:.3f}  images {res['n_images']}"
    ]
    for m, f in res.get("faithfulness", {}).items():
        lines.append(f"{m:<12} deletion AUC {f['deletion_auc']:.3f}  random {f['random_deletion_auc']:.3f}")
    return lines


register(
    Task.of_module(
        __name__,
        "classifier",
        "image-region classes, a CNN (labels dataset: images/ + labels.csv)",
        "napari_pathreview.backend.models.classifier:build_classifier",
        ClassifierTrainOptions,
        ClassifierEvalOptions,
    )
)
