"""'Train / fine-tune' dock widget: fine-tune the detector on the annotations in the viewer.

Training data: the annotated region of an image layer (the bounding box of an annotation Points layer's
cells plus a margin, resampled to the model's µm/px; the region is taken to be annotated completely)
and, optionally, the ``train`` split of a points-dataset folder (``images/`` + ``points.csv``, at the
model's µm/px). Runs ``backend.detection.train_detector`` (the loop of ``pathreview train``) in a
worker with epoch progress, a live loss / F1 plot and Cancel; the result is saved into the user
weights folder under the "save as" name, and every widget's model list shows it.
"""
from __future__ import annotations

import re
from pathlib import Path

from qtpy.QtCore import QPointF, Signal
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton,
                            QSpinBox, QWidget)

from .base import LayerPicker, TaskWidget, layer_mpp

TASKS = [("detector", True), ("segmenter (not yet)", False), ("enhancer (not yet)", False),
         ("classifier (not yet)", False)]


class LossPlot(QWidget):
    """A small live plot: training loss (left scale, auto) and validation F1 (0..1) per epoch."""

    SERIES = (("loss", "#f58231"), ("det_f1", "#46f0f0"), ("weighted_f1", "#f032e6"))

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[dict] = []
        self.setMinimumHeight(150)

    def clear(self):
        self.rows = []
        self.update()

    def add(self, row: dict):
        self.rows.append(dict(row))
        self.update()

    def series(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.rows if key in r]

    def paintEvent(self, _event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        left, right, top, bottom = 34, 8, 16, 18
        pw, ph = max(1, w - left - right), max(1, h - top - bottom)
        p.setPen(QPen(QColor("#888888")))
        p.drawRect(left, top, pw, ph)
        n = len(self.rows)
        p.drawText(2, top + 10, "loss")
        p.drawText(left, h - 4, f"epochs: {n}")
        x_of = (lambda i: left + (pw * i / (n - 1) if n > 1 else pw / 2))
        for k, (key, color) in enumerate(self.SERIES):
            vals = self.series(key)
            p.setPen(QPen(QColor(color), 2))
            p.drawText(left + 6 + 90 * k, top - 4, key)
            if not vals:
                continue
            if key == "loss":
                lo, hi = min(vals), max(vals)
                lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)
            else:
                lo, hi = 0.0, 1.0
            pts = [QPointF(x_of(i), top + ph * (1 - (v - lo) / (hi - lo))) for i, v in enumerate(vals)]
            if len(pts) == 1:
                p.drawEllipse(pts[0], 3, 3)
            else:
                p.drawPolyline(QPolygonF(pts))
        p.end()


class TrainWidget(TaskWidget):
    task = "detector"
    layer_types = ("image",)
    epoch_done = Signal(dict)  # emitted from the worker thread; Qt queues it to the GUI thread

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.form.labelForField(self.model).setText("start from")
        self.kind = QComboBox()
        for name, enabled in TASKS:
            self.kind.addItem(name)
            self.kind.model().item(self.kind.count() - 1).setEnabled(enabled)
        self.form.insertRow(0, "task", self.kind)
        self.annotations = LayerPicker(napari_viewer, ("points",))
        self.form.addRow("annotations", self.annotations)
        row = QHBoxLayout()
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("optional: points dataset folder (train split)")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse)
        row.addWidget(self.folder)
        row.addWidget(browse)
        self.form.addRow("+ dataset", row)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(5)
        self.form.addRow("epochs", self.epochs)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1e-1)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(2e-4)
        self.lr.setToolTip("learning rate; fine-tuning wants ~10x less than training from scratch (2e-3)")
        self.form.addRow("learning rate", self.lr)
        self.save_as = QLineEdit("detector-finetuned")
        self.save_as.setToolTip("name of the new weights in the user weights folder")
        self.form.addRow("save as", self.save_as)
        self.run_btn.setText("Train")
        self.plot = LossPlot()
        self.extra.addWidget(self.plot)
        self.epoch_done.connect(self._on_epoch)
        self.saved = None

    def _browse(self):
        d = QFileDialog.getExistingDirectory(self, "points dataset folder (images/ + points.csv)")
        if d:
            self.folder.setText(d)

    def _on_epoch(self, row: dict):
        self.plot.add(row)
        self.status.setText(f"epoch {row['epoch']}: loss {row['loss']:.4f}, detection F1 {row.get('det_f1', 0):.3f}")

    def _out_path(self) -> Path:
        from ..backend.errors import InputError
        from ..backend.weights import SHIPPED_DIR, list_models, user_weights_dir

        name = self.save_as.text().strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", name or ""):
            raise InputError(f"'save as' name {name!r}: use letters, digits, '.', '_' or '-' (no spaces or '/')")
        if any(c.name == name and Path(c.path).parent == SHIPPED_DIR for c in list_models()):
            raise InputError(f"'{name}' is a shipped model's name; choose another 'save as' name")
        return user_weights_dir() / name

    def job(self):
        from ..backend.annotations import points_sample
        from ..backend.datasets import load_points_dataset
        from ..backend.errors import InputError
        from .compare import to_pixels_of

        if self.kind.currentText() != "detector":
            raise InputError(f"training a {self.kind.currentText()} from the viewer is not available yet")
        card = self.model_card()
        if card is None:
            raise InputError("no detector weights to start from; train one with `pathreview train detector`")
        image = self.selected_image()
        ann = self.annotations.layer()
        if ann is None or len(ann.data) == 0:
            raise InputError("pick an annotation Points layer with annotated cells (see 'Annotate cells')")
        out = self._out_path()
        mpp = layer_mpp(image, self.mpp.value())
        data = image.data[0] if image.multiscale else image.data
        names = [str(c) for c in ann.features["class"]] if "class" in ann.features else ["unlabeled"] * len(ann.data)
        yx, region = to_pixels_of(ann, image), f"{image.name}/{ann.name}"
        folder = self.folder.text().strip()
        init = Path(card.path).with_suffix(".safetensors")
        epochs, lr, device = self.epochs.value(), self.lr.value(), self.device.currentText()
        self.plot.clear()
        note = "" if mpp else f" (image µm/px unknown: assumed the model's {card.mpp})"

        def fn(progress, cancel):
            from ..backend.detection import train_detector

            samples = [points_sample(data, yx, names, card.classes, mpp, card.mpp, name=region)]
            if folder:
                samples += load_points_dataset(folder, "train", classes=list(card.classes))[0]
            crop = int(min(256, *(min(s.image.shape[:2]) for s in samples)))
            model, new_card = train_detector(samples, out, epochs=epochs, lr=lr, init=init, device=device,
                                             crop=crop, tune_images=0, classes=list(card.classes),
                                             progress=progress, cancel=cancel, on_epoch=self.epoch_done.emit,
                                             command=f"napari Train / fine-tune: {len(samples)} image(s), "
                                                     f"{epochs} epochs, lr {lr:g}, from {card.name}")
            return out, new_card

        def done(result):
            path, new_card = result
            self.saved = path
            self.model.refresh(select=self.model.currentText())
            hist = new_card.training.get("history", [])
            best = new_card.training.get("best_epoch")
            f1 = next((r.get("det_f1") for r in hist if r["epoch"] == best), None)
            self.status.setText(f"saved '{new_card.name}' to {path}.safetensors (best epoch {best}"
                                + (f", detection F1 on the training annotations {f1:.3f}" if f1 is not None else "")
                                + f"){note}; every widget now lists it")

        return fn, done
