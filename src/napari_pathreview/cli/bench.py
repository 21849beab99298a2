"""``pathreview bench NAME``: a benchmark against a reference measured in the same run."""

from __future__ import annotations

import json

from ..backend.errors import InputError


def cmd_bench(args) -> int:
    import inspect

    from ..bench import BENCHES, run_bench

    kw = {"record": True} if args.record else {}
    if args.precision:
        kw["precision"] = args.precision
    takes = inspect.signature(BENCHES[args.name]).parameters if args.name in BENCHES else {}
    for k in kw:
        if args.name in BENCHES and k not in takes:
            raise InputError(f"bench {args.name} takes no --{k}")
    res = run_bench(args.name, **kw)
    if not args.json:
        for k, v in res.items():
            print(f"{k}: {v}")
    print(json.dumps(res))
    return 0
