"""The ``pathreview`` command: the same pipelines as the widgets, from a shell.

Exit codes: 0 ok, 2 bad input (one line on stderr), 1 internal error, 130 cancelled (Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .backend.errors import InputError

TASKS = ("detector",)


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
        "napari_pathreview": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "device": str(choose_device(None)), "cuda": torch.cuda.is_available(),
        "models": [{"name": c.name, "task": c.task, "classes": c.classes, "mpp": c.mpp, "path": c.path}
                   for c in list_models()],
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


def cmd_train(args) -> int:
    command = "pathreview " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.task == "detector":
        from .backend.detection import train_detector

        _, card = train_detector(args.data, args.out, epochs=args.epochs, seed=args.seed, device=args.device,
                                 init=args.init, progress=_progress, command=command,
                                 checkpoints=args.checkpoints,
                                 on_epoch=lambda r: print(json.dumps(r), file=sys.stderr, flush=True))
        print(json.dumps({"out": str(Path(args.out).with_suffix(".safetensors")), "params": card.params,
                          "best_epoch": card.training["best_epoch"], "seconds": card.training["seconds"]}))
        return 0
    raise InputError(f"unknown task '{args.task}'; choose from {', '.join(TASKS)}")


def cmd_evaluate(args) -> int:
    if args.task == "detector":
        from .backend.detection import evaluate_detector

        res = evaluate_detector(args.data, args.split, args.weights, radius_um=args.radius_um, mpp=args.mpp,
                                device=args.device, progress=_progress if not args.json else None)
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
    from .backend.pipelines import detect_files

    written = detect_files(args.inputs, args.out, weights=args.weights, mpp=args.mpp, device=args.device,
                           threshold=args.threshold, progress=_progress)
    for w in written:
        print(w)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out, device=args.device)


def cmd_bench(args) -> int:
    from .backend.bench import run_bench

    res = run_bench(args.name)
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
            sp.add_argument("--mpp", type=float, default=None, help="microns per pixel of the input, when the file does not say")

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
    sp.add_argument("--checkpoints", action="store_true", help="write best-so-far weights to OUT.checkpoint.*")
    common(sp, mpp=False)
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("evaluate", help="score a model against a dataset's annotations")
    sp.add_argument("task", help="detector")
    sp.add_argument("--data", required=True)
    sp.add_argument("--split", default="validation")
    sp.add_argument("--weights", default=None, help="model name or weights path (default: shipped)")
    sp.add_argument("--radius-um", type=float, default=3.3, help="match radius in microns (3.3 = 6 px at 0.55)")
    sp.add_argument("--json", action="store_true", help="print one JSON object as the last line only")
    common(sp)
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("detect", help="detect cells; writes CSV + QuPath GeoJSON per input")
    sp.add_argument("inputs", nargs="+")
    sp.add_argument("--out", required=True)
    sp.add_argument("--weights", default=None)
    sp.add_argument("--threshold", type=float, default=None)
    common(sp)
    sp.set_defaults(func=cmd_detect)
    sp = sub.add_parser("bench", help="benchmarks against a reference measured in the same run")
    sp.add_argument("name", help="matching (more: see docs/benchmarks.md)")
    sp.add_argument("--json", action="store_true", help="last stdout line is one JSON object")
    sp.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"pathreview: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pathreview: cancelled", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001
        if args.debug:
            raise
        print(f"pathreview: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
