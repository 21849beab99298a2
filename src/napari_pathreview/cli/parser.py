"""The ``pathreview`` argument parser: one sub-command per job; ``train`` / ``evaluate`` one per task."""

from __future__ import annotations

import argparse
import re

from ..backend.errors import InputError
from .bench import cmd_bench
from .info import cmd_info
from .run import cmd_convert, cmd_demo, cmd_detect, cmd_enhance, cmd_explain, cmd_segment
from .task_args import add_evaluate, add_train


def add_common(sp, mpp=True):
    """--device, and --mpp unless ``mpp`` is False."""
    sp.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps")
    if mpp:
        sp.add_argument(
            "--mpp", type=float, default=None, help="microns per pixel of the input, when the file does not say"
        )


def add_batch(sp, workers_help: str) -> None:
    """--workers and --scheduler: where the inputs of a batch run (``backend.batch.BatchOptions``)."""
    sp.add_argument("--workers", type=int, default=1, help=workers_help)
    sp.add_argument("--scheduler", default=None, help="address of an existing dask.distributed scheduler")


def add_view(sp) -> None:
    """--level and --region: the part of a slide a command reads (detect, segment, enhance, explain)."""
    sp.add_argument(
        "--level",
        type=int,
        default=None,
        help="pyramid level to read, 0 = full resolution (default: the coarsest level at least as fine as "
        "the model's µm/px); results stay in level-0 pixels of the slide",
    )
    sp.add_argument(
        "--region",
        default=None,
        metavar="X,Y,W,H",
        help="only this rectangle, in level-0 pixels (left, top, width, height; pixels only, no µm); results "
        "stay in level-0 pixels of the whole slide (segment: a store placed by a translation)",
    )


def add_run_tail(sp) -> None:
    """--overwrite, --device, --mpp and --precision: what every command that runs a model on files takes."""
    sp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs that pathreview did not write (its own are replaced anyway)",
    )
    add_common(sp)
    add_precision(sp)


def add_precision(sp):
    """--precision of the network (detect, enhance, segment, explain)."""
    sp.add_argument(
        "--precision",
        default=None,
        choices=("fp32", "bf16", "fp16", "auto"),
        help="the network's precision (decoding stays fp32): fp32 (default); bf16 (CPUs with "
        "avx512_bf16/AMX, GPUs); fp16 (GPUs); auto: the fastest the device runs natively and "
        "the model card records as giving fp32's outputs (pathreview bench precision)",
    )


def _add_info(sub) -> None:
    sp = sub.add_parser("info", help="versions, device, registered models and tasks")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_info)


def _add_demo(sub) -> None:
    sp = sub.add_parser("demo", help="the main job on the bundled sample (opens napari, or writes to --out)")
    sp.add_argument("--out", default=None, help="write results and a rendered PNG here instead of opening napari")
    add_common(sp, mpp=False)
    sp.set_defaults(func=cmd_demo)


def _add_enhance(sub) -> None:
    sp = sub.add_parser("enhance", help="detect + correct cell classes with the enhancer; CSV + GeoJSON per input")
    sp.add_argument("inputs", nargs="+")
    sp.add_argument("--out", required=True)
    sp.add_argument("--weights", default=None, help="enhancer name or path (default: shipped)")
    sp.add_argument("--detector", default=None, help="detector (default: the one the enhancer's card names)")
    sp.add_argument(
        "--tta",
        action="store_true",
        help="detect with the 8 rotations / flips of every tile averaged (8x slower detection)",
    )
    add_view(sp)
    add_run_tail(sp)
    sp.set_defaults(func=cmd_enhance)


def _add_explain(sub) -> None:
    sp = sub.add_parser("explain", help="class probabilities + heat maps (CAM, Grad-CAM, LRP, rollout)")
    sp.add_argument("inputs", nargs="+")
    sp.add_argument("--out", required=True, help="folder: NAME.METHOD.CLASS.tif (float map) + .png overlay + .json")
    sp.add_argument("--model", default=None, help="classifier or vit name/path (default: shipped classifier)")
    sp.add_argument(
        "--method",
        default="gradcam",
        choices=("cam", "gradcam", "lrp-epsilon", "lrp-gamma", "lrp-a1b0", "lrp-a2b1", "rollout"),
    )
    sp.add_argument("--classes", default=None, help="comma-separated classes to explain (default: all)")
    add_view(sp)
    add_run_tail(sp)
    sp.set_defaults(func=cmd_explain)


def _add_convert(sub) -> None:
    sp = sub.add_parser("convert", help="convert cell points between QuPath GeoJSON and CSV")
    sp.add_argument("input", help=".geojson (QuPath / pathreview) or .csv/.tsv (pathreview, points dataset, QuPath)")
    sp.add_argument("output", help="OUT.geojson or OUT.csv")
    sp.add_argument("--mpp", type=float, default=None, help="microns per pixel to record (CSV x_um / y_um)")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    sp.set_defaults(func=cmd_convert)


