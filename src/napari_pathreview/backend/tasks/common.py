"""What several tasks share: the options every network task trains with, the numerics' options filled
from them, a training and an evaluation called with what every run gives it, the JSON line a training run prints, and
the points table of the detector and the enhancer."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from ..registry import EvalRun, TrainRun, option
from . import parsers


@dataclass
class FitOptions:
    """Options of every task trained with ``backend.train.fit`` from a card (``--init``)."""

    epochs: int = option(30, "passes over the training images", parse=int)
    init: str | None = option(None, "weights to fine-tune from (name or path)")
    checkpoints: bool = option(False, "write best-so-far weights to OUT.checkpoint.*")


def carry(options, target_cls, rename: dict | None = None, **extra):
    """The numerics' options dataclass ``target_cls`` filled from a task's command-line ``options``: every
    field both have (``rename``: ``{our name: theirs}``) whose value is not None (None keeps the
    numerics' default), then ``extra``."""
    rename = rename or {}
    theirs = set(target_cls.__dataclass_fields__)
    values = {rename.get(f.name, f.name): getattr(options, f.name) for f in fields(options)}
    values = {k: v for k, v in values.items() if k in theirs and v is not None}
    return target_cls(**{**values, **extra})


def fitted(train_fn, run: TrainRun, options, keys: tuple = ("params", "metrics"), **keywords) -> dict:
    """``train_fn(run.data, run.out, options, device=, progress=, cancel=, command=, on_epoch=`` the
    run's ``, **keywords)``: a numerics' training entry point (data, output, options first) called with
    what every training run gives it; returns the JSON line of :func:`trained` with the card's ``keys``."""
    _, card = train_fn(
        run.data,
        run.out,
        options,
        device=run.device,
        progress=run.progress,
        cancel=run.cancel,
        command=run.command,
        on_epoch=run.on_epoch,
        **keywords,
    )
    return trained(run.out, card, keys)


def evaluated(evaluate_fn, run: EvalRun, *args, **keywords) -> dict:
    """``evaluate_fn(run.data, run.split, run.weights, *args, device=run.device, progress=run.progress,
    **keywords)``: a numerics' evaluation entry point (dataset folder, split, weights first) called with
    what every evaluation run gives it."""
    return evaluate_fn(run.data, run.split, run.weights, *args, device=run.device, progress=run.progress, **keywords)


def trained(out, card, keys: tuple) -> dict:
    """The JSON line ``pathreview train`` prints: the weights path, the card's ``keys`` (``params``,
    ``metrics``), the best epoch and the seconds it took."""
    return {
        "out": str(Path(out).with_suffix(".safetensors")),
        **{k: getattr(card, k) for k in keys},
        "best_epoch": card.training["best_epoch"],
        "seconds": card.training["seconds"],
    }


def points_table(res: dict) -> list[str]:
    """A cell-points evaluation (``evaluate_detector``'s dict) as lines: detection, per class, means."""
    d = res["detection"]
    lines = [f"detection  P {d['precision']:.3f}  R {d['recall']:.3f}  F1 {d['f1']:.3f}"]
    for name, c in res["classes"].items():
        lines.append(f"{name:<14} P {c['precision']:.3f}  R {c['recall']:.3f}  F1 {c['f1']:.3f}  n={c['support']}")
    lines.append(f"mF1 {res['mF1']:.3f}  weighted F1 {res['weighted_f1']:.3f}  images {res['n_images']}")
    return lines


@dataclass
class NetOptions(FitOptions):
    """Options of the fully convolutional networks (detector, segmenter) on top of :class:`FitOptions`."""

    lr: float | None = option(None, "learning rate (default 2e-3; ~10x less to fine-tune)", parse=float)
    ema: float = option(
        0.0,
        "validate and keep a moving average of the weights with this per-step decay (e.g. 0.99; 0: the raw weights)",
        parse=float,
    )
    amp: bool = option(False, "bfloat16 autocast in training (fast on CPUs with AMX and on GPUs)")
    widths: tuple | None = option(
        None, "from scratch: encoder channels per level, e.g. 32,64,128,256", parse=parsers.widths
    )
    stain_norm: bool | None = option(
        None,
        "scale every image's hematoxylin to the training images' median level, in training and (recorded "
        "in the card) at inference (default: as --init does; off)",
        negatable=True,
    )
