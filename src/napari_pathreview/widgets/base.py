"""What every task widget shares: layer pickers that follow the layer list, model / device / mpp
selectors, Run and Cancel, a napari progress bar, and errors shown as notifications."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .pickers import (
    WHOLE_IMAGE,
    ClassLegend,
    LayerPicker,
    ModelPicker,
    RegionPicker,
    layer_kind,
    set_items,
    set_shown,
    shapes_in_pixels,
)
from .worker import relay

# the pickers are imported from here by the docks (and by widgets/train.py)
__all__ = [
    "WHOLE_IMAGE",
    "ClassLegend",
    "LayerPicker",
    "ModelPicker",
    "RegionPicker",
    "TabifiedDock",
    "TaskWidget",
    "apply_mpp",
    "gui_words",
    "layer_kind",
    "layer_mpp",
    "layer_slide",
    "micron_units",
    "mpp_unknown_message",
    "result_units",
    "set_items",
    "set_shown",
    "shapes_in_pixels",
    "tabify_dock",
    "with_time_left",
]


def layer_mpp(layer, override: float = 0.0) -> float | None:
    """Microns per level-0 pixel of a layer: the user's value, else the reader's metadata, else None."""
    if override and override > 0:
        return float(override)
    mpp = (layer.metadata or {}).get("mpp")
    return float(mpp) if mpp else None


MPP_FIELD = "'mpp (µm/px)'"
MPP_EXAMPLES = "0.25 for 40x, 0.5 for 20x"


def mpp_unknown_message(name: str) -> str:
    """What every widget says when an image's pixel size is unknown (GUI words, not the CLI's)."""
    return f"'{name}': microns per pixel unknown; set {MPP_FIELD} ({MPP_EXAMPLES})"


def gui_words(message: str) -> str:
    """A backend message in the words of the dock: the command line's ``--mpp`` is the 'mpp (µm/px)' field."""
    import re

    message = re.sub(r"\bgive --mpp / set the layer's mpp\b", f"set {MPP_FIELD}", message)
    message = re.sub(r"\bgive --mpp( as)?", f"set {MPP_FIELD}" + r"\1", message)
    return re.sub(r"(?<![\w-])--mpp\b", MPP_FIELD, message)


def micron_units(layer) -> None:
    """Show ``layer``'s world units as µm (napari's scale bar then reads µm, not "pixel") when its scale is
    its pixel size; left as it is when napari cannot or the layer already has units of its own."""
    with contextlib.suppress(Exception):
        if all(str(u) == "pixel" for u in layer.units):
            layer.units = "um"


def result_units(layer) -> dict:
    """``{"units": ...}`` of the image layer, for the result layers drawn over it (empty when unknown)."""
    units = getattr(layer, "units", None)
    return {"units": tuple(units)[-2:]} if units is not None else {}


def apply_mpp(layer, mpp: float, viewer=None) -> bool:
    """Make ``layer``'s world units microns at ``mpp`` µm/px: its last two scale axes become ``mpp`` (the
    translate is kept on the same pixel) and ``metadata["mpp"]`` records it, as the reader does for a slide
    whose file gives its pixel size. Every result layer then carries the image's scale, and files saved from
    them (GeoJSON / CSV / OME-Zarr, which keep pixels + mpp) re-open where they were. With ``viewer``, the
    layers drawn over the image (not images; the same scale and translate as it, no pixel size of their own:
    painted labels, clicked points, shapes) are rescaled with it and stay on it. True when it changed."""
    from napari.layers import Image

    scale = np.asarray(layer.scale, float)
    meta = dict(layer.metadata or {})
    same = np.allclose(scale[-2:], mpp, rtol=1e-9) and meta.get("mpp") is not None and float(meta["mpp"]) == mpp
    if same:
        return False
    old_s, old_t = scale[-2:].copy(), np.asarray(layer.translate, float)[-2:].copy()
    companions = []
    if viewer is not None:
        for other in viewer.layers:
            if other == layer or isinstance(other, Image) or (other.metadata or {}).get("mpp"):
                continue
            s, t = np.asarray(other.scale, float)[-2:], np.asarray(other.translate, float)[-2:]
            if np.allclose(s, old_s) and np.allclose(t, old_t):
                companions.append(other)
    for ly in [layer] + companions:
        s, t = np.asarray(ly.scale, float), np.asarray(ly.translate, float)
        t[-2:] = t[-2:] / s[-2:] * mpp
        s[-2:] = mpp
        ly.scale, ly.translate = s, t
        micron_units(ly)
    meta["mpp"] = float(mpp)
    layer.metadata = meta
    return True


