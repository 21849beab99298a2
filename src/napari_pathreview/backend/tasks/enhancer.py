"""The enhancer: a transformer over the detector's cells that corrects their classes (``backend.enhancement``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import EvalRun, Task, TrainRun, option, register
from .common import carry, points_table, trained


@dataclass
class EnhancerTrainOptions:
    epochs: int = option(30, "passes over the training images", parse=int)
    init: str | None = option(None, "weights to fine-tune from (name or path)")
    lr: float | None = option(None, "learning rate (default 1e-3)", parse=float)
    detector: str | None = option(None, "detector whose cells it corrects (default: shipped)")
    mode: str = option(
        "class",
        "class-only CE on pre-matched cells, or bipartite loss matched in the loop",
        choices=("class", "bipartite"),
    )
    matching: str = option("hungarian", "matching of predicted to annotated cells", choices=("hungarian", "greedy"))
    aux_loss: bool = option(False, "auxiliary loss after every layer")
    schedule: str = option("cosine", "learning-rate schedule", choices=("cosine", "step", "cosine-restarts"))
    position: str = option("relative", "position encoding", choices=("relative", "sinusoidal", "both", "none"))
    mask_um: float = option(70.0, "attention radius in µm (0: no mask)", parse=float)
    tune_bias: bool = option(False, "per-class logit offsets searched on the held-out tune images")


@dataclass
class EnhancerEvalOptions:
    detector: str | None = option(None, "detector (default: the one its card names)")
    radius_um: float = option(3.3, "match radius in microns (3.3 = 6 px at 0.55)", parse=float)
    tta: bool = option(False, "average the 8 rotations / flips of each detector tile (test-time augmentation)")
    ablation: bool = option(False, "also train and score position-encoding / mask variants (minutes)")
    ablation_epochs: int = option(15, "epochs per ablation variant", parse=int)


def train(run: TrainRun, o: EnhancerTrainOptions) -> dict:
    from ..enhancement import EnhancerTrainOptions as LoopOptions
    from ..enhancement import EnhancerTrainSetup, train_enhancer

    opt = carry(o, LoopOptions)  # epochs, lr, mode, matching, aux_loss, schedule, tune_bias
    config = {"position": o.position, "radius_um": None if o.mask_um <= 0 else o.mask_um}
    setup = EnhancerTrainSetup(
        detector=o.detector, init=o.init, config=config, mpp=run.mpp, seed=run.seed, device=run.device
    )
    _, card = train_enhancer(
        run.data,
        run.out,
        opt,
        setup,
        progress=run.progress,
        cancel=run.cancel,
        command=run.command,
        on_epoch=run.on_epoch,
    )
    return trained(run.out, card, ("metrics",))


def evaluate(run: EvalRun, o: EnhancerEvalOptions) -> dict:
    from ..enhancement import EnhancerEvalOptions as Knobs
    from ..enhancement import evaluate_enhancer

    knobs = carry(o, Knobs, mpp=run.mpp, device=run.device)
    return evaluate_enhancer(run.data, run.split, run.weights, knobs, progress=run.progress)


def describe(res: dict) -> list[str]:
    lines = []
    for key in ("base", "enhanced"):
        lines += [f"--- {key}", *points_table(res[key])]
    for v in res.get("ablation", {}).get("variants", []):
        lines.append(f"ablation {v['variant']:<34} mF1 {v['mF1']:.4f}  (tune {v['tune_mF1']:.4f}, {v['seconds']} s)")
    return lines


register(
    Task.of_module(
        __name__,
        "enhancer",
        "cell classes corrected from their neighbours (points dataset; needs a detector)",
        "napari_pathreview.backend.models.enhancer:build_enhancer",
        EnhancerTrainOptions,
        EnhancerEvalOptions,
    )
)
