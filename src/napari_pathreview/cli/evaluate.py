"""``pathreview evaluate <task>``: a registered task's evaluation, its lines (without ``--json``) and
the JSON object as the last line."""

from __future__ import annotations

import json

from ..backend.datasets import data_mpp
from ..backend.tasks import EvalRun, get_task
from .common import progress
from .train import task_options


def cmd_evaluate(args) -> int:
    task = get_task(args.task)
    run = EvalRun(
        data=args.data,
        split=args.split,
        weights=args.weights,
        mpp=data_mpp(args.mpp, args.data),
        device=args.device,
        progress=None if args.json else progress,
    )
    res = task.run_evaluate(run, task_options(args, task.eval_options))
    if not args.json and task.describe:
        for line in task.function("describe")(res):
            print(line)
    print(json.dumps(res))
    return 0
