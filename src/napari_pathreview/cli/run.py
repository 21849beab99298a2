"""The commands that run models and convert files: detect, segment, enhance, explain, convert, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..backend.errors import InputError
from .common import progress as _progress


def cmd_detect(args) -> int:
    from ..backend.pipelines import detect_files

    res = detect_files(
        args.inputs,
        args.out,
        weights=args.weights,
        mpp=args.mpp,
        device=args.device,
        threshold=args.threshold,
        tta=args.tta or None,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=_progress,
        overwrite=args.overwrite,
        precision=args.precision,
    )
    return _print_batch(res)


def _print_batch(res: dict) -> int:
    """Written paths on stdout, one a line; slides skipped as already done on stderr."""
    for s in res["skipped"]:
        print(f"skipped (already done by the same job): {s}", file=sys.stderr)
    for w in res["written"]:
        print(w)
    return 0


def cmd_segment(args) -> int:
    from ..backend.pipelines import segment_file

    weights = args.weights if args.weights and len(args.weights) > 1 else (args.weights or [None])[0]
    if len(args.input) > 1 or args.workers > 1 or args.scheduler or not args.out.lower().endswith(".zarr"):
        from ..backend.pipelines import segment_files

        res = segment_files(
            args.input,
            args.out,
            weights=weights,
            mpp=args.mpp,
            device=args.device,
            tile=args.tile,
            overlap=args.overlap,
            tta=args.tta or None,
            ensemble=args.ensemble,
            overwrite=args.overwrite,
            workers=args.workers,
            scheduler=args.scheduler,
            progress=_progress,
            compile=args.compile,
            stain_norm=args.stain_norm,
            precision=args.precision,
        )
        for s in res["skipped"]:
            print(f"skipped (already done by the same job): {s}", file=sys.stderr)
        for w in res["written"]:
            print(w)
        return 0
    out = segment_file(
        args.input[0],
        args.out,
        weights=weights,
        mpp=args.mpp,
        device=args.device,
        tile=args.tile,
        overlap=args.overlap,
        tta=args.tta or None,
        ensemble=args.ensemble,
        overwrite=args.overwrite,
        progress=_progress,
        compile=args.compile,
        stain_norm=args.stain_norm,
        precision=args.precision,
    )
    print(out)
    return 0


def cmd_enhance(args) -> int:
    from ..backend.pipelines import enhance_files

    res = enhance_files(
        args.inputs,
        args.out,
        weights=args.weights,
        detector=args.detector,
        mpp=args.mpp,
        device=args.device,
        tta=args.tta or None,
        progress=_progress,
        overwrite=args.overwrite,
        precision=args.precision,
    )
    return _print_batch(res)


def cmd_explain(args) -> int:
    from ..backend.pipelines import explain_files

    classes = [c for c in args.classes.split(",") if c] if args.classes else None
    res = explain_files(
        args.inputs,
        args.out,
        weights=args.model,
        method=args.method,
        classes=classes,
        mpp=args.mpp,
        device=args.device,
        progress=_progress,
        overwrite=args.overwrite,
    )
    return _print_batch(res)


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