def layer_slide(layer, mpp: float | None):
    """An image layer (single or multiscale) as a backend Slide (no copy of the pixels)."""
    from ..backend.slides import Slide

    levels = list(layer.data) if layer.multiscale else [layer.data]
    return Slide(levels=levels, mpp=mpp, path=(layer.metadata or {}).get("path", "") or "", name=layer.name)


def with_time_left(msg: str, i: int, n: int, elapsed_s: float) -> str:
    """``msg`` and, once a step of several is done and a few seconds have passed, the time left at the pace
    so far ("tile 3/12, about 40 s left")."""
    if not msg or n <= 1 or i <= 0 or i >= n or elapsed_s < 3.0:
        return msg
    left = elapsed_s / i * (n - i)
    text = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min"
    return f"{msg}, about {text} left"


def tabify_dock(widget) -> bool:
    """Put the dock holding ``widget`` in tabs with the dock added before it in the same area of the main
    window (napari's *Plugins* menu stacks docks one above the other, and five stacked docks stretch the
    window past any screen's height). Pure Qt: the dock and the window are ``widget``'s Qt parents. True when
    it tabified; the user can still drag a tab out."""
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    dock = widget.parentWidget()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    main = dock.parentWidget() if dock is not None else None
    if dock is None or not isinstance(main, QMainWindow) or dock.isFloating():
        return False
    area = main.dockWidgetArea(dock)
    others = [
        d
        for d in main.findChildren(QDockWidget)
        if d is not dock and not d.isFloating() and main.dockWidgetArea(d) == area and not d.isHidden()
    ]
    if not others or dock in main.tabifiedDockWidgets(others[-1]):
        return False
    main.tabifyDockWidget(others[-1], dock)
    dock.show()
    dock.raise_()
    return True


class TabifiedDock(QWidget):
    """A dock widget that joins the PathReview docks of its window area as a tab (:func:`tabify_dock`)."""

    def event(self, ev):
        from qtpy.QtCore import QEvent, QTimer

        if ev.type() == QEvent.Type.ParentChange and not getattr(self, "_tabify_pending", False):
            # napari docks the widget, then adds the dock to the window: tabify once both are done
            self._tabify_pending = True
            QTimer.singleShot(0, self._tabify_once)
        return super().event(ev)

    def _tabify_once(self):
        self._tabify_pending = False
        with contextlib.suppress(RuntimeError):  # the widget was deleted meanwhile
            tabify_dock(self)


