"""One module per task; importing this package registers them all (the registry is ``backend.registry``).

A new task: a module here that calls ``register(Task(...))``, and its name in ``MODULES`` (the order
``pathreview train --help`` and the Train widget list the tasks in).
"""

import importlib

from ..registry import (
    REGISTRY,
    EvalRun,
    Task,
    TrainRun,
    evaluable,
    get_task,
    option,
    option_specs,
    register,
    task_for_card,
    trainable,
    unregister,
)

MODULES = ("detector", "segmenter", "enhancer", "classifier", "vit", "weak_cells")
for _m in MODULES:
    importlib.import_module(f"{__name__}.{_m}")

__all__ = [
    "MODULES",
    "REGISTRY",
    "EvalRun",
    "Task",
    "TrainRun",
    "evaluable",
    "get_task",
    "option",
    "option_specs",
    "register",
    "task_for_card",
    "trainable",
    "unregister",
]
