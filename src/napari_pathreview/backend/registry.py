"""The task registry: one :class:`Task` per model kind, read by every entry point.

``pathreview train`` / ``evaluate`` build one sub-command per registered task from its options
dataclasses (help, defaults and choices come from the fields), ``weights.build_model`` finds a card's
architecture here, ``pathreview info`` and the Train widget list the tasks from here. Adding a task is
one new module under ``backend/tasks/`` that calls :func:`register` (and one import line in
``tasks/__init__.py``).

Nothing here imports torch: a task names its functions as ``"module:function"`` strings, imported
when they are first called. The registry sits below every backend module (it imports only
``errors``); the task modules, which sit above the numerics they orchestrate, are imported on the
first lookup (:func:`load_tasks`), so ``weights`` can find a card's builder without an import cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InputError

ProgressFn = Callable[[int, int, str], None]


def option(
    default: Any,
    help: str,
    *,
    parse: Callable[[str], Any] | None = None,
    choices=None,
    flag=None,
    metavar: str | None = None,
    negatable: bool = False,
):
    """A training / evaluation option: a dataclass field whose metadata the CLI turns into an argument.

    ``parse``: text -> value, raising ``ValueError`` with a message that names the accepted values
    (None: the value stays text). ``flag``: the command-line spelling when it is not ``--field-name``
    (e.g. ``--no-aspp`` for a boolean that defaults to True). Booleans that default to False are
    ``store_true`` switches. ``negatable``: a ``--name`` / ``--no-name`` pair whose default (None)
    means "not said" (e.g. ``--stain-norm``: as ``--init`` does). ``metavar``: the value's name in help.
    """
    meta = {"help": help, "parse": parse, "choices": choices, "flag": flag, "metavar": metavar, "negatable": negatable}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def option_specs(options_cls) -> list[dict]:
    """The fields of an options dataclass as plain dicts: name, flag, default, help, parse, choices,
    metavar, negatable."""
    specs = []
    for f in fields(options_cls):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        m = f.metadata
        specs.append(
            {
                "name": f.name,
                "flag": m.get("flag") or "--" + f.name.replace("_", "-"),
                "default": default,
                "help": m.get("help", ""),
                "parse": m.get("parse"),
                "choices": m.get("choices"),
                "metavar": m.get("metavar"),
                "negatable": m.get("negatable", False),
            }
        )
    return specs


@dataclass
class TrainRun:
    """What every training run shares, whatever the task.

    ``data``: a dataset folder (its ``train`` split; layouts in docs/data-formats.md), or samples
    already at the model's scale (the Train widget's annotations). ``out``: writes
    ``OUT.safetensors`` + ``OUT.json``. ``mpp``: the data's microns per pixel when the folder does not
    say (None: the folder's ``dataset.json``, else the task's data set default).
    """

    data: Any
    out: str | Path
    seed: int = 0
    device: str | None = None
    mpp: float | None = None
    command: str = ""
    progress: ProgressFn | None = None
    cancel: Callable[[], bool] | None = None
    on_epoch: Callable[[dict], None] | None = None


@dataclass
class EvalRun:
    """What every evaluation shares: a dataset folder's split scored with one model (name or path;
    None: the shipped default). ``mpp``: the data's microns per pixel when the folder does not say."""

    data: str | Path
    split: str = "validation"
    weights: str | None = None
    mpp: float | None = None
    device: str | None = None
    progress: ProgressFn | None = None


@dataclass(frozen=True)
class Task:
    """One model kind.

    ``builder``: ``"module:function"`` building the network from a card's ``config`` dict.
    ``train`` / ``evaluate``: ``"module:function"`` called as ``f(run, options) -> dict`` (the dict is
    the JSON line the CLI prints); ``train_options`` / ``eval_options``: their options dataclasses.
    ``describe``: ``"module:function"`` turning an evaluation result into human lines (CLI without
    ``--json``). ``card_tasks``: the ``task`` values of the cards this task's models carry (default:
    its name). A task without ``train`` is a model kind only (built from cards, not trained alone).
    """

    name: str
    summary: str
    builder: str
    train: str | None = None
    train_options: type | None = None
    evaluate: str | None = None
    eval_options: type | None = None
    describe: str | None = None
    card_tasks: tuple = ()

    @classmethod
    def of_module(cls, module: str, name: str, summary: str, builder: str, train_options, eval_options, **kw) -> Task:
        """A task whose ``train``, ``evaluate`` and ``describe`` are the functions of those names in
        ``module`` (a task module passes its ``__name__``); ``kw``: other fields (``describe=None`` when the
        module has none, ``card_tasks``)."""
        refs = {role: f"{module}:{role}" for role in ("train", "evaluate", "describe")}
        return cls(name, summary, builder, train_options=train_options, eval_options=eval_options, **{**refs, **kw})

    def function(self, role: str) -> Callable:
        """Import and return the function named by ``role`` (``builder``, ``train``, ``evaluate``,
        ``describe``)."""
        ref = getattr(self, role)
        if ref is None:
            raise InputError(f"'{self.name}' has no {role}")
        module, name = ref.split(":")
        return getattr(importlib.import_module(module), name)

    def run_train(self, run: TrainRun, options=None) -> dict:
        return self.function("train")(run, options if options is not None else self.train_options())

    def run_evaluate(self, run: EvalRun, options=None) -> dict:
        return self.function("evaluate")(run, options if options is not None else self.eval_options())


REGISTRY: dict[str, Task] = {}
TASKS_PACKAGE = __name__.rsplit(".", 1)[0] + ".tasks"


def load_tasks() -> dict[str, Task]:
    """The registry with the shipped task modules registered (imports ``backend.tasks`` once)."""
    importlib.import_module(TASKS_PACKAGE)
    return REGISTRY


def register(task: Task) -> Task:
    """Add (or replace) a task; every entry point sees it from the next call on."""
    REGISTRY[task.name] = task
    return task


def unregister(name: str) -> None:
    """Remove a task (a test's toy task); unknown names are ignored."""
    REGISTRY.pop(name, None)


def get_task(name: str) -> Task:
    if name not in load_tasks():
        raise InputError(f"unknown task '{name}'; choose from {', '.join(trainable())}")
    return REGISTRY[name]


def trainable() -> tuple:
    """Names of the tasks ``pathreview train`` offers, in registration order."""
    return tuple(n for n, t in load_tasks().items() if t.train)


def evaluable() -> tuple:
    return tuple(n for n, t in load_tasks().items() if t.evaluate)


def task_for_card(card_task: str) -> Task:
    """The task whose models carry cards with ``task == card_task``."""
    for t in load_tasks().values():
        if card_task in (t.card_tasks or (t.name,)):
            return t
    raise InputError(f"unknown model task '{card_task}'")
