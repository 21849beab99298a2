"""``pathreview bench NAME``: a benchmark against a reference measured in the same run."""

from __future__ import annotations

import json

from ..backend.errors import InputError


def cmd_bench(args) -> int:
    import inspect

    from ..backend.bench import BENCHES, run_bench

    kw = {"record": True} if args.record else {}
    if args.precision:
        kw["precision"] = args.precision
    takes = inspect.signature(BENCHES[args.name]).parameters if args.name in BENCHES else {}
    for k in kw:
        if args.name in BENCHES and k not in takes:
            raise InputError(f"bench {args.name} takes no --{k}")
    if args.name == "viewer":  # opens a napari window: the Qt code stays out of the backend
        from ..viewer_bench import run_viewer_bench

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
