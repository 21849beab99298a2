"""'Segment' dock widget: image layer -> Labels layer of nuclei (instances), aligned with the image,
with a per-instance table (area, centroid, mean intensity) in the layer's features.

Single-scale images are segmented in memory; multiscale (pyramid) layers are segmented tile by tile
into an OME-Zarr labels store in a temporary folder and shown lazily as a multiscale Labels layer. Labels
are always at the image's full resolution (level 0): tiles are resampled to the model's scale and back.

The probability threshold and the minimum nucleus area (µm²) start at the model's tuned values.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

from ..backend.regions import crop_level0, segmentation_inside
from .base import TaskWidget, layer_slide, result_units
from .layers import labels_layer_data


@dataclass(frozen=True)
class SegmentRun:
    """What the Segment dock's form asks for, and the two jobs it runs in the worker thread: a pyramid
    tile by tile into an OME-Zarr labels store, or an image (or the box of a drawn region) in memory."""

    weights: str | list | None
    device: str
    tile: int
    overlap: int
    tta: bool
    stain_norm: bool
    thresholds: dict
    precision: str

    def _models(self):
        from ..backend import pipelines
        from ..backend.segmentation import SegmentParams

        models, cards = pipelines.get_models(self.weights, "segmenter", self.device)
        return models, cards, SegmentParams.from_card(cards[0], **self.thresholds)

    def _at_precision(self, models, cards):
        from ..backend import pipelines

        return pipelines.at_precision(self.precision, models[0], pipelines.common_card(cards))

    def _settings(self, name: str):
        from ..backend.segmentation import SegmentSettings

        return SegmentSettings(
            tile=self.tile, overlap=self.overlap, tta=self.tta, stain_norm=self.stain_norm, level=0, name=name
        )

    def to_zarr(self, slide, store: Path, name: str):
        """fn(progress, cancel) -> (labels levels, instances table, store metadata) of ``slide`` segmented
        into ``store``; level 0: labels at the image's full resolution, whatever the model's scale."""

        def fn(progress, cancel):
            import json

            from ..backend.segmentation import read_table_csv, segment_to_zarr
            from ..backend.slides import open_slide

            models, cards, params = self._models()
            with self._at_precision(models, cards):
                segment_to_zarr(
                    slide,
                    store,
                    models,
                    cards,
                    params=params,
                    options=self._settings(name),
                    progress=progress,
                    cancel=cancel,
                )
            meta = json.loads((store / "pathreview.json").read_text())
            labels = open_slide(store)
            return (list(labels.levels), read_table_csv(store / "instances.csv"), meta)

        return fn

    def in_memory(self, slide, mpp: float, region, name: str):
        """fn(progress, cancel) -> the segmentation of ``slide`` (or of the box around ``region``'s shapes, at
        full resolution, keeping the nuclei inside them)."""

        def fn(progress, cancel):
            from ..backend.segmentation import segment

            models, cards, params = self._models()
            image = slide
            if region is not None:
                image = np.asarray(crop_level0(slide.levels, region))
            with self._at_precision(models, cards):
                res = segment(
                    image,
                    models,
                    cards,
                    mpp=mpp,
                    params=params,
                    options=self._settings(name),
                    progress=progress,
                    cancel=cancel,
                )
            return res if region is None else segmentation_inside(res, region)

        return fn


class SegmentWidget(TaskWidget):
    task = "segmenter"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        card = self.model_card()
        params = (card.params if card else {}) or {}
        self.tile = QSpinBox()
        self.tile.setRange(64, 4096)
        self.tile.setSingleStep(64)
        self.tile.setValue(int(params.get("tile", 512)))
        self.tile.setToolTip("tile side in model pixels")
        self.form.addRow("tile (model px)", self.tile)
        self.overlap = QSpinBox()
        self.overlap.setRange(0, 1024)
        self.overlap.setSingleStep(16)
        self.overlap.setValue(int(params.get("overlap", 64)))
        self.overlap.setToolTip("overlap between neighbouring tiles, model pixels (blended: no seams)")
        self.form.addRow("overlap (model px)", self.overlap)
        self.tta = QCheckBox("flips (4x slower)")
        self.tta.setToolTip("test-time augmentation: average the 4 flips of every tile")
        self.form.addRow("TTA", self.tta)
        self.stain_norm = QCheckBox("normalise hematoxylin")
        self.stain_norm.setChecked(params.get("stain_reference") is not None)
        self.stain_norm.setToolTip(
            "scale the hematoxylin to the model's training level: one factor per image, as the model was trained (bright-field H&E); "
            "off for other stains"
        )
        self.form.addRow("stain", self.stain_norm)
        self.ensemble_with = QComboBox()
        self.ensemble_with.addItems(["(none)"] + [self.model.itemText(i) for i in range(self.model.count())])
        self.ensemble_with.setToolTip("a second model to average with (mean of probabilities)")
        self.form.addRow("ensemble with", self.ensemble_with)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.05, 0.95)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(3)
        self.threshold.setValue(float(params.get("threshold", 0.5)))
        self.threshold.setToolTip(
            "foreground probability above which a pixel belongs to a nucleus "
            "(lower: more and larger nuclei); starts at the model's tuned value"
        )
        self.form.addRow("probability threshold", self.threshold)
        self.min_area = QDoubleSpinBox()
        self.min_area.setRange(0.0, 500.0)
        self.min_area.setSingleStep(1.0)
        self.min_area.setDecimals(1)
        self.min_area.setValue(float(params.get("min_area_um2", 4.0)))
        self.min_area.setSuffix(" µm²")
        self.min_area.setToolTip("nuclei smaller than this area are dropped; starts at the model's tuned value")
        self.form.addRow("minimum size", self.min_area)
        self.model.currentTextChanged.connect(self._model_defaults)
        self.labels_layer = None
        self._store_dir = None

    def _model_defaults(self, *_):
        """The thresholds the selected model was tuned with."""
        card = self.model_card()
        params = (card.params if card else {}) or {}
        self.threshold.setValue(float(params.get("threshold", 0.5)))
        self.min_area.setValue(float(params.get("min_area_um2", 4.0)))

    def _run_settings(self) -> SegmentRun:
        from ..backend.errors import InputError

        weights = self.model.currentText() or None
        other = self.ensemble_with.currentText()
        if other not in ("(none)", "") and other != weights:
            weights = [weights, other]
        tile, overlap = self.tile.value(), self.overlap.value()
        if overlap * 2 >= tile:
            raise InputError(f"overlap {overlap} must be under half the tile ({tile})")
        return SegmentRun(
            weights=weights,
            device=self.device.currentText(),
            tile=tile,
            overlap=overlap,
            tta=self.tta.isChecked(),
            stain_norm=self.stain_norm.isChecked(),
            thresholds={"threshold": float(self.threshold.value()), "min_area_um2": float(self.min_area.value())},
            precision=self.precision.currentText(),
        )

    def job(self):
        layer = self.selected_image()
        mpp = self.image_mpp(layer)  # a typed value becomes the image's scale: results line up in µm
        slide = layer_slide(layer, mpp)
        region = self.selected_region(layer, slide)
        run = self._run_settings()
        if layer.multiscale and region is None:
            self._store_dir = self._store_dir or Path(tempfile.mkdtemp(prefix="pathreview-seg-"))
            store = self._store_dir / f"{layer.name.replace('/', '_')}-{id(slide)}.zarr"
            fn = run.to_zarr(slide, store, layer.name)
        else:
            fn = run.in_memory(slide, mpp, region, layer.name)
        origin = np.asarray(layer.translate[-2:], float)
        if region is not None:  # the labels of the box sit at its place over the image
            origin = origin + region.offset * np.asarray(layer.scale[-2:], float)
        name = f"{layer.name} nuclei"

        def done(result):
            translate = layer.translate[-2:] if isinstance(result, tuple) else tuple(origin)
            data, kwargs, _ = labels_layer_data(result, name, scale=layer.scale[-2:], translate=translate)
            # a new layer every run (napari numbers the name): a layer of that name may hold the user's edits
            self.labels_layer = self.viewer.add_labels(data, **kwargs, **result_units(layer))
            n = len(kwargs["features"]["index"])
            self.status.setText(f"{n} nuclei" + ("" if n else " (none found)"))

        return fn, done
