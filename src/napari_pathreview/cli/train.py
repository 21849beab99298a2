"""``pathreview train <task>`` and ``pathreview evaluate <task>``: a registered task's function with
the options its sub-command parsed (``backend.tasks``)."""

from __future__ import annotations

import json
import shlex
import sys

from ..backend.datasets import data_mpp
from ..backend.tasks import TrainRun, get_task, option_specs
from .common import epoch_line, progress


def task_options(args, options_cls):
    """The options dataclass filled from the parsed arguments (one attribute per field)."""
    return options_cls(**{s["name"]: getattr(args, s["name"]) for s in option_specs(options_cls)})


def cmd_train(args) -> int:
    task = get_task(args.task)
    command = "pathreview " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run = TrainRun(
        data=args.data,
        out=args.out,
        seed=args.seed,
        device=args.device,
        mpp=data_mpp(args.mpp, args.data),
        command=command,
        progress=progress,
        on_epoch=epoch_line,
    )
    print(json.dumps(task.run_train(run, task_options(args, task.train_options))))
    return 0
