"""The image classifier (``arch`` cnn): a ResNet-like network grading image regions (``backend.classification``).

``vit`` (``tasks.vit``) trains and evaluates through the same functions with ``arch="vit"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import EvalRun, Task, TrainRun, option, register
from .common import FitOptions, carry, evaluated, fitted


@dataclass
class ClassifierTrainOptions(FitOptions):
    loss: str = option("ce", "ce, focal, f1, lovasz joined by '+' (f1: multi-label)")
    se: bool = option(False, "squeeze-and-excitation blocks")
    arcface: bool = option(False, "ArcFace (angular margin) head")
    dual: bool = option(False, "auto-encoder decoder, reconstruction MSE x10")
    stain_jitter: float = option(0.08, "HED stain jitter of the crops: OD scale ±S, shift ±3/8 S", parse=float)
    stem: str = option("patch", "ViT patch embedding", choices=("patch", "conv"))
    distill: str | None = option(None, "classifier (name or path) whose probabilities are soft targets")
    distill_weight: float = option(0.5, "weight of the distillation term (0-1)", parse=float)
    tune_shift: float = option(0.0, "also pick thresholds on stain-shifted tune images (strength S)", parse=float)
    threshold_folds: int = option(0, "pick thresholds on out-of-fold probabilities of K fold models", parse=int)


@dataclass
class ClassifierEvalOptions:
    faithfulness: bool = option(True, "skip the deletion curves", flag="--no-faithfulness")
    limit: int | None = option(None, "first N images of the split only", parse=int)
    stain_shift: float | None = option(
        None, "shift each image's H/E optical densities by ±S (fixed per image): a later-batch proxy", parse=float
    )


def train_arch(run: TrainRun, o: ClassifierTrainOptions, arch: str) -> dict:
    """Train a classifier of ``arch`` ("cnn" or "vit") with the options of ``pathreview train classifier``."""
    from ..classification import ClassifierTrainOptions as Knobs
    from ..classification import train_classifier

    head = "arcface" if o.arcface else "linear"
    knobs = carry(o, Knobs, {"dual": "decoder"}, arch=arch, head=head, seed=run.seed, data_mpp=run.mpp)
    return fitted(train_classifier, run, knobs)


def evaluate_task(run: EvalRun, o: ClassifierEvalOptions, task: str) -> dict:
    """Score a classifier of ``task`` ("classifier" or "vit") with the options of ``pathreview evaluate``."""
    from ..classification import ClassifierEvalOptions as Knobs
    from ..classifier_eval import evaluate_classifier

    return evaluated(evaluate_classifier, run, carry(o, Knobs, mpp=run.mpp), task=task)


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
