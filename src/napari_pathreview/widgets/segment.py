"""'Segment' dock widget: image layer -> Labels layer of nuclei (instances), aligned with the image,
with a per-instance table (area, centroid, mean intensity) in the layer's features.

Single-scale images are segmented in memory; multiscale (pyramid) layers are segmented tile by tile
into an OME-Zarr labels store in a temporary folder and shown lazily as a multiscale Labels layer.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from qtpy.QtWidgets import QCheckBox, QComboBox, QSpinBox

from .base import TaskWidget, layer_mpp, layer_slide


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
        self.tta = QCheckBox("flip test-time augmentation (4x slower)")
        self.form.addRow("TTA", self.tta)
        self.stain_norm = QCheckBox("scale hematoxylin to the model's training level")
        self.stain_norm.setChecked(params.get("stain_reference") is not None)
        self.stain_norm.setToolTip("one factor per image, as the model was trained (bright-field H&E); "
                                   "off for other stains")
        self.form.addRow("stain", self.stain_norm)
        self.ensemble_with = QComboBox()
        self.ensemble_with.addItems(["(none)"] + [self.model.itemText(i) for i in range(self.model.count())])
        self.ensemble_with.setToolTip("a second model to average with (mean of probabilities)")
        self.form.addRow("ensemble with", self.ensemble_with)
        self.labels_layer = None
        self._store_dir = None

    def job(self):
        from ..backend import pipelines
        from ..backend.errors import InputError

        layer = self.selected_image()
        mpp = layer_mpp(layer, self.mpp.value())
        slide = layer_slide(layer, mpp)
        if mpp is None:
            raise InputError(f"{layer.name}: microns per pixel unknown; set 'mpp (µm/px)' (0.25 for 40x, 0.5 for 20x)")
        weights = self.model.currentText() or None
        other = self.ensemble_with.currentText()
        if other not in ("(none)", "") and other != weights:
            weights = [weights, other]
        device, tile, overlap, tta = self.device.currentText(), self.tile.value(), self.overlap.value(), self.tta.isChecked()
        stain_norm = self.stain_norm.isChecked()
        if overlap * 2 >= tile:
            raise InputError(f"overlap {overlap} must be under half the tile ({tile})")
        name = f"{layer.name} nuclei"

        if layer.multiscale:
            self._store_dir = self._store_dir or Path(tempfile.mkdtemp(prefix="pathreview-seg-"))
            store = self._store_dir / f"{layer.name.replace('/', '_')}-{id(slide)}.zarr"

            def fn(progress, cancel):
                import json
                from ..backend.segmentation import read_table_csv, segment_to_zarr
                from ..backend.slides import open_slide

                models, cards = pipelines._models(weights, "segmenter", device)
                segment_to_zarr(slide, store, models, cards, tile=tile, overlap=overlap, tta=tta,
                                progress=progress, cancel=cancel, name=layer.name, stain_norm=stain_norm)
                meta = json.loads((store / "pathreview.json").read_text())
                labels = open_slide(store)
                return (list(labels.levels), read_table_csv(store / "instances.csv"), meta)
        else:
            def fn(progress, cancel):
                return pipelines.segment(slide, weights, mpp=mpp, device=device, tile=tile, overlap=overlap,
                                         tta=tta, progress=progress, cancel=cancel, name=layer.name,
                                         stain_norm=stain_norm)

        def done(result):
            from ..layers import labels_layer_data

            data, kwargs, _ = labels_layer_data(result, name, scale=layer.scale[-2:],
                                                translate=layer.translate[-2:])
            # a new layer every run (napari numbers the name): a layer of that name may hold the user's edits
            self.labels_layer = self.viewer.add_labels(data, **kwargs)
            n = len(kwargs["features"]["index"])
            self.status.setText(f"{n} nuclei" + ("" if n else " (none found)"))

        return fn, done
