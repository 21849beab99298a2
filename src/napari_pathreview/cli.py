"""The ``pathreview`` command: the same pipelines as the widgets, from a shell.

Exit codes: 0 ok, 2 bad input (one line on stderr), 1 internal error, 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import warnings
from pathlib import Path

from .backend.errors import InputError

TASKS = ("detector", "segmenter", "enhancer", "classifier", "vit", "weak-cells")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (ours and the libraries') as one line on stderr: ``pathreview: warning: ...``."""
    print("pathreview: warning: " + " ".join(str(message).split()), file=sys.stderr, flush=True)


def _progress(i: int, n: int, msg: str) -> None:
    print(f"[{i}/{n}] {msg}", file=sys.stderr, flush=True)


def _mpp(parser_value: str | None):
    return None if parser_value is None else float(parser_value)


def cmd_info(args) -> int:
    import platform

    import torch

    from . import __version__
    from .backend.weights import choose_device, list_models

    info = {
        "napari_pathreview": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(choose_device(None)),
        "cuda": torch.cuda.is_available(),
        "models": [
            {"name": c.name, "task": c.task, "classes": c.classes, "mpp": c.mpp, "path": c.path} for c in list_models()
        ],
    }
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            if k != "models":
                print(f"{k}: {v}")
        print("models:")
        for m in info["models"]:
            print(f"  {m['name']:<24} {m['task']:<10} mpp={m['mpp']} classes={','.join(m['classes'])}")
    return 0


