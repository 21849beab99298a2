"""The commands that run models and convert files: detect, segment, enhance, explain, convert, demo."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from ..backend.errors import InputError
from .common import progress as _progress


def cmd_detect(args) -> int:
    from ..backend.pipelines import DetectOptions, detect_files

    o = DetectOptions(args.weights, args.mpp, args.device, args.threshold, tta=args.tta or None)
    o = replace(o, precision=args.precision, level=args.level, region=args.region)
    return _print_batch(detect_files(args.inputs, args.out, o, _batch(args), progress=_progress))


def _batch(args):
    """The batch options (workers, scheduler, overwrite) of a command's arguments."""
    from ..backend.pipelines import BatchOptions

    return BatchOptions(getattr(args, "workers", 1), getattr(args, "scheduler", None), args.overwrite)


def _print_batch(res: dict) -> int:
    """Written paths on stdout, one a line; slides skipped as already done on stderr."""
    for s in res["skipped"]:
        print(f"skipped (already done by the same job): {s}", file=sys.stderr)
    for w in res["written"]:
        print(w)
    return 0


def cmd_segment(args) -> int:
    from ..backend.pipelines import SegmentOptions, segment_file, segment_files

    weights = args.weights if args.weights and len(args.weights) > 1 else (args.weights or [None])[0]
    o = SegmentOptions(
        weights,
        args.mpp,
        args.device,
        args.tile,
        args.overlap,
        args.tta or None,
        args.ensemble,
        args.stain_norm,
        args.precision,
        args.compile,
        args.level,
        args.region,
    )
    if len(args.input) > 1 or args.workers > 1 or args.scheduler or not args.out.lower().endswith(".zarr"):
        return _print_batch(segment_files(args.input, args.out, o, _batch(args), progress=_progress))
    print(segment_file(args.input[0], args.out, o, args.overwrite, progress=_progress))
    return 0


def cmd_enhance(args) -> int:
    from ..backend.pipelines import EnhanceOptions, enhance_files

    o = EnhanceOptions(args.weights, args.detector, args.mpp, args.device, args.tta or None, args.precision)
    o = replace(o, level=args.level, region=args.region)
    return _print_batch(enhance_files(args.inputs, args.out, o, _batch(args), progress=_progress))


def cmd_explain(args) -> int:
    from ..backend.pipelines import ExplainOptions, explain_files

    classes = [c for c in args.classes.split(",") if c] if args.classes else None
    o = ExplainOptions(args.model, args.method, classes, args.mpp, args.device, precision=args.precision)
    o = replace(o, level=args.level, region=args.region)
    return _print_batch(explain_files(args.inputs, args.out, o, _batch(args), progress=_progress))


def cmd_convert(args) -> int:
    from ..backend.atomic import refuse_foreign, refuse_input_as_output
    from ..backend.exchange import read_points_file, write_geojson, write_points_csv

    out = Path(args.output)
    if out.suffix.lower() not in (".geojson", ".csv"):
        raise InputError(f"{out}: output must end in .geojson or .csv")
    refuse_input_as_output(out, [args.input])
    refuse_foreign(out, overwrite=args.overwrite)
    parts = read_points_file(args.input)
    if len(parts) != 1:
        raise InputError(
            f"{args.input}: holds points of {len(parts)} images; convert needs one (filter the CSV to one image first)"
        )
    (pts,) = parts.values()
    if args.mpp is not None:
        pts.mpp = args.mpp
    (write_geojson if out.suffix.lower() == ".geojson" else write_points_csv)(pts, out)
    print(json.dumps({"out": str(out), "cells": len(pts), "classes": list(pts.classes)}))
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo

    return run_demo(args.out, device=args.device)
