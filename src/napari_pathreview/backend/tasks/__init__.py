"""One module per task; importing this package registers them all (see ``tasks.base``)."""

from .base import REGISTRY, EvalRun, Task, TrainRun, get_task, option, register, task_for_card, trainable

__all__ = ["REGISTRY", "EvalRun", "Task", "TrainRun", "get_task", "option", "register", "task_for_card", "trainable"]