def _ints(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        return ()


def _widths(text: str) -> tuple:
    w = _ints(text)
    if len(w) < 2 or min(w) < 1:
        raise argparse.ArgumentTypeError(
            f"widths must be two or more positive integers like 32,64,128,256, got {text!r}"
        )
    return w


def _per_grid(text: str) -> tuple:
    k = _ints(text)
    if len(k) != 3 or min(k) < 0 or sum(k) == 0:
        raise argparse.ArgumentTypeError(f"per-grid must be three counts like 1,4,4 (not all 0), got {text!r}")
    return k


def _train_tile(text: str) -> int:
    t = _ints(text)
    if len(t) != 1 or t[0] < 64 or t[0] % 32:
        raise argparse.ArgumentTypeError(f"tile must be a multiple of 32 from 64 up, like 256 or 384, got {text!r}")
    return t[0]


def _count(text: str) -> int:
    k = _ints(text)
    if len(k) != 1 or k[0] < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 up, got {text!r}")
    return k[0]


def _scale_jitter(text: str) -> float:
    try:
        j = float(text)
    except ValueError:
        j = -1.0
    if not 0.0 <= j < 0.5:
        raise argparse.ArgumentTypeError(f"scale-jitter must be a fraction from 0 up to 0.5, got {text!r}")
    return j


def _pale_nuclei(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"pale-nuclei must be a probability from 0 to 1, got {text!r}")
    return p


_DET, _SEG, _ENH, _CLS = ("detector",), ("segmenter",), ("enhancer",), ("classifier", "vit")
TRAIN_OPTIONS = {  # option dest -> the train tasks that use it; others refuse it instead of ignoring it
    "init": _DET + _SEG + _ENH + _CLS,
    "lr": _DET + _SEG + _ENH,
    "checkpoints": _DET + _SEG + _CLS,
    "ema": _DET + _SEG,
    "amp": _DET + _SEG,
    "widths": _DET + _SEG,
    "tile": _DET + _SEG,
    "stain_norm": _DET + _SEG,
    **dict.fromkeys(
        ("target_sigma_um", "target_crowding", "obj_loss", "crops_per_image", "scale_jitter", "deepen"), _DET
    ),
    **dict.fromkeys(("decoder", "no_aspp", "per_grid", "pale_nuclei", "lovasz"), _SEG),
    **dict.fromkeys(("detector", "mode", "matching", "aux_loss", "schedule", "position", "mask_um", "tune_bias"), _ENH),
    **dict.fromkeys(("loss", "se", "arcface", "dual"), _CLS),
    **dict.fromkeys(("cams", "seg_select"), ("weak-cells",)),
}


def check_train_options(args) -> None:
    """Refuse a training option given for a task that does not use it (InputError naming both)."""
    for dest, tasks in TRAIN_OPTIONS.items():
        if args.task in TASKS and args.task not in tasks and getattr(args, dest) != args.train_defaults[dest]:
            raise InputError(
                f"--{dest.replace('_', '-')} does not apply to 'train {args.task}' "
                f"(only to {', '.join(tasks)}); leave it out"
            )


def cmd_train(args) -> int:
    check_train_options(args)
    command = "pathreview " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.task == "detector":
        from .backend.detection import train_detector

        _, card = train_detector(
            args.data,
            args.out,
            epochs=args.epochs,
            seed=args.seed,
            device=args.device,
            init=args.init,
            progress=_progress,
            command=command,
            checkpoints=args.checkpoints,
            lr=args.lr,
            target_sigma_um=args.target_sigma_um,
            ema=args.ema,
            amp=args.amp,
            widths=args.widths,
            target_crowding=args.target_crowding,
            stain_norm=args.stain_norm,
            obj_loss=args.obj_loss,
            deepen=args.deepen,
            crop=args.tile,
            crops_per_image=args.crops_per_image,
            scale_jitter=args.scale_jitter,
            on_epoch=lambda r: print(json.dumps(r), file=sys.stderr, flush=True),
        )
        print(
            json.dumps(
                {
                    "out": str(Path(args.out).with_suffix(".safetensors")),
                    "params": card.params,
                    "best_epoch": card.training["best_epoch"],
                    "seconds": card.training["seconds"],
                }
            )
        )
        return 0
    if args.task == "enhancer":
        from .backend.enhancement import EnhancerTrainOptions, train_enhancer

        opt = EnhancerTrainOptions(
            epochs=args.epochs,
            mode=args.mode,
            matching=args.matching,
            aux_loss=args.aux_loss,
            schedule=args.schedule,
            tune_bias=args.tune_bias,
            **({"lr": args.lr} if args.lr else {}),
        )
        config = {"position": args.position, "radius_um": None if args.mask_um <= 0 else args.mask_um}
        _, card = train_enhancer(
            args.data,
            args.out,
            detector=args.detector,
            seed=args.seed,
            device=args.device,
            options=opt,
            config=config,
            progress=_progress,
            command=command,
            init=args.init,
            on_epoch=lambda r: print(json.dumps(r), file=sys.stderr, flush=True),
        )
        print(
            json.dumps(
                {
                    "out": str(Path(args.out).with_suffix(".safetensors")),
                    "metrics": card.metrics,
                    "best_epoch": card.training["best_epoch"],
                    "seconds": card.training["seconds"],
                }
            )
        )
        return 0
    if args.task == "segmenter":
        from .backend.segmentation import train_segmenter

        _, card = train_segmenter(
            args.data,
            args.out,
            epochs=args.epochs,
            seed=args.seed,
            device=args.device,
            init=args.init,
            decoder=args.decoder,
            aspp=not args.no_aspp,
            lovasz=args.lovasz,
            progress=_progress,
            command=command,
            ema=args.ema,
            amp=args.amp,
            widths=args.widths,
            tile=args.tile,
            pale=args.pale_nuclei,
            stain_norm=args.stain_norm,
            **({"per_grid": args.per_grid} if args.per_grid else {}),
            checkpoints=args.checkpoints,
            **({"lr": args.lr} if args.lr else {}),
            on_epoch=lambda r: print(json.dumps(r), file=sys.stderr, flush=True),
        )
        print(
            json.dumps(
                {
                    "out": str(Path(args.out).with_suffix(".safetensors")),
                    "params": card.params,
                    "metrics": card.metrics,
                    "best_epoch": card.training["best_epoch"],
                    "seconds": card.training["seconds"],
                }
            )
        )
        return 0
    if args.task in ("classifier", "vit"):
        from .backend.classification import train_classifier

        kw = dict(
            epochs=args.epochs,
            seed=args.seed,
            device=args.device,
            progress=_progress,
            command=command,
            checkpoints=args.checkpoints,
            loss=args.loss,
            se=args.se,
            decoder=args.dual,
            head="arcface" if args.arcface else "linear",
            init=args.init,
            on_epoch=lambda r: print(json.dumps(r), file=sys.stderr, flush=True),
        )
        _, card = train_classifier(args.data, args.out, arch="vit" if args.task == "vit" else "cnn", **kw)
        print(
            json.dumps(
                {
                    "out": str(Path(args.out).with_suffix(".safetensors")),
                    "params": card.params,
                    "metrics": card.metrics,
                    "best_epoch": card.training["best_epoch"],
                    "seconds": card.training["seconds"],
                }
            )
        )
        return 0
    if args.task == "weak-cells":
        from .backend.weak import WeakConfig, train_weak_cells

        cfg = WeakConfig(seed=args.seed, cam_epochs=args.epochs, seg_epochs=args.epochs, seg_select=args.seg_select)
        res = train_weak_cells(
            args.data,
            args.out,
            cfg,
            device=args.device,
            command=command,
            cams=args.cams,
            progress=_progress,
            on_epoch=lambda r: print(json.dumps(r), file=sys.stderr, flush=True),
        )
        print(json.dumps(res))
        return 0
    raise InputError(f"unknown task '{args.task}'; choose from {', '.join(TASKS)}")


def cmd_evaluate(args) -> int:
    if args.task == "detector":
        from .backend.detection import evaluate_detector

        res = evaluate_detector(
            args.data,
            args.split,
            args.weights,
            radius_um=args.radius_um,
            mpp=args.mpp,
            device=args.device,
            tta=args.tta,
            progress=_progress if not args.json else None,
        )
    elif args.task == "enhancer":
        from .backend.enhancement import evaluate_enhancer

        res = evaluate_enhancer(
            args.data,
            args.split,
            args.weights,
            detector=args.detector,
            radius_um=args.radius_um,
            mpp=args.mpp,
            device=args.device,
            ablation=args.ablation,
            ablation_epochs=args.ablation_epochs,
            tta=args.tta,
            progress=_progress if not args.json else None,
        )
        if not args.json:
            for key in ("base", "enhanced"):
                print(f"--- {key}")
                _print_points_table(res[key])
            for v in res.get("ablation", {}).get("variants", []):
                print(f"ablation {v['variant']:<34} mF1 {v['mF1']:.4f}  (tune {v['tune_mF1']:.4f}, {v['seconds']} s)")
        print(json.dumps(res))
        return 0
    elif args.task == "segmenter":
        from .backend.segmentation import evaluate_segmenter

        res = evaluate_segmenter(
            args.data,
            args.split,
            args.weights,
            mpp=args.mpp,
            device=args.device,
            tta=args.tta,
            progress=_progress if not args.json else None,
        )
        if not args.json:
            for r in res["per_image"]:
                inst = "" if r["aji"] is None else f"  AJI {r['aji']:.3f}  PQ {r['pq']:.3f}"
                print(f"{r['image']:<28} Dice {r['dice']:.3f}{inst}")
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
            print(f"Dice {fmt(res['dice'])}  AJI {fmt(res['aji'])}  PQ {fmt(res['pq'])}  images {res['n_images']}")
        print(json.dumps(res))
        return 0
    elif args.task in ("classifier", "vit"):
        from .backend.classification import evaluate_classifier

        res = evaluate_classifier(
            args.data,
            args.split,
            args.weights,
            device=args.device,
            mpp=args.mpp,
            faithfulness=not args.no_faithfulness,
            limit=args.limit,
            progress=_progress if not args.json else None,
            task=args.task,
        )
        if not args.json:
            print(
                f"accuracy {res['accuracy']:.3f}  balanced {res['balanced_accuracy']:.3f}  "
                f"AUC {res['auc'] if res['auc'] is None else round(res['auc'], 3)}  F1 {res['f1']:.3f}  "
                f"images {res['n_images']}"
            )
            for m, f in res.get("faithfulness", {}).items():
                print(f"{m:<12} deletion AUC {f['deletion_auc']:.3f}  random {f['random_deletion_auc']:.3f}")
        print(json.dumps(res))
        return 0
    elif args.task == "weak-cells":
        from .backend.weak import evaluate_weak_cells

        res = evaluate_weak_cells(
            args.data,
            args.split,
            args.weights,
            device=args.device,
            detector=args.detector,
            limit=args.limit,
            progress=_progress if not args.json else None,
        )
        if not args.json:
            for key in ("cam", "puzzle_cam", "sc_cam", "cam_ensemble", "two_stage", "supervised"):
                r = res[key]
                print(
                    f"{key:<13} mF1 {r['mF1']:.3f}  accuracy {r['accuracy']:.3f}  "
                    + "  ".join(f"{c} {r[c]:.3f}" for c in res["classes"])
                )
        print(json.dumps(res))
        return 0
    else:
        raise InputError(f"unknown task '{args.task}'; choose from {', '.join(TASKS)}")
    if not args.json:
        _print_points_table(res)
    print(json.dumps(res))
    return 0


def _print_points_table(res: dict) -> None:
    d = res["detection"]
    print(f"detection  P {d['precision']:.3f}  R {d['recall']:.3f}  F1 {d['f1']:.3f}")
    for name, c in res["classes"].items():
        print(f"{name:<14} P {c['precision']:.3f}  R {c['recall']:.3f}  F1 {c['f1']:.3f}  n={c['support']}")
    print(f"mF1 {res['mF1']:.3f}  weighted F1 {res['weighted_f1']:.3f}  images {res['n_images']}")


def cmd_detect(args) -> int:
    from .backend.pipelines import DetectOptions, detect_files

    o = DetectOptions(
        args.weights, args.mpp, args.device, args.threshold, tta=args.tta or None, precision=args.precision
    )
    res = detect_files(args.inputs, args.out, o, args.workers, args.scheduler, args.overwrite, progress=_progress)
    return _print_batch(res)


def _print_batch(res: dict) -> int:
    """Written paths on stdout, one a line; slides skipped as already done on stderr."""
    for s in res["skipped"]:
        print(f"skipped (already done by the same job): {s}", file=sys.stderr)
    for w in res["written"]:
        print(w)
    return 0


def cmd_segment(args) -> int:
    from .backend.pipelines import SegmentOptions, segment_file, segment_files

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
    )
    if len(args.input) > 1 or args.workers > 1 or args.scheduler or not args.out.lower().endswith(".zarr"):
        res = segment_files(args.input, args.out, o, args.workers, args.scheduler, args.overwrite, progress=_progress)
        return _print_batch(res)
    print(segment_file(args.input[0], args.out, o, args.overwrite, progress=_progress))
    return 0


