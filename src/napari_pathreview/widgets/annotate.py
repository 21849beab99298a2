"""'Annotate cells' dock widget: annotation Points layers with a model's classes and colours.

- *New annotation layer*: an empty Points layer aligned with the chosen image, a ``class`` feature and
  the model's class list and colours; new points get the current class.
- *Copy for correction*: a new, editable layer copied from a prediction layer (copy-on-write: the model's
  own output layer is never changed; it is hidden so the copy is what you see and edit).
- Keys ``1`` … ``K`` (bound on the annotation layer) set the class of the next points added and, in select
  mode, of the selected points. In add mode the point just placed is selected by napari, but a key does
  not re-class it: there the key only chooses the class of the next clicks. napari's mode keys P (add),
  S (select), Z (pan/zoom) keep working.
"""

from __future__ import annotations

import copy

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QGridLayout, QLabel, QPushButton, QVBoxLayout

from .base import LayerPicker, TabifiedDock
from .layers import hex_to_rgba, points_layer_data, rgba_to_hex
from .lod_control import attach_lod


def _model_cards():
    from ..backend.weights import list_models

    return list_models("detector")


class AnnotateWidget(TabifiedDock):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        root = QVBoxLayout(self)
        form = QFormLayout()
        root.addLayout(form)
        self.model = QComboBox()
        self.model.addItems([c.name for c in _model_cards()])
        self.model.currentTextChanged.connect(self._refresh_classes)
        form.addRow("classes of", self.model)
        self.image = LayerPicker(napari_viewer, ("image",))
        form.addRow("image", self.image)
        self.new_btn = QPushButton("New annotation layer")
        self.new_btn.clicked.connect(lambda: self.new_layer())
        root.addWidget(self.new_btn)
        form2 = QFormLayout()
        root.addLayout(form2)
        self.prediction = LayerPicker(napari_viewer, ("points",))
        form2.addRow("prediction", self.prediction)
        self.copy_btn = QPushButton("Copy for correction")
        self.copy_btn.setToolTip("a new editable layer copied from the prediction; the prediction is not changed")
        self.copy_btn.clicked.connect(lambda: self.copy_for_correction())
        root.addWidget(self.copy_btn)
        hint = QLabel("class of selected / next points (keys 1…K on the layer):")
        hint.setWordWrap(True)  # a narrow dock wraps it rather than cutting it off
        root.addWidget(hint)
        self.class_grid = QGridLayout()
        root.addLayout(self.class_grid)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        root.addWidget(self.status)
        root.addStretch(1)
        self.layer = None
        self._refresh_classes()

    # ---------------------------------------------------------------- classes
    def classes(self) -> tuple[list, dict]:
        """(class names, {name: hex colour}) of the active annotation layer, else of the chosen model."""
        from ..backend.weights import class_colors

        if self.layer is not None and self.layer in self.viewer.layers:
            md = self.layer.metadata
            return list(md.get("classes", [])), dict(md.get("colors", {}))
        card = next((c for c in _model_cards() if c.name == self.model.currentText()), None)
        classes = list(card.classes) if card else ["cell"]
        return classes, {**class_colors(classes), **(card.colors if card else {})}

    def _refresh_classes(self, *_):
        while self.class_grid.count():
            w = self.class_grid.takeAt(0).widget()
            if w is not None:  # off screen now: deleteLater alone leaves it drawn under the new buttons
                w.hide()
                w.setParent(None)
                w.deleteLater()
        classes, colors = self.classes()
        for k, name in enumerate(classes):
            b = QPushButton(f"{k + 1}  {name}" if k < 9 else name)
            b.setCheckable(True)  # the current class (of the next points) shows pressed
            b.setProperty("class_name", name)
            b.setStyleSheet(
                f"QPushButton {{border-left: 10px solid {colors.get(name, '#ffffff')}; text-align: left;}}"
                "QPushButton:checked {font-weight: bold; border-top: 2px solid white; "
                "border-bottom: 2px solid white; border-right: 2px solid white;}"
            )
            b.clicked.connect(lambda _=False, n=name: self.set_class(self.layer, n))
            self.class_grid.addWidget(b, k // 2, k % 2)
        self._check_current()

    def current_class(self) -> str | None:
        """The class the next points of the annotation layer get (None without a layer)."""
        if self.layer is None or self.layer not in self.viewer.layers:
            return None
        defaults = self.layer.feature_defaults  # a one-row table
        return str(defaults["class"].iloc[0]) if "class" in defaults and len(defaults) else None

    def _check_current(self):
        current = self.current_class()
        for i in range(self.class_grid.count()):
            b = self.class_grid.itemAt(i).widget()
            if b is not None:
                b.setChecked(b.property("class_name") == current)

    # ---------------------------------------------------------------- layers
    def new_layer(self, name: str = "annotations"):
        """An empty annotation layer aligned with the chosen image (or in pixels when there is none)."""
        from ..backend.points import CellPoints
        from .base import layer_mpp, micron_units, result_units

        self.layer = None
        classes, colors = self.classes()
        img = self.image.layer()
        mpp = layer_mpp(img) if img is not None else None
        if mpp is not None and np.allclose(np.asarray(img.scale, float)[-2:], mpp, rtol=1e-6):
            micron_units(img)  # scaled in µm (as Detect / Segment say once they run): the scale bar reads µm
        scale = tuple(img.scale[-2:]) if img is not None else (1.0, 1.0)
        translate = tuple(img.translate[-2:]) if img is not None else (0.0, 0.0)
        empty = CellPoints.empty(classes, mpp=mpp, colors=colors, source="annotation")
        data, kwargs, _ = points_layer_data(empty, name, scale=scale, translate=translate)
        kwargs["metadata"]["pathreview"] = "annotation"
        kwargs["face_color"] = colors.get(classes[0], "#ffffff") if classes else "#ffffff"  # napari: no (0, 4)
        layer = self.viewer.add_points(data, **kwargs, **(result_units(img) if img is not None else {}))
        self._adopt(layer)
        layer.mode = "add"
        return layer

    def copy_for_correction(self, source=None):
        """Copy-on-write: a new editable layer with the prediction's points, features, colours, scale."""
        from napari.utils.notifications import show_error

        src = source if source is not None else self.prediction.layer()
        if src is None:
            show_error("pick a prediction Points layer to copy")
            self.status.setText("no prediction layer")
            return None
        md = copy.deepcopy(dict(src.metadata))
        md.update({"pathreview": "annotation", "corrected_from": src.name})
        if "classes" not in md:
            md["classes"] = sorted({str(c) for c in src.features.get("class", [])}) or ["cell"]
        per_point = {
            "face_color": np.array(src.face_color, copy=True),
            "border_color": np.array(src.border_color, copy=True),
            "border_width": np.array(src.border_width, copy=True),
            "size": np.array(src.size, copy=True),
            "symbol": np.array(src.symbol, copy=True),
        }
        layer = self.viewer.add_points(
            np.array(src.data, copy=True),
            features=src.features.copy(deep=True),
            scale=tuple(src.scale),
            translate=tuple(src.translate),
            units=tuple(src.units),
            metadata=md,
            name=f"{src.name} (corrected)",
            **(per_point if len(src.data) else {}),
        )
        if "colors" not in md:
            cls = [str(c) for c in layer.features.get("class", [])]
            md["colors"] = {c: rgba_to_hex(layer.face_color[cls.index(c)]) for c in dict.fromkeys(cls)}
            layer.metadata["colors"] = md["colors"]
        src.visible = False
        attach_lod(self.viewer, layer)  # a copy of > 50 000 cells: density image when zoomed out
        self._adopt(layer)
        layer.mode = "select"
        self.status.setText(f"editing a copy of '{src.name}'; the prediction layer is unchanged (hidden)")
        return layer

    def _adopt(self, layer):
        """Make ``layer`` the active annotation layer: key bindings 1..K, class buttons, defaults."""
        self.layer = layer
        classes, _ = self.classes()
        for k, name in enumerate(classes[:9]):
            layer.bind_key(str(k + 1), lambda ly, n=name: self.set_class(ly, n), overwrite=True)
        self.viewer.layers.selection.active = layer
        self._refresh_classes()
        if classes:
            self.set_class(layer, classes[0], selected=False)

    def set_class(self, layer, name: str, selected: bool = True):
        """Give new points of ``layer`` the class ``name`` (and its colour); in select mode the selected
        points too. In add mode napari keeps the point just placed selected: a key pressed to choose the
        class of the next cells must not re-class it, so the selection is left alone there."""
        if layer is None:
            self.status.setText("no annotation layer: make one or copy a prediction first")
            return
        md = layer.metadata
        if name not in md.get("classes", []):
            md.setdefault("classes", []).append(name)
        color = hex_to_rgba(md.get("colors", {}).get(name, "#ffffff"))
        adding = str(layer.mode) == "add"
        sel = sorted(layer.selected_data) if selected and not adding else []
        if sel:
            feats = layer.features.copy()
            if "class" not in feats:
                feats["class"] = "cell"
            feats["class"] = feats["class"].astype(object)
            feats.loc[sel, "class"] = name
            layer.features = feats
            fc = np.array(layer.face_color, copy=True)
            fc[sel] = color
            layer.face_color = fc
        defaults = {"class": name}
        if "score" in layer.features:
            defaults["score"] = 1.0
        for c in md.get("classes", []):
            if f"p_{c}" in layer.features:
                defaults[f"p_{c}"] = 1.0 if c == name else 0.0
        keep = None  # napari recolours the selected points with the current colour: not wanted unless re-classing
        if not sel and len(layer.selected_data):
            if adding:  # napari's selection of the point just placed, not the user's: let it go
                layer.selected_data = set()
            else:
                keep = np.array(layer.face_color, copy=True)
        layer.feature_defaults = defaults
        layer.current_face_color = color
        self._check_current()
        if sel:
            # setting the current colour recolours the selection too; keep it exactly as set above
            fc = np.array(layer.face_color, copy=True)
            fc[sel] = color
            layer.face_color = fc
        elif keep is not None:
            layer.face_color = keep
        if sel:
            self.status.setText(f"class: {name} ({len(sel)} points set)")
        elif adding and selected:
            self.status.setText(f"class: {name} for the next points (select mode, key S, to re-class points)")
        else:
            self.status.setText(f"class: {name}")
