"""'Explain' dock widget: image layer + classifier + method + class -> heat-map Image layer(s).

Each explained class becomes an Image layer with a colormap, additive blending and the chosen
opacity, with the slide's scale and translate (aligned pixel for pixel); the class probabilities are
shown in the dock. The computation runs in the TaskWidget thread worker (progress bar, Cancel).
"""
from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QLabel, QSlider

from .base import ModelPicker, TaskWidget, layer_mpp, layer_slide

METHODS = ("gradcam", "cam", "lrp-epsilon", "lrp-gamma", "lrp-a1b0", "lrp-a2b1", "rollout")
COLORMAPS = ("inferno", "turbo", "magma", "viridis", "red")


class ExplainWidget(TaskWidget):
    task = "classifier"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        picker = ModelPicker("classifier", tasks=("classifier", "vit"))
        self.form.replaceWidget(self.model, picker)
        self.model.deleteLater()
        self.model = picker
        self.method = QComboBox()
        self.method.addItems(METHODS)
        self.form.addRow("method", self.method)
        self.target = QComboBox()
        self.form.addRow("class", self.target)
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.form.addRow("colormap", self.colormap)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.valueChanged.connect(self._set_opacity)
        self.form.addRow("opacity", self.opacity)
        self.probs = QLabel("")
        self.probs.setWordWrap(True)
        self.extra.addWidget(self.probs)
        self.heat_layers: list = []
        self.model.currentTextChanged.connect(self._model_changed)
        self._model_changed()

    def model_card(self):
        from ..backend.weights import list_models

        cards = [c for t in ("classifier", "vit") for c in list_models(t) if c.name == self.model.currentText()]
        return cards[0] if cards else None

    def _model_changed(self, *_):
        card = self.model_card()
        self.target.clear()
        self.target.addItems(["all"] + (list(card.classes) if card else []))
        if card is not None and card.task == "vit":
            self.method.setCurrentText("rollout")
        elif self.method.currentText() == "rollout":
            self.method.setCurrentText("gradcam")

    def _set_opacity(self, *_):
        for ly in self.heat_layers:
            if ly in self.viewer.layers:
                ly.opacity = self.opacity.value() / 100.0

    def job(self):
        from ..backend import pipelines

        layer = self.selected_image()
        mpp = layer_mpp(layer, self.mpp.value())
        slide = layer_slide(layer, mpp)
        model, device = self.model.currentText() or None, self.device.currentText()
        method, target = self.method.currentText(), self.target.currentText()
        classes = None if target in ("", "all") else [target]
        cmap, opacity = self.colormap.currentText(), self.opacity.value() / 100.0

        def fn(progress, cancel):
            return pipelines.explain(slide, model, method, classes=classes, mpp=mpp, device=device,
                                     progress=progress, cancel=cancel, name=layer.name)

        def done(res):
            from ..backend.explain import display_range

            scale = np.asarray(layer.scale[-2:], float)
            translate = np.asarray(layer.translate[-2:], float)
            if res.downsample != 1:  # model-grid maps of a huge slide: pixel centres line up
                translate = translate + (res.downsample - 1) / 2 * scale
                scale = scale * res.downsample
            self.heat_layers = []
            for k, cls in enumerate(res.targets):
                heat = res.maps[k]
                self.heat_layers.append(self.viewer.add_image(
                    heat, name=f"{layer.name} {res.method} {cls}", colormap=cmap, blending="additive",
                    opacity=opacity, contrast_limits=(0.0, display_range(heat)), gamma=0.5, scale=scale,
                    translate=translate,
                    metadata={"method": res.method, "class": cls, "model": res.model, "mpp": res.mpp}))
            self.probs.setText("<br>".join(f"{c}: <b>{p:.3f}</b>" for c, p in zip(res.classes, res.probs)))
            best = res.classes[int(np.argmax(res.probs))]
            self.status.setText(f"{res.method}: {len(res.targets)} map(s); most likely {best}")

        return fn, done
