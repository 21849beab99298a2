"""Pickers and legends the docks share: combo boxes of layers (kept in step with the layer list), of
regions and of registered models; the class legend of a cells layer; layer kinds told by ``isinstance``."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QComboBox, QVBoxLayout, QWidget


def set_items(combo: QComboBox, names: list[str], current: str = "") -> None:
    """Replace a combo box's items without emitting signals, keeping ``current`` selected when present."""
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def layer_kind(layer) -> str:
    """The kind of a napari layer: "image", "labels", "points", "shapes", "vectors", "surface" or "tracks"
    ("" for anything else, None included).

    By ``isinstance`` with napari's layer classes, never by type name: a dock opened from *Plugins* gets a
    proxied viewer whose layers are ``PublicOnlyProxy`` objects (``type(layer).__name__`` is the proxy's),
    and ``isinstance`` sees through the proxy to the layer."""
    from napari import layers as nl

    for cls in (nl.Labels, nl.Image, nl.Points, nl.Shapes, nl.Vectors, nl.Surface, nl.Tracks):
        if isinstance(layer, cls):
            return cls.__name__.lower()
    return ""


class LayerPicker(QComboBox):
    """A combo box of the viewer's layers of some types, kept in step with the layer list."""

    def __init__(self, viewer, layer_types: tuple[str, ...], parent=None):
        super().__init__(parent)
        self.viewer, self.layer_types = viewer, layer_types
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.reordered):
            ev.connect(self.refresh)
        self.refresh()

    def names(self) -> list[str]:
        """Layers of the picker's types, without level-of-detail display proxies (``widgets/lod_control.py``)."""
        return [
            ly.name
            for ly in self.viewer.layers
            if layer_kind(ly) in self.layer_types and (ly.metadata or {}).get("pathreview") != "lod-proxy"
        ]

    def refresh(self, *_):
        set_items(self, self.names(), self.currentText())

    def layer(self):
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None


class ClassLegend(QWidget):
    """The legend of a cells layer: per class a check box with its colour and count; unticking a class hides
    its cells (the layer keeps them). Each of ``callbacks`` is called when a box is toggled."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(0)
        self.boxes: list = []
        self.callbacks: list = []

    def set_classes(self, classes, colors: dict, counts=None) -> None:
        from qtpy.QtGui import QColor, QIcon, QPixmap
        from qtpy.QtWidgets import QCheckBox

        for b in self.boxes:
            self._layout.removeWidget(b)
            b.hide()
            b.deleteLater()
        self.boxes = []
        for i, c in enumerate(classes):
            n = f" ({int(counts[i])})" if counts is not None else ""
            box = QCheckBox(f"{c}{n}")
            pm = QPixmap(12, 12)
            pm.fill(QColor(colors.get(c, "#ffffff")))
            box.setIcon(QIcon(pm))
            box.setChecked(True)
            box.setToolTip(f"show or hide the {c} cells")
            box.toggled.connect(self._changed)
            self._layout.addWidget(box)
            self.boxes.append(box)

    def _changed(self, *_):
        for cb in self.callbacks:
            cb()

    def shown_classes(self) -> np.ndarray:
        """(K,) bool: the classes ticked."""
        return np.array([b.isChecked() for b in self.boxes], bool)


WHOLE_IMAGE = "(whole image)"


class RegionPicker(LayerPicker):
    """The region to run on: the whole image, or the rectangles / polygons of a Shapes layer (its selected
    shapes when some are selected, else all of them)."""

    def __init__(self, viewer, parent=None):
        super().__init__(viewer, ("shapes",), parent)
        self.setToolTip("run on the whole image, or only inside the rectangles / polygons of a Shapes layer")

    def names(self) -> list[str]:
        return [WHOLE_IMAGE, *super().names()]


def shapes_in_pixels(shapes, image) -> list[np.ndarray]:
    """The rectangles and polygons of ``shapes`` (its selected ones when any are selected) as (N, 2) (row,
    col) vertices in level-0 pixels of ``image``, through world coordinates (each layer's scale and offset)."""
    chosen = sorted(shapes.selected_data) or range(len(shapes.data))
    polys = []
    for i in chosen:
        if shapes.shape_type[i] not in ("rectangle", "polygon"):
            continue
        world = [shapes.data_to_world(v) for v in np.asarray(shapes.data[i])]
        polys.append(np.array([image.world_to_data(w) for w in world], np.float64)[:, -2:])
    return polys


class ModelPicker(QComboBox):
    """A combo box of the registered models of a task (shipped, then user weights); it re-reads the
    registry each time it opens, so weights saved by 'Train / fine-tune' appear in every widget."""

    def __init__(self, task: str, parent=None, tasks: tuple[str, ...] | None = None):
        super().__init__(parent)
        self.task = task
        self.tasks = tasks or ((task,) if task else ())
        self.refresh()

    def refresh(self, select: str | None = None):
        from ..backend.weights import list_models

        names = list(dict.fromkeys(c.name for t in self.tasks for c in list_models(t)))
        set_items(self, names, select or self.currentText())

    def showPopup(self):
        self.refresh()
        super().showPopup()


def set_shown(layer, mask) -> None:
    """Show only the points where ``mask`` is True. napari 0.9 ignores ``Points.shown`` when every axis
    is displayed (2-D), so hidden points are also made transparent (face and border alpha 0, shown ones
    alpha 1); the data, features and selection stay whole."""
    mask = np.broadcast_to(np.asarray(mask, bool), (len(layer.data),))
    layer.shown = mask
    alpha = mask.astype(np.float32)
    for attr in ("face_color", "border_color"):
        rgba = np.array(getattr(layer, attr), np.float32, copy=True)
        if len(rgba) == len(mask) and not np.array_equal(rgba[:, 3], alpha):
            rgba[:, 3] = alpha
            setattr(layer, attr, rgba)
