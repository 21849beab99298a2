"""'Explain' dock widget: image layer + classifier + method + class -> one heat-map Image layer per map.

A form of labelled rows (image, model, device, mpp, method, class, colormap, opacity). Each map becomes
an Image layer drawn translucent over the slide with a colormap transparent at low values (the H&E
stays visible) and a colour bar with the value range, at the slide's scale and translate (aligned pixel
for pixel). Attention rollout is class-agnostic: one layer. A map with nothing to show (no positive
value, e.g. LRP alpha-beta for a class the model rejects) is not added; a notification says why. The
class probabilities are shown in the dock. The computation runs in the TaskWidget thread worker
(progress bar, Cancel).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSlider, QWidget

from ..backend.pipelines import ExplainOptions
from .base import TaskWidget, layer_slide
from .forms import Param, ParamForm
from .layers import has_evidence, heat_layer_data, named_heat_colormap

METHODS = ("gradcam", "cam", "lrp-epsilon", "lrp-gamma", "lrp-a1b0", "lrp-a2b1", "rollout")
COLORMAPS = ("inferno", "turbo", "magma", "viridis", "red")
CLASS_AGNOSTIC = ("rollout",)
PARAMS = [  # method: ExplainOptions.method; colormap: the heat layers' (dock only)
    Param(
        "method",
        "method",
        "CAM / Grad-CAM / LRP for a CNN classifier; attention rollout for a ViT",
        {"choices": METHODS},
    ),
    Param("colormap", "colormap", "colour map of the heat layers", {"choices": COLORMAPS}, str, "inferno"),
]


def empty_map_message(image: str, method: str, cls: str, prob: float | None) -> str:
    """Why a map is empty, in words a user can act on."""
    p = "" if prob is None else f", p = {prob:.3f}"
    return (
        f"Empty map, not added: {method} for '{cls}' on '{image}'. No pixel carries positive evidence "
        f"for '{cls}' (its relevance is all negative: evidence against it{p}); lrp-epsilon or gradcam "
        f"show the evidence against it."
    )


class ExplainWidget(TaskWidget):
    task = "classifier"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.model.tasks = ("classifier", "vit")  # CNN classifiers and ViTs (rollout)
        self.model.refresh()
        self.params = ParamForm("explain", ExplainOptions, PARAMS)  # remembered across sessions
        self.params.add_rows(self.form, ("method",))
        self.target = QComboBox()  # the classes of the selected model
        self.target.setToolTip("the class to explain ('all': one map per class)")
        self.form.addRow("class", self.target)
        self.params.add_rows(self.form, ("colormap",))
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(70)
        self.opacity_value = QLabel()
        self.opacity_value.setMinimumWidth(self.opacity_value.fontMetrics().horizontalAdvance("100 %"))
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.opacity, 1)
        box.addWidget(self.opacity_value)
        self.opacity.valueChanged.connect(self._set_opacity)
        self.form.addRow("opacity", row)
        self.probs = QLabel("")
        self.probs.setWordWrap(True)
        self.extra.addWidget(self.probs)
        self.heat_layers: list = []
        self.model.currentTextChanged.connect(self._model_changed)
        self.params["method"].changed.connect(self._method_changed)
        self._model_changed()
        self._set_opacity()

    def model_card(self):
        from ..backend.weights import list_models

        cards = [c for t in self.model.tasks for c in list_models(t) if c.name == self.model.currentText()]
        return cards[0] if cards else None

    def _model_changed(self, *_):
        card = self.model_card()
        self.target.clear()
        self.target.addItems(["all"] + (list(card.classes) if card else []))
        method = self.params["method"]
        if card is not None and card.task == "vit":
            method.value = "rollout"
        elif method.value == "rollout":
            method.value = "gradcam"
        self._method_changed()

    def _method_changed(self, *_):
        agnostic = self.params["method"].value in CLASS_AGNOSTIC
        self.target.setEnabled(not agnostic)
        self.target.setToolTip(
            "attention rollout is the same for every class: one map"
            if agnostic
            else "the class to explain ('all': one map per class)"
        )

    def _set_opacity(self, *_):
        self.opacity_value.setText(f"{self.opacity.value()} %")
        for ly in self.heat_layers:
            if ly in self.viewer.layers:
                ly.opacity = self.opacity.value() / 100.0

    def job(self):
        from ..backend import pipelines

        layer = self.selected_image()
        mpp = self.image_mpp(layer)  # as every widget: typed (becomes the scale), else the file's, else refused
        slide = layer_slide(layer, mpp)
        method, target = self.params["method"].value, self.target.currentText()
        agnostic = method in CLASS_AGNOSTIC
        classes = None if agnostic or target in ("", "all") else [target]
        options = self.params.options(
            weights=self.model.currentText() or None,
            classes=(classes or [0]) if agnostic else classes,
            mpp=mpp,
            device=self.device.currentText(),
            precision=self.precision.currentText(),
        )
        cmap, opacity = self.params["colormap"].value, self.opacity.value() / 100.0
        scale0, translate0 = np.asarray(layer.scale[-2:], float), np.asarray(layer.translate[-2:], float)
        name, units = layer.name, getattr(layer, "units", None)
        region = self.selected_region(layer, slide)
        image = slide
        if region is not None:  # the box around the drawn shapes, its maps placed over it
            from ..backend.regions import crop_level0

            image = crop_level0(slide.levels, region)
            translate0 = translate0 + region.offset * scale0

        def fn(progress, cancel):
            return pipelines.explain(image, options, progress=progress, cancel=cancel, name=name)

        def done(res):
            self.add_heat_layers(res, name, scale0, translate0, cmap, opacity, agnostic, units)

        return fn, done

    def add_heat_layers(self, res, name, scale, translate, cmap, opacity, agnostic=False, units=None):
        """One translucent Image layer per map with something to show, each with its colour bar; a
        notification for each empty map."""
        from napari.utils.notifications import show_warning

        from ..backend.explain import display_range

        if res.downsample != 1:  # model-grid maps of a huge slide: pixel centres line up
            translate = translate + (res.downsample - 1) / 2 * scale
            scale = scale * res.downsample
        probs = dict(zip(res.classes, (float(p) for p in res.probs)))
        maps = [(res.maps[0], "attention")] if agnostic else list(zip(res.maps, res.targets))
        colormap = named_heat_colormap(cmap)
        self.heat_layers, empty, ranges = [], [], []
        for heat, cls in maps:
            if not has_evidence(heat):
                empty.append(cls)
                show_warning(empty_map_message(name, res.method, cls, probs.get(cls)))
                continue
            hi = display_range(heat)
            ranges.append(f"{cls} 0–{hi:.3g}")
            data, kwargs, _ = heat_layer_data(
                heat,
                f"{name} {res.method} {cls}",
                colormap,
                scale=scale,
                translate=translate,
                contrast_limits=(0.0, hi),
                opacity=opacity,
                gamma=0.5,
                metadata={"method": res.method, "class": cls, "model": res.model, "mpp": res.mpp},
                units=units,
            )
            ly = self.viewer.add_image(data, **kwargs)
            ly.colorbar.visible = True
            self.heat_layers.append(ly)
        self.probs.setText("<br>".join(f"{c}: <b>{p:.3f}</b>" for c, p in probs.items()))
        best = res.classes[int(np.argmax(res.probs))]
        msg = f"{res.method}: {len(self.heat_layers)} map(s); most likely {best}"
        if ranges:
            msg += "; colour bar range " + ", ".join(ranges)
        if empty:
            msg += "; empty (no positive evidence), not added: " + ", ".join(empty)
        self.status.setText(msg)