def _add_detect(sub) -> None:
    sp = sub.add_parser("detect", help="detect cells; writes CSV + QuPath GeoJSON per input")
    sp.add_argument("inputs", nargs="+")
    sp.add_argument("--out", required=True)
    sp.add_argument("--weights", default=None)
    sp.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="a fixed minimum score for every input, with no per-image adaptation (default: the model "
        "card's; the shipped detector's is 0.65, adapted per image where many nuclei score below it)",
    )
    sp.add_argument(
        "--tta",
        action="store_true",
        help="average the 8 rotations / flips of every tile (test-time augmentation, 8x slower)",
    )
    add_batch(sp, "run the inputs on a local Dask cluster of N single-threaded workers")
    add_view(sp)
    add_run_tail(sp)
    sp.set_defaults(func=cmd_detect)


def _add_bench(sub) -> None:
    sp = sub.add_parser("bench", help="benchmarks against a reference measured in the same run")
    sp.add_argument("name", help="matching (more: see docs/benchmarks.md)")
    sp.add_argument("--json", action="store_true", help="last stdout line is one JSON object")
    sp.add_argument(
        "--record", action="store_true", help="precision: write the verified precisions into the shipped model cards"
    )
    sp.add_argument(
        "--precision",
        default=None,
        choices=("fp32", "bf16"),
        help="tiling, slide-throughput, enhancer: our side's precision (the reference stays fp32)",
    )
    sp.set_defaults(func=cmd_bench)


def _add_segment(sub) -> None:
    sp = sub.add_parser("segment", help="segment nuclei tile by tile; writes an OME-Zarr labels pyramid")
    sp.add_argument("input", nargs="+", help="image(s) or slide(s) (PNG, JPEG, TIFF, OME-TIFF, SVS, OME-Zarr)")
    sp.add_argument(
        "--out",
        required=True,
        help="output OUT.zarr (OME-Zarr labels + instances.csv); a folder for several inputs "
        "(OUT/NAME.zarr each; reruns skip slides already done)",
    )
    sp.add_argument(
        "--weights", action="append", default=None, help="model name or path (default: shipped); repeat for an ensemble"
    )
    sp.add_argument(
        "--ensemble",
        choices=("mean", "union"),
        default="mean",
        help="how several --weights combine: mean of probabilities, or union",
    )
    sp.add_argument("--tile", type=int, default=None, help="tile side in model pixels (default: the card's)")
    sp.add_argument(
        "--overlap",
        type=float,
        default=None,
        help="overlap between tiles: model pixels, or a fraction of the tile when < 1",
    )
    sp.add_argument("--tta", action="store_true", help="average the 4 flips (test-time augmentation)")
    sp.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network: ~1.4x faster per tile after a ~20-30 s first call "
        "(pays on slides of a few hundred tiles)",
    )
    sp.add_argument(
        "--no-stain-norm",
        dest="stain_norm",
        action="store_false",
        default=None,
        help="do not scale the input's hematoxylin to the model's training level (the card's "
        "stain_reference); for images that are not bright-field H&E",
    )
    sp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT (or, with a folder, stores pathreview did not write); never an input",
    )
    add_batch(sp, "several inputs: a local Dask cluster of N single-threaded workers")
    add_view(sp)
    add_common(sp)
    add_precision(sp)
    sp.set_defaults(func=cmd_segment)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors (a malformed or missing option) in one line on stderr, exit 2, like every
    other refusal; the usage stays in ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pathreview", description="Run and review deep models on pathology slides.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    _add_info(sub)
    _add_demo(sub)
    add_train(sub, add_common)
    add_evaluate(sub, add_common)
    for add in (_add_enhance, _add_explain, _add_convert, _add_detect, _add_bench, _add_segment):
        add(sub)
    return p


_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def check_options(args) -> None:
    """Refuse option values that are the wrong kind, not finite or out of range (InputError naming the
    option, the value and the fix) before any work starts."""
    import math

    def number(name, lo, hi, lo_open=False, hi_open=False, what=""):
        v = getattr(args, name, None)
        if v is None:
            return
        bad = not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi)
        if bad:
            rng = f"{'above' if lo_open else 'from'} {lo:g} {'and below' if hi_open else 'up to'} {hi:g}"
            raise InputError(f"--{name.replace('_', '-')} {v:g}: give a number {rng}{what}")

    number("threshold", 0.0, 1.0, lo_open=True, hi_open=True, what=" (a cell's minimum score, e.g. 0.5)")
    number("overlap", 0.0, 4096.0, what=" (model pixels, or a fraction of the tile when below 1)")
    number("radius_um", 0.0, 100.0, lo_open=True, what=" (µm)")
    if args.command == "segment" and args.tile is not None and not 32 <= args.tile <= 4096:
        raise InputError(f"--tile {args.tile}: give a tile side from 32 to 4096 model pixels (e.g. 256)")
    if getattr(args, "level", None) is not None and args.level < 0:
        raise InputError(f"--level {args.level}: give 0 (full resolution) or a coarser level 1, 2, ...")
    if getattr(args, "region", None) is not None:
        from ..backend.regions import parse_region

        args.region = parse_region(args.region)
    if getattr(args, "workers", 1) < 1:
        raise InputError(f"--workers {args.workers}: give 1 or more")
    dev = getattr(args, "device", None)
    if dev is not None and not _DEVICE.fullmatch(dev):
        raise InputError(f"--device {dev!r}: unknown device; use auto, cpu, cuda, cuda:N or mps")
