"""The cell detector: a U-Net-like network giving cell centres and classes (``backend.detection``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import EvalRun, Task, TrainRun, option, register
from . import parsers
from .common import NetOptions, carry, evaluated, points_table, trained


@dataclass
class DetectorTrainOptions(NetOptions):
    # None: the recipe decides (training: 30 epochs, 4 crops, fp32; a few-shot fine-tune of --init on a
    # field: 4 epochs, 64 crops per image and epoch, bf16; see backend/detection/few_shot.py)
    epochs: int | None = option(
        None, "passes over the training images (default 30; a few-shot fine-tune from --init: 4)", parse=int
    )
    amp: bool | None = option(
        None,
        "bfloat16 autocast in training (default: off; on for a few-shot fine-tune from --init)",
        negatable=True,
    )
    tile: int = option(256, "side of the training crops in pixels, at the model's scale", parse=parsers.train_tile)
    target_sigma_um: float | None = option(
        None, "sigma of the Gaussian cell-centre target in µm (default: --init's, else 2 model pixels)", parse=float
    )
    target_crowding: float | None = option(
        None,
        "cap each cell's target sigma at this fraction of the distance to its nearest annotated neighbour, "
        "e.g. 0.4 (default: --init's, else off)",
        parse=float,
    )
    obj_loss: str | None = option(
        None,
        "objectness loss, BCE against the Gaussian targets or CenterNet's focal loss (default: --init's, else bce)",
        choices=("bce", "focal"),
    )
    crops_per_image: int | None = option(
        None,
        "training crops drawn per image and epoch (default 4; a few-shot fine-tune: enough for 8 steps)",
        parse=parsers.count,
    )
    scale_jitter: float = option(
        0.0,
        "read each training crop at a random zoom, up to J either way (e.g. 0.15: nuclei 0.85-1.15x their "
        "size at the model's mpp)",
        parse=parsers.scale_jitter,
        metavar="J",
    )
    stain_jitter: float = option(
        0.05,
        "stain augmentation in optical density: each crop's hematoxylin and eosin densities scaled by 1 +- S "
        "(e.g. 0.2 for other labs' stains)",
        parse=float,
        metavar="S",
    )
    blur: float = option(
        0.0,
        "blur half the training crops by a Gaussian of sigma 0 to S pixels (e.g. 1.5; 0: off)",
        parse=float,
        metavar="S",
    )
    jpeg_quality: int = option(
        0,
        "re-compress half the training crops as JPEG at a quality from Q to 90 (e.g. 30; 0: off)",
        parse=int,
        metavar="Q",
    )
    extra_points: str | None = option(
        None,
        "a points dataset folder (with a dataset.json giving its mpp) whose train images are also fitted, for "
        "detection only (their cells' classes are ignored), e.g. from scripts/monuseg_points.py",
        metavar="DIR",
    )
    deepen: int | None = option(
        None,
        "add a coarser level of CHANNELS to --init before fine-tuning (twice the context; the same outputs "
        "until trained)",
        parse=parsers.count,
        metavar="CHANNELS",
    )


@dataclass
class DetectorEvalOptions:
    radius_um: float = option(3.3, "match radius in microns (3.3 = 6 px at 0.55)", parse=float)
    tta: bool = option(False, "average the 8 rotations / flips of each tile (test-time augmentation)")


def train(run: TrainRun, o: DetectorTrainOptions) -> dict:
    from ..detection import DetectorTrainOptions as Knobs
    from ..detection import train_detector

    knobs = carry(o, Knobs, {"tile": "crop"}, seed=run.seed, device=run.device)
    if run.mpp is not None:
        knobs.mpp = run.mpp
    _, card = train_detector(
        run.data, run.out, knobs, progress=run.progress, cancel=run.cancel, on_epoch=run.on_epoch, command=run.command
    )
    return trained(run.out, card, ("params",))


def evaluate(run: EvalRun, o: DetectorEvalOptions) -> dict:
    from ..detection import evaluate_detector

    return evaluated(evaluate_detector, run, radius_um=o.radius_um, mpp=run.mpp, tta=o.tta)


def describe(res: dict) -> list[str]:
    return points_table(res)


register(
    Task.of_module(
        __name__,
        "detector",
        "cell centres and classes (points dataset: images/ + points.csv)",
        "napari_pathreview.backend.models.detector:build_detector",
        DetectorTrainOptions,
        DetectorEvalOptions,
    )
)
