"""``pathreview train`` / ``evaluate``: one sub-command per registered task, its arguments made from
the task's options dataclass (``backend.tasks``: help, defaults, choices, parse functions)."""

from __future__ import annotations

import argparse

from ..backend.tasks import REGISTRY, evaluable, option_specs, trainable
from .evaluate import cmd_evaluate
from .train import cmd_train

# the namespace's own attributes, which an option field must not shadow
RESERVED = {"command", "task", "func", "debug", "data", "out", "seed", "device", "split", "weights", "json", "mpp"}


class TaskParser(argparse.ArgumentParser):
    """A task's sub-command parser: an option it does not take is refused here, in one line naming the
    option and the command (not passed up to ``pathreview``'s parser as an unrecognized argument)."""

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = super().parse_known_args(args, namespace)
        if extra:
            self.exit(2, f"{self.prog}: error: unrecognized arguments: {' '.join(extra)} (see {self.prog} --help)\n")
        return ns, extra


class DefaultsFormatter(argparse.HelpFormatter):
    """Help lines end with the default, where there is one worth saying and the text does not say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if d is None or isinstance(d, bool) or d is argparse.SUPPRESS or "default" in text or not action.option_strings:
            return text
        shown = ",".join(map(str, d)) if isinstance(d, tuple) else d
        return f"{text} (default: {shown})"


def _type(parse):
    """argparse ``type=``: builtins as they are (argparse's own messages), a parse function's
    ``ValueError`` as the argument's error message."""
    if parse in (None, int, float, str):
        return parse

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def add_options(sp: argparse.ArgumentParser, options_cls) -> None:
    """One argument per field of ``options_cls`` (its dest: the field's name)."""
    for s in option_specs(options_cls):
        if s["name"] in RESERVED:
            raise ValueError(f"{options_cls.__name__}.{s['name']}: the name is taken by a common argument")
        kw = {"dest": s["name"], "default": s["default"], "help": s["help"]}
        if s["negatable"]:
            kw["action"] = argparse.BooleanOptionalAction
        elif isinstance(s["default"], bool):
            kw["action"] = "store_false" if s["default"] else "store_true"
        else:
            kw.update(type=_type(s["parse"]), choices=s["choices"], metavar=s["metavar"])
        sp.add_argument(s["flag"], **kw)


def _task_parsers(sp: argparse.ArgumentParser, names: tuple, what: str):
    sub = sp.add_subparsers(
        dest="task", metavar="task", required=True, parser_class=TaskParser, title=f"tasks ({', '.join(names)})"
    )
    for name in names:
        task = REGISTRY[name]
        yield (
            task,
            sub.add_parser(
                name, help=task.summary, description=f"{what} {name}: {task.summary}", formatter_class=DefaultsFormatter
            ),
        )


def add_train(sub, common) -> None:
    """``pathreview train <task>``: --data, --out, --seed, --device and the task's training options."""
    sp = sub.add_parser("train", help="train a model on a dataset folder")
    for task, tp in _task_parsers(sp, trainable(), "train"):
        tp.add_argument("--data", required=True, help="dataset folder (see docs/data-formats.md)")
        tp.add_argument("--out", required=True, help="output weights path (writes OUT.safetensors + OUT.json)")
        tp.add_argument("--seed", type=int, default=0, help="random seed (weights, data order, augmentation)")
        tp.add_argument(
            "--mpp",
            type=float,
            default=None,
            help="microns per pixel of the dataset's images (default: its dataset.json; a folder with neither is "
            "refused, except the bundled crchisto / monuseg / glas); images and annotations are resampled to the "
            "model's scale",
        )
        add_options(tp, task.train_options)
        common(tp, mpp=False)
        tp.set_defaults(func=cmd_train)


def add_evaluate(sub, common) -> None:
    """``pathreview evaluate <task>``: --data, --split, --weights, --json, --mpp, --device and the task's
    evaluation options."""
    sp = sub.add_parser("evaluate", help="score a model against a dataset's annotations")
    for task, tp in _task_parsers(sp, evaluable(), "evaluate"):
        tp.add_argument("--data", required=True)
        tp.add_argument("--split", default="validation", help="the dataset split to score")
        tp.add_argument("--weights", default=None, help="model name or weights path (default: shipped)")
        tp.add_argument("--json", action="store_true", help="print one JSON object as the last line only")
        add_options(tp, task.eval_options)
        common(tp)
        tp.set_defaults(func=cmd_evaluate)