class TaskWidget(TabifiedDock):
    """Base dock widget. Subclasses add their controls to ``self.form`` and call :meth:`start`."""

    task: str = ""
    layer_types: tuple[str, ...] = ("image",)
    runs_models: bool = True  # the region and precision rows of docks that run a model on the image

    def __init__(self, napari_viewer):
        super().__init__()
        from ..backend.weights import available_devices

        self.viewer = napari_viewer
        self.worker = None
        self.cancel_event: threading.Event | None = None
        self.last_result = None
        root = QVBoxLayout(self)
        self.form = QFormLayout()
        root.addLayout(self.form)
        self.image = LayerPicker(napari_viewer, self.layer_types)
        self.form.addRow("image", self.image)
        self.model = ModelPicker(self.task)
        self.form.addRow("model", self.model)
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.form.addRow("device", self.device)
        self.region = None
        if self.runs_models and self.task in ("detector", "segmenter", "classifier"):
            self.region = RegionPicker(napari_viewer)
            self.form.addRow("region", self.region)
        self.precision = None
        if self.runs_models and self.task in ("detector", "segmenter", "enhancer", "classifier"):
            self.precision = QComboBox()
            self.precision.addItems(["fp32", "auto", "bf16", "fp16"])
            self.precision.setToolTip(
                "the network's number format (decoding stays fp32). auto: bf16 / fp16 where the device runs it "
                "natively and the model card records it as giving fp32's results (pathreview bench precision)"
            )
            self.form.addRow("precision", self.precision)
        self.mpp = QDoubleSpinBox()
        self.mpp.setRange(0.0, 100.0)
        self.mpp.setDecimals(4)
        self.mpp.setSingleStep(0.05)
        self.mpp.setSpecialValueText("from file")
        self.mpp.setToolTip("microns per pixel of the image; 'from file' uses the slide's metadata")
        self.form.addRow("mpp (µm/px)", self.mpp)
        buttons = QHBoxLayout()
        self.run_btn, self.cancel_btn = QPushButton("Run"), QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(self.cancel)
        buttons.addWidget(self.run_btn)
        buttons.addWidget(self.cancel_btn)
        root.addLayout(buttons)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        root.addWidget(self.status)
        self.extra = QVBoxLayout()
        root.addLayout(self.extra)
        root.addStretch(1)

    # subclasses implement: job() -> (fn(progress, cancel) -> result, on_result(result))
    def job(self):
        raise NotImplementedError

    def run(self):
        from napari.utils.notifications import show_error

        from ..backend.errors import InputError

        try:
            fn, on_result = self.job()
        except InputError as e:
            show_error(gui_words(str(e)))
            self.status.setText(gui_words(str(e)))
            return
        self.start(fn, on_result)

    def start(self, fn: Callable, on_result: Callable):
        """Run ``fn(progress=, cancel=)`` in a thread_worker; ``on_result`` gets its return value."""
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self.cancel_event = threading.Event()
        pbar = progress(total=0, desc=self.task or "job")
        worker = create_worker(relay, fn, self.cancel_event, _start_thread=False, _ignore_errors=True)

        cancel_event = self.cancel_event
        state = {"done": False, "t0": time.perf_counter()}

        def on_yield(item):
            if item is None or cancel_event.is_set() or state["done"]:
                return
            i, n, msg = item
            # the status first: napari's progress bar processes Qt events while it updates, and the
            # result (whose handler writes the final status) may be delivered inside that update
            self.status.setText(with_time_left(msg, i, n, time.perf_counter() - state["t0"]))
            if pbar.total != n:
                pbar.total = n
            pbar.update(i - pbar.n)
            if not state["done"]:
                pbar.set_description(msg or self.task)

        def on_done(value):
            state["done"] = True
            self.last_result = value
            on_result(value)

        worker.yielded.connect(on_yield)
        worker.returned.connect(on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(pbar.close)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.status.setText("running…")
        worker.start()
        return worker

    def cancel(self):
        if self.cancel_event is not None:
            self.cancel_event.set()
            self.status.setText("cancelling…")

    def _on_error(self, err):
        from napari.utils.notifications import show_error, show_info

        from ..backend.errors import Cancelled, InputError

        if isinstance(err, Cancelled):
            show_info(f"{self.task}: cancelled; nothing was added")
            self.status.setText("cancelled")
        elif isinstance(err, InputError):
            show_error(gui_words(str(err)))
            self.status.setText(gui_words(str(err)))
        else:
            show_error(f"{self.task} failed: {type(err).__name__}: {err}")
            self.status.setText(f"failed: {err}")

    def _on_finished(self):
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.worker = None

    def model_card(self):
        """Card of the selected model (None when no model is registered for the task)."""
        from ..backend.weights import list_models

        cards = [c for c in list_models(self.task) if c.name == self.model.currentText()]
        return cards[0] if cards else None

    def model_classes(self) -> list:
        card = self.model_card()
        return list(card.classes) if card else []

    def image_mpp(self, layer, required: bool = True) -> float | None:
        """Microns per pixel of the image ``layer``, the same way in every widget: the value typed in
        'mpp (µm/px)' (applied to the layer, see :func:`apply_mpp`, so results line up in µm), else the
        file's. Unknown: an InputError in GUI words when ``required``, else None."""
        from napari.utils.notifications import show_info

        from ..backend.errors import InputError
        from ..backend.slides import MPP_MAX, MPP_MIN

        typed = float(self.mpp.value())
        if typed > 0:
            if not MPP_MIN < typed <= MPP_MAX:
                raise InputError(
                    f"mpp {typed:g} µm/px is not plausible; set {MPP_FIELD} between {MPP_MIN:g} and "
                    f"{MPP_MAX:g} ({MPP_EXAMPLES})"
                )
            if apply_mpp(layer, typed, self.viewer):
                show_info(f"'{layer.name}' is now shown at {typed:g} µm/px (scale in µm), as its results will be")
                with contextlib.suppress(Exception):
                    self.viewer.reset_view()
            return typed
        mpp = layer_mpp(layer)
        if mpp is None and required:
            raise InputError(mpp_unknown_message(layer.name))
        if mpp is not None and np.allclose(np.asarray(layer.scale, float)[-2:], mpp, rtol=1e-6):
            micron_units(layer)  # scaled in µm (as the reader does): say so on the scale bar
        return mpp

    def selected_image(self):
        from ..backend.errors import InputError

        layer = self.image.layer()
        if layer is None:
            raise InputError("no image layer selected: open a slide (File > Open) and pick it in 'image'")
        return layer

    def selected_region(self, image, slide):
        """None for the whole image, else a ``backend.regions.Region`` in level-0 pixels of ``slide``."""
        from ..backend.regions import build_region

        shapes = self.region.layer() if self.region is not None else None
        if shapes is None:
            return None
        return build_region(shapes_in_pixels(shapes, image), slide.levels[0].shape[:2], f"region '{shapes.name}'")
