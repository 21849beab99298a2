"""The docks' task-parameter rows, built with magicgui from a typed dataclass and remembered across sessions.

A dock declares its parameters as a list of :class:`Param` (a field of the options dataclass it hands its
pipeline, or a dock-only setting such as a colour map, with the label and tooltip in the dock's words and
magicgui's widget options: min / max / step / choices) and builds a :class:`ParamForm` from it::

    self.params = ParamForm("detect", DetectOptions, DETECT_PARAMS)
    self.params.add_rows(self.form)                      # the rows join the dock's form, one label column
    options = self.params.options(weights=..., device=...)   # -> DetectOptions filled from the rows

Each row is a magicgui value widget (``magicgui.widgets.create_widget``: a SpinBox, FloatSpinBox, CheckBox,
ComboBox or LineEdit from the field's type); ``form["tta"].value`` reads or sets it. With ``persist`` (the
default) the values are remembered as magicgui's ``persist=True`` remembers a function's arguments: pickled
in ``magicgui._util.user_cache_dir()`` (``~/.cache/magicgui`` on Linux), one file per form
(``napari_pathreview.<key>``), written on every change and read back when the dock is opened again. A value
the form no longer accepts (out of range, a choice that is gone) is left at its default. The file is written
at once rather than through magicgui's own debounced save, which one timer shares between every form of
the process (two forms changed within 0.2 s would lose one save).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One row of a form. ``name``: a field of the form's dataclass (or a dock-only setting, not passed to
    it); ``label`` / ``tooltip``: the dock's words, units included (µm where the value is in microns);
    ``options``: magicgui widget options (``min``, ``max``, ``step``, ``choices``, ``text`` of a check box);
    ``annotation`` / ``default``: the widget's type and start value (None / unset: the field's type without
    ``None``, and its default); ``decimals`` / ``suffix`` / ``special``: the spin box's decimals, unit
    suffix (" µm²") and the text shown at its minimum ("all"); ``persist``: remembered across sessions."""

    name: str
    label: str
    tooltip: str = ""
    options: dict = field(default_factory=dict)
    annotation: object = None
    default: object = _MISSING
    decimals: int | None = None
    suffix: str = ""
    special: str = ""
    persist: bool = True


def persist_dir() -> Path:
    """Where the forms remember their values: magicgui's cache folder (what ``persist=True`` uses)."""
    from magicgui._util import user_cache_dir

    return Path(user_cache_dir())


def _plain_type(annotation):
    """``bool | None`` -> ``bool``: the widget's type of an optional field (None: the pipeline's default)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


_ZERO = {bool: False, int: 0, float: 0.0, str: ""}


class ParamForm:
    """The magicgui widgets of ``params`` for dataclass ``target``; ``key`` names the remembered values.
    ``start``: values that replace the defaults (e.g. a model card's tuned ones) before the remembered
    values are put back."""

    def __init__(
        self, key: str, target: type, params: Sequence[Param], persist: bool = True, start: dict | None = None
    ):
        self.key, self.target, self.params = key, target, list(params)
        self.persist = persist
        try:
            hints = typing.get_type_hints(target)
        except NameError:  # a type imported for type checkers only: give those rows an annotation
            hints = {}
        defaults = {f.name: f.default for f in dataclasses.fields(target)}
        self._fields = set(defaults)
        self.widgets = {}
        for p in self.params:
            ann = p.annotation if p.annotation is not None else _plain_type(hints.get(p.name, str))
            value = p.default if p.default is not _MISSING else defaults.get(p.name)
            if value is None or value is dataclasses.MISSING:
                value = _ZERO.get(ann)
            self.widgets[p.name] = self._widget(p, ann, value)
        self.set(**(start or {}))
        if persist:
            self.load()
        for w in self.widgets.values():
            w.changed.connect(self.save)

    @staticmethod
    def _widget(p: Param, annotation, value):
        from magicgui.widgets import create_widget

        options = {"tooltip": p.tooltip, **p.options}
        kwargs = {} if annotation is bool else {"label": p.label}  # a check box's label is its text
        w = create_widget(value=value, annotation=annotation, name=p.name, options=options, **kwargs)
        native = w.native
        if p.decimals is not None and hasattr(native, "setDecimals"):
            native.setDecimals(p.decimals)
            w.value = value  # rounded at the new decimals
        if p.suffix and hasattr(native, "setSuffix"):
            native.setSuffix(p.suffix)
        if p.special and hasattr(native, "setSpecialValueText"):
            native.setSpecialValueText(p.special)
        return w

    # ------------------------------------------------------------------ the rows
    def __getitem__(self, name: str):
        """The magicgui widget of parameter ``name`` (``.value``, ``.changed``, ``.native``)."""
        return self.widgets[name]

    def __contains__(self, name: str) -> bool:
        return name in self.widgets

    def add_rows(self, layout, names: Sequence[str] | None = None) -> None:
        """Add the rows ``names`` (default: all, in order) to a QFormLayout, each with its label."""
        for p in self.params:
            if names is None or p.name in names:
                self.label_for(p.name)  # a KeyError for a name the form does not have
                layout.addRow(p.label, self.widgets[p.name].native)

    def label_for(self, name: str) -> str:
        return next(p.label for p in self.params if p.name == name)

    # ------------------------------------------------------------------ values
    def values(self) -> dict:
        """``{name: value}`` of every row."""
        return {name: w.value for name, w in self.widgets.items()}

    def set(self, **values) -> None:
        """Set rows by name (as the user would type them; a value out of range is a ValueError)."""
        for name, value in values.items():
            self.widgets[name].value = value

    def options(self, **shared):
        """The form's dataclass: the rows that are its fields, plus ``shared`` (the dock's other rows:
        weights, device, mpp, precision, ...)."""
        kwargs = {k: v for k, v in self.values().items() if k in self._fields}
        return self.target(**{**kwargs, **shared})

    # ------------------------------------------------------------------ persistence
    @property
    def path(self) -> Path:
        """The file that remembers this form's values."""
        return persist_dir() / f"napari_pathreview.{self.key}"

    def save(self, *_) -> None:
        """Remember the rows (``persist`` ones) now: magicgui's format, written to a temporary name and renamed."""
        if not self.persist:
            return
        keep = {p.name for p in self.params if p.persist}
        data = {k: pickle.dumps(v) for k, v in self.values().items() if k in keep}
        with contextlib.suppress(OSError):  # a read-only cache folder: the values are not remembered
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            tmp.write_bytes(pickle.dumps(data))
            os.replace(tmp, self.path)

    def load(self) -> None:
        """Put the remembered values back (a value no longer accepted, or an unreadable file: the defaults)."""
        try:
            data = pickle.loads(self.path.read_bytes())
        except Exception:  # no file yet, or a damaged one: start from the defaults
            return
        keep = {p.name for p in self.params if p.persist}
        for name, raw in dict(data).items():
            if name in keep and name in self.widgets:
                with contextlib.suppress(Exception):
                    self.widgets[name].value = pickle.loads(raw)
