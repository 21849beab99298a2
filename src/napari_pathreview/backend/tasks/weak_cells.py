"""Weakly supervised cell classes: CAM models trained on image labels give pseudo-labels for a
stage-2 U-Net (``backend.weak``). ``weak-cam`` is the stage-1 model kind, built from cards only."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import EvalRun, Task, TrainRun, option, register
from .common import evaluated


@dataclass
class WeakCellsTrainOptions:
    epochs: int = option(30, "epochs of the CAM models and of the stage-2 U-Net", parse=int)
    cams: str | None = option(
        None,
        "reuse this weak-cells model's stage-1 CAM models and retrain only the pseudo-labels and the stage-2 U-Net",
        metavar="WEAK_CELLS",
    )
    seg_select: str = option(
        "agreement",
        "stage-2 checkpoint rule, agreement with the held-out images' pseudo-labels or the tile-level F1 of "
        "its label maps",
        choices=("agreement", "tile_f1"),
    )


@dataclass
class WeakCellsEvalOptions:
    detector: str | None = option(None, "detector whose cells are classified (default: shipped)")
    limit: int | None = option(None, "first N images of the split only", parse=int)


def train(run: TrainRun, o: WeakCellsTrainOptions) -> dict:
    from ..weak import WeakConfig, train_weak_cells

    cfg = WeakConfig(seed=run.seed, cam_epochs=o.epochs, seg_epochs=o.epochs, seg_select=o.seg_select)
    if run.mpp is not None:  # the models are trained at the data's scale
        cfg.mpp = run.mpp
    return train_weak_cells(
        run.data,
        run.out,
        cfg,
        device=run.device,
        command=run.command,
        cams=o.cams,
        progress=run.progress,
        on_epoch=run.on_epoch,
    )


def evaluate(run: EvalRun, o: WeakCellsEvalOptions) -> dict:
    from ..weak import evaluate_weak_cells

    return evaluated(evaluate_weak_cells, run, detector=o.detector, limit=o.limit)


def describe(res: dict) -> list[str]:
    lines = []
    for key in ("cam", "puzzle_cam", "sc_cam", "cam_ensemble", "two_stage", "supervised"):
        r = res[key]
        per_class = "  ".join(f"{c} {r[c]:.3f}" for c in res["classes"])
        lines.append(f"{key:<13} mF1 {r['mF1']:.3f}  accuracy {r['accuracy']:.3f}  " + per_class)
    return lines


register(
    Task.of_module(
        __name__,
        "weak-cells",
        "cell classes learnt from image-level labels only (points dataset's image classes)",
        "napari_pathreview.backend.models.segmenter:build_segmenter",
        WeakCellsTrainOptions,
        WeakCellsEvalOptions,
    )
)
register(
    Task(
        name="weak-cam",
        summary="weak-cells' stage-1 CAM model (built from cards; trained by 'train weak-cells')",
        builder="napari_pathreview.backend.weak:build_weak_cam",
    )
)
