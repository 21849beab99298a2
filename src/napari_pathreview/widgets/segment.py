"""'Segment' dock widget: image layer -> Labels layer of nuclei (instances), aligned with the image,
with a per-instance table (area, centroid, mean intensity) in the layer's features.

Single-scale images are segmented in memory; multiscale (pyramid) layers are segmented tile by tile
into an OME-Zarr labels store in a temporary folder and shown lazily as a multiscale Labels layer. Labels
are always at the image's full resolution (level 0): tiles are resampled to the model's scale and back.

The parameter rows (``widgets/forms.py``) start at the model card's values (tile, overlap, stain
normalisation, probability threshold, minimum nucleus area in µm²) and then at the values last used;
choosing another model sets its tuned threshold and minimum area.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QComboBox

from ..backend.regions import crop_level0, segmentation_inside
from .base import TaskWidget, layer_slide, result_units
from .forms import Param, ParamForm
from .layers import labels_layer_data


@dataclass(frozen=True)
class SegmentRun:
    """What the Segment dock's form asks for, and the two jobs it runs in the worker thread: a pyramid
    tile by tile into an OME-Zarr labels store, or an image (or the box of a drawn region) in memory.
    ``tile`` / ``overlap``: model pixels; ``threshold``: foreground probability; ``min_area_um2``: µm²."""

    weights: str | list | None = None
    device: str = "cpu"
    tile: int = 512
    overlap: int = 64
    tta: bool = False
    stain_norm: bool = True
    threshold: float = 0.5
    min_area_um2: float = 4.0
    precision: str = "fp32"

    def _models(self):
        from ..backend import pipelines
        from ..backend.segmentation import SegmentParams

        models, cards = pipelines.get_models(self.weights, "segmenter", self.device)
        return (
            models,
            cards,
            SegmentParams.from_card(cards[0], threshold=self.threshold, min_area_um2=self.min_area_um2),
        )

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


PARAMS = [
    Param("tile", "tile (model px)", "tile side in model pixels", {"min": 64, "max": 4096, "step": 64}),
    Param(
        "overlap",
        "overlap (model px)",
        "overlap between neighbouring tiles, model pixels (blended: no seams)",
        {"min": 0, "max": 1024, "step": 16},
    ),
    Param("tta", "TTA", "test-time augmentation: average the 4 flips of every tile", {"text": "flips (4x slower)"}),
    Param(
        "stain_norm",
        "stain",
        "scale the hematoxylin to the model's training level: one factor per image, as the model was trained "
        "(bright-field H&E); off for other stains",
        {"text": "normalise hematoxylin"},
    ),
    Param(
        "threshold",
        "probability threshold",
        "foreground probability above which a pixel belongs to a nucleus (lower: more and larger nuclei); "
        "choosing a model sets its tuned value",
        {"min": 0.05, "max": 0.95, "step": 0.05},
        decimals=3,
    ),
    Param(
        "min_area_um2",
        "minimum size",
        "nuclei smaller than this area (µm²) are dropped; choosing a model sets its tuned value",
        {"min": 0.0, "max": 500.0, "step": 1.0},
        decimals=1,
        suffix=" µm²",
    ),
]


class SegmentWidget(TaskWidget):
    task = "segmenter"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        # the selected model's tile, stain normalisation and thresholds, then the values last used
        self.params = ParamForm("segment", SegmentRun, PARAMS, start=self._card_values())
        self.params.add_rows(self.form, ("tile", "overlap", "tta", "stain_norm"))
        self.ensemble_with = QComboBox()
        self.ensemble_with.addItems(["(none)"] + [self.model.itemText(i) for i in range(self.model.count())])
        self.ensemble_with.setToolTip("a second model to average with (mean of probabilities)")
        self.form.addRow("ensemble with", self.ensemble_with)
        self.params.add_rows(self.form, ("threshold", "min_area_um2"))
        self.model.currentTextChanged.connect(self._model_thresholds)
        self.labels_layer = None
        self._store_dir = None

    def _card_values(self) -> dict:
        """Tiles, stain normalisation and thresholds as the selected model's card gives them."""
        card = self.model_card()
        params = (card.params if card else {}) or {}
        return {
            "tile": int(params.get("tile", 512)),
            "overlap": int(params.get("overlap", 64)),
            "stain_norm": params.get("stain_reference") is not None,
            "threshold": float(params.get("threshold", 0.5)),
            "min_area_um2": float(params.get("min_area_um2", 4.0)),
        }

    def _model_thresholds(self, *_):
        """The thresholds the selected model was tuned with."""
        card = self._card_values()
        self.params.set(threshold=card["threshold"], min_area_um2=card["min_area_um2"])

    def _run_settings(self) -> SegmentRun:
        from ..backend.errors import InputError

        weights = self.model.currentText() or None
        other = self.ensemble_with.currentText()
        if other not in ("(none)", "") and other != weights:
            weights = [weights, other]
        run = self.params.options(
            weights=weights, device=self.device.currentText(), precision=self.precision.currentText()
        )
        if run.overlap * 2 >= run.tile:
            raise InputError(f"overlap {run.overlap} must be under half the tile ({run.tile})")
        return run

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