def cmd_enhance(args) -> int:
    from .backend.pipelines import EnhanceOptions, enhance_files

    o = EnhanceOptions(args.weights, args.detector, args.mpp, args.device, args.tta or None, args.precision)
    return _print_batch(enhance_files(args.inputs, args.out, o, args.overwrite, progress=_progress))


def cmd_explain(args) -> int:
    from .backend.pipelines import ExplainOptions, explain_files

    classes = [c for c in args.classes.split(",") if c] if args.classes else None
    o = ExplainOptions(args.model, args.method, classes, args.mpp, args.device)
    return _print_batch(explain_files(args.inputs, args.out, o, args.overwrite, progress=_progress))


def cmd_convert(args) -> int:
    from .backend.atomic import refuse_foreign, refuse_input_as_output
    from .backend.exchange import read_points_file, write_geojson, write_points_csv

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
    from .demo import run_demo

    return run_demo(args.out, device=args.device)


def cmd_bench(args) -> int:
    import inspect

    from .backend.bench import BENCHES, run_bench

    kw = {"record": True} if args.record else {}
    if args.precision:
        kw["precision"] = args.precision
    takes = inspect.signature(BENCHES[args.name]).parameters if args.name in BENCHES else {}
    for k in kw:
        if args.name in BENCHES and k not in takes:
            raise InputError(f"bench {args.name} takes no --{k}")
    if args.name == "viewer":  # opens a napari window: the Qt code stays out of the backend
        from .viewer_bench import run_viewer_bench

        if kw:
            raise InputError(f"bench viewer takes no --{next(iter(kw))}")
        res = run_viewer_bench()
    else:
        res = run_bench(args.name, **kw)
    if not args.json:
        for k, v in res.items():
            print(f"{k}: {v}")
    print(json.dumps(res))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pathreview", description="Run and review deep models on pathology slides.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, mpp=True):
        sp.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps")
        if mpp:
            sp.add_argument(
                "--mpp", type=float, default=None, help="microns per pixel of the input, when the file does not say"
            )

    def precision(sp):
        sp.add_argument(
            "--precision",
            default=None,
            choices=("fp32", "bf16", "fp16", "auto"),
            help="the network's precision (decoding stays fp32): fp32 (default); bf16 (CPUs with "
            "avx512_bf16/AMX, GPUs); fp16 (GPUs); auto: the fastest the device runs natively and "
            "the model card records as giving fp32's outputs (pathreview bench precision)",
        )

    sp = sub.add_parser("info", help="versions, device and registered models")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("demo", help="the main job on the bundled sample (opens napari, or writes to --out)")
    sp.add_argument("--out", default=None, help="write results and a rendered PNG here instead of opening napari")
    common(sp, mpp=False)
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("train", help="train a model on a dataset folder")
    sp.add_argument("task", help="detector")
    sp.add_argument("--data", required=True, help="dataset folder (see docs/data-formats.md)")
    sp.add_argument("--out", required=True, help="output weights path (writes OUT.safetensors + OUT.json)")
    sp.add_argument("--epochs", type=int, default=30)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--init", default=None, help="weights to fine-tune from (name or path)")
    sp.add_argument(
        "--lr",
        type=float,
        default=None,
        help="detector / segmenter: learning rate (default 2e-3; ~10x less to fine-tune); enhancer: (default 1e-3)",
    )
    sp.add_argument("--checkpoints", action="store_true", help="write best-so-far weights to OUT.checkpoint.*")
    sp.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="detector / segmenter: validate and keep a moving average of the weights with this "
        "per-step decay (e.g. 0.99; default 0: the raw weights)",
    )
    sp.add_argument(
        "--amp",
        action="store_true",
        help="detector / segmenter: bfloat16 autocast in training (fast on CPUs with AMX and on GPUs)",
    )
    sp.add_argument(
        "--widths",
        type=_widths,
        default=None,
        help="detector / segmenter from scratch: encoder channels per level, e.g. 32,64,128,256",
    )
    sp.add_argument(
        "--target-sigma-um",
        type=float,
        default=None,
        help="detector: sigma of the Gaussian cell-centre target in µm (default: --init's, else 2 model pixels)",
    )
    sp.add_argument(
        "--target-crowding",
        type=float,
        default=None,
        help="detector: cap each cell's target sigma at this fraction of the distance to its nearest "
        "annotated neighbour, e.g. 0.4 (default: --init's, else off)",
    )
    sp.add_argument(
        "--obj-loss",
        choices=("bce", "focal"),
        default=None,
        help="detector: objectness loss, BCE against the Gaussian targets or CenterNet's focal loss "
        "(default: --init's, else bce)",
    )
    sp.add_argument("--decoder", choices=("unet", "fpn"), default="unet", help="segmenter: decoder type")
    sp.add_argument("--no-aspp", action="store_true", help="segmenter: no ASPP bottleneck")
    sp.add_argument(
        "--per-grid",
        type=_per_grid,
        default=None,
        help="segmenter: tiles drawn per image and epoch from the whole image, the 2x2 and the 3x3 "
        "tiling (default 1,4,4; 0,4,0 trains at the model's scale only)",
    )
    sp.add_argument(
        "--tile",
        type=_train_tile,
        default=256,
        help="segmenter: training tile side in pixels; sets the working scale (MoNuSeg: 256 → 0.5 µm/px, "
        "384 → 0.33 µm/px); detector: side of the training crops, at the model's scale",
    )
    sp.add_argument(
        "--crops-per-image",
        type=_count,
        default=4,
        help="detector: training crops drawn per image and epoch (default 4)",
    )
    sp.add_argument(
        "--scale-jitter",
        type=_scale_jitter,
        default=0.0,
        metavar="J",
        help="detector: read each training crop at a random zoom, up to J either way (e.g. 0.15: nuclei "
        "0.85-1.15x their size at the model's mpp; default 0)",
    )
    sp.add_argument(
        "--deepen",
        type=_count,
        default=None,
        metavar="CHANNELS",
        help="detector: add a coarser level of CHANNELS to --init before fine-tuning (twice the "
        "context; the same outputs until trained)",
    )
    sp.add_argument(
        "--pale-nuclei",
        type=_pale_nuclei,
        default=0.0,
        help="segmenter: probability per tile of lightening the stain inside its nuclei, rims kept "
        "(as vesicular nuclei look), e.g. 0.3 (default 0)",
    )
    sp.add_argument(
        "--stain-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="detector, segmenter: scale every image's hematoxylin to the training images' median level, "
        "in training and (recorded in the card) at inference (default: as --init does; off)",
    )
    sp.add_argument("--lovasz", action="store_true", help="segmenter: add the Lovász hinge loss")
    sp.add_argument("--detector", default=None, help="enhancer: detector whose cells it corrects (default: shipped)")
    sp.add_argument(
        "--cams",
        default=None,
        metavar="WEAK_CELLS",
        help="weak-cells: reuse this weak-cells model's stage-1 CAM models and retrain only the "
        "pseudo-labels and the stage-2 U-Net",
    )
    sp.add_argument(
        "--seg-select",
        choices=("agreement", "tile_f1"),
        default="agreement",
        help="weak-cells: stage-2 checkpoint rule, agreement with the held-out images' pseudo-labels "
        "(default) or the tile-level F1 of its label maps",
    )
    sp.add_argument(
        "--mode",
        choices=("class", "bipartite"),
        default="class",
        help="enhancer: class-only CE on pre-matched cells, or bipartite loss matched in the loop",
    )
    sp.add_argument("--matching", choices=("hungarian", "greedy"), default="hungarian", help="enhancer matching")
    sp.add_argument("--aux-loss", action="store_true", help="enhancer: auxiliary loss after every layer")
    sp.add_argument(
        "--schedule",
        choices=("cosine", "step", "cosine-restarts"),
        default="cosine",
        help="enhancer: learning-rate schedule",
    )
    sp.add_argument(
        "--position",
        choices=("relative", "sinusoidal", "both", "none"),
        default="relative",
        help="enhancer: position encoding",
    )
    sp.add_argument("--mask-um", type=float, default=70.0, help="enhancer: attention radius in µm (0: no mask)")
    sp.add_argument(
        "--tune-bias",
        action="store_true",
        help="enhancer: per-class logit offsets searched on the held-out tune images",
    )
    sp.add_argument("--loss", default="ce", help="classifier: ce, focal, f1, lovasz joined by '+' (f1: multi-label)")
    sp.add_argument("--se", action="store_true", help="classifier: squeeze-and-excitation blocks")
    sp.add_argument("--arcface", action="store_true", help="classifier: ArcFace (angular margin) head")
    sp.add_argument("--dual", action="store_true", help="classifier: auto-encoder decoder, reconstruction MSE x10")
    common(sp, mpp=False)
    sp.set_defaults(func=cmd_train, train_defaults={d: sp.get_default(d) for d in TRAIN_OPTIONS})

    sp = sub.add_parser("evaluate", help="score a model against a dataset's annotations")
    sp.add_argument("task", help="detector")
    sp.add_argument("--data", required=True)
    sp.add_argument("--split", default="validation")
    sp.add_argument("--weights", default=None, help="model name or weights path (default: shipped)")
    sp.add_argument("--radius-um", type=float, default=3.3, help="match radius in microns (3.3 = 6 px at 0.55)")
    sp.add_argument("--json", action="store_true", help="print one JSON object as the last line only")
    sp.add_argument(
        "--tta",
        action="store_true",
        help="detector, enhancer: average the 8 rotations / flips of each detector tile; segmenter: the "
        "4 flips (test-time augmentation)",
    )
    sp.add_argument("--detector", default=None, help="enhancer: detector (default: the one its card names)")
    sp.add_argument(
        "--ablation",
        action="store_true",
        help="enhancer: also train and score position-encoding / mask variants (minutes)",
    )
    sp.add_argument("--ablation-epochs", type=int, default=15, help="enhancer: epochs per ablation variant")
    sp.add_argument("--no-faithfulness", action="store_true", help="classifier: skip the deletion curves")
    sp.add_argument("--limit", type=int, default=None, help="classifier: first N images of the split only")
    common(sp)
    sp.set_defaults(func=cmd_evaluate)

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
    sp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs that pathreview did not write (its own are replaced anyway)",
    )
    common(sp)
    precision(sp)
    sp.set_defaults(func=cmd_enhance)

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
    sp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs that pathreview did not write (its own are replaced anyway)",
    )
    common(sp)
    sp.set_defaults(func=cmd_explain)

    sp = sub.add_parser("convert", help="convert cell points between QuPath GeoJSON and CSV")
    sp.add_argument("input", help=".geojson (QuPath / pathreview) or .csv/.tsv (pathreview, points dataset, QuPath)")
    sp.add_argument("output", help="OUT.geojson or OUT.csv")
    sp.add_argument("--mpp", type=float, default=None, help="microns per pixel to record (CSV x_um / y_um)")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    sp.set_defaults(func=cmd_convert)

    sp = sub.add_parser("detect", help="detect cells; writes CSV + QuPath GeoJSON per input")
    sp.add_argument("inputs", nargs="+")
    sp.add_argument("--out", required=True)
    sp.add_argument("--weights", default=None)
    sp.add_argument("--threshold", type=float, default=None)
    sp.add_argument(
        "--tta",
        action="store_true",
        help="average the 8 rotations / flips of every tile (test-time augmentation, 8x slower)",
    )
    sp.add_argument(
        "--workers", type=int, default=1, help="run the inputs on a local Dask cluster of N single-threaded workers"
    )
    sp.add_argument("--scheduler", default=None, help="address of an existing dask.distributed scheduler")
    sp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs that pathreview did not write (its own are replaced anyway)",
    )
    common(sp)
    precision(sp)
    sp.set_defaults(func=cmd_detect)
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
        help="tiling, slide-throughput: our side's precision (the reference stays fp32)",
    )
    sp.set_defaults(func=cmd_bench)

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
    sp.add_argument(
        "--workers", type=int, default=1, help="several inputs: a local Dask cluster of N single-threaded workers"
    )
    sp.add_argument("--scheduler", default=None, help="address of an existing dask.distributed scheduler")
    common(sp)
    precision(sp)
    sp.set_defaults(func=cmd_segment)
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
    if getattr(args, "workers", 1) < 1:
        raise InputError(f"--workers {args.workers}: give 1 or more")
    dev = getattr(args, "device", None)
    if dev is not None and not _DEVICE.fullmatch(dev):
        raise InputError(f"--device {dev!r}: unknown device; use auto, cpu, cuda, cuda:N or mps")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_options(args)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except InputError as e:
        print("pathreview: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pathreview: cancelled", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(
            f"pathreview: internal error: {type(e).__name__}: {' '.join(str(e).split())} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
