"""The nucleus segmenter: a U-Net / FPN giving nucleus masks and instances (``backend.segmentation``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import EvalRun, Task, TrainRun, option, register
from . import parsers
from .common import NetOptions, carry, evaluated, fitted


@dataclass
class SegmenterTrainOptions(NetOptions):
    tile: int = option(
        256,
        "training tile side in pixels; sets the working scale (MoNuSeg: 256 → 0.5 µm/px, 384 → 0.33 µm/px)",
        parse=parsers.train_tile,
    )
    decoder: str = option("unet", "decoder type", choices=("unet", "fpn"))
    aspp: bool = option(True, "no ASPP bottleneck", flag="--no-aspp")
    per_grid: tuple | None = option(
        None,
        "tiles drawn per image and epoch from the whole image, the 2x2 and the 3x3 tiling (default 1,4,4; "
        "0,4,0 trains at the model's scale only)",
        parse=parsers.per_grid,
    )
    pale_nuclei: float = option(
        0.0,
        "probability per tile of lightening the stain inside its nuclei, rims kept (as vesicular nuclei "
        "look), e.g. 0.3",
        parse=parsers.pale_nuclei,
    )
    lovasz: bool = option(False, "add the Lovász hinge loss")


@dataclass
class SegmenterEvalOptions:
    tta: bool = option(False, "average the 4 flips (test-time augmentation)")


def train(run: TrainRun, o: SegmenterTrainOptions) -> dict:
    from ..segmentation import SegmenterTrainOptions as Knobs
    from ..segmentation import train_segmenter

    knobs = carry(o, Knobs, {"pale_nuclei": "pale"})  # per_grid / lr None: the numerics' defaults
    return fitted(train_segmenter, run, knobs, seed=run.seed, data_mpp=run.mpp)


def evaluate(run: EvalRun, o: SegmenterEvalOptions) -> dict:
    from ..segmentation import evaluate_segmenter

    return evaluated(evaluate_segmenter, run, mpp=run.mpp, tta=o.tta)


def describe(res: dict) -> list[str]:
    lines = []
    for r in res["per_image"]:
        inst = "" if r["aji"] is None else f"  AJI {r['aji']:.3f}  PQ {r['pq']:.3f}"
        lines.append(f"{r['image']:<28} Dice {r['dice']:.3f}{inst}")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    lines.append(f"Dice {fmt(res['dice'])}  AJI {fmt(res['aji'])}  PQ {fmt(res['pq'])}  images {res['n_images']}")
    return lines


register(
    Task.of_module(
        __name__,
        "segmenter",
        "nucleus masks and instances (masks dataset: images/ + masks/ + splits.csv)",
        "napari_pathreview.backend.models.segmenter:build_segmenter",
        SegmenterTrainOptions,
        SegmenterEvalOptions,
    )
)
