"""'Detect cells' dock widget: image layer -> Points layer coloured by class, with a live score filter.

A layer of more than 50 000 cells gets level of detail (``widgets/lod_control.py``): a class-colour density
image when zoomed out, the in-view cells when zoomed in; the layer itself keeps every cell.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QSlider, QWidget

from ..backend.pipelines import DetectOptions
from ..backend.regions import cells_inside, crop_level0
from .base import ClassLegend, TaskWidget, layer_slide, result_units, set_shown
from .forms import Param, ParamForm
from .layers import points_layer_data
from .lod_control import attach_lod

PARAMS = [
    Param(
        "tta",
        "TTA",
        "test-time augmentation: average the 8 rotations / flips of every tile",
        {"text": "rotations and flips (8x slower)"},
    ),
]


class DetectWidget(TaskWidget):
    task = "detector"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.score = QSlider(Qt.Orientation.Horizontal)
        self.score.setRange(0, 100)
        self.score.setValue(0)
        self.score.setToolTip("hide cells whose detection score is below this value (the layer keeps them all)")
        self.score_value = QLabel("0.00")
        self.score_value.setMinimumWidth(self.score_value.fontMetrics().horizontalAdvance("0.00") + 4)
        self.score.valueChanged.connect(self.filter_scores)
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.score, 1)
        box.addWidget(self.score_value)
        self.form.addRow("min score", row)
        self.params = ParamForm("detect", DetectOptions, PARAMS)  # remembered across sessions
        self.params.add_rows(self.form)
        self.legend = ClassLegend()
        self.legend.callbacks.append(self.filter_scores)
        self.extra.addWidget(self.legend)
        self.points_layer = None

    def job(self):
        from ..backend import pipelines

        layer = self.selected_image()
        mpp = self.image_mpp(layer)  # a typed value becomes the image's scale: results line up in µm
        slide = layer_slide(layer, mpp)
        region = self.selected_region(layer, slide)
        options = self.params.options(
            weights=self.model.currentText() or None,
            mpp=mpp,
            device=self.device.currentText(),
            precision=self.precision.currentText(),
        )
        options = dataclasses.replace(options, tta=options.tta or None)  # unticked: the model card's choice

        def fn(progress, cancel):
            # a drawn region: the box around its shapes is detected, then the cells inside the shapes kept
            image = slide if region is None else crop_level0(slide.levels, region)
            cells = pipelines.detect(
                image,
                options,
                progress=progress,
                cancel=cancel,
                name=layer.name,
            )
            return cells if region is None else cells_inside(cells, region)

        def done(points):

            data, kwargs, _ = points_layer_data(
                points, f"{layer.name} cells", scale=layer.scale[-2:], translate=layer.translate[-2:]
            )
            self.points_layer = self.viewer.add_points(data, **kwargs, **result_units(layer))
            attach_lod(self.viewer, self.points_layer)  # > 50 000 cells: density image when zoomed out
            counts = np.bincount(points.labels, minlength=len(points.classes)) if len(points) else None
            self.legend.set_classes(points.classes, kwargs["metadata"]["colors"], counts)
            self.status.setText(
                f"{len(points)} cells" + ("" if len(points) else " (none found)") + self._adaptation_words(points)
            )
            self.filter_scores()

        return fn, done

    def _adaptation_words(self, points) -> str:
        """Status words for what the card's per-image rules changed for this image ('' when nothing)."""
        card = self.model_card()
        t, t0 = points.threshold, ((card.params if card else None) or {}).get("threshold")
        words = ["model adapted to this image, unlike its training data"] if points.adapted else []
        if t is not None and t0 is not None and t < t0:
            words.append(f"score ≥ {t:.2f} here: many nuclei scored below the model's {t0:.2f}")
        return f" ({'; '.join(words)})" if words else ""

    def filter_scores(self, *_):
        self.score_value.setText(f"{self.score.value() / 100:.2f}")
        layer = self.points_layer
        if layer is None or layer not in self.viewer.layers or len(layer.data) == 0:
            return
        keep = np.asarray(layer.features["score"]) >= self.score.value() / 100.0
        classes = list((layer.metadata or {}).get("classes") or [])
        ticked = self.legend.shown_classes()
        if len(ticked) == len(classes) and not ticked.all():  # the classes unticked in the legend are hidden
            hidden = [c for c, t in zip(classes, ticked) if not t]
            keep &= ~np.isin(np.asarray(layer.features["class"]).astype(str), hidden)
        set_shown(layer, keep)
