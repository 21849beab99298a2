"""'Train / fine-tune' dock widget: fine-tune a detector, segmenter, enhancer or classifier on the
annotations in the viewer (+ an optional dataset folder).

Training data per task (the backend turns layers into samples; see ``backend.annotations``):

- detector: the annotated region of an image layer (the bounding box of an annotation Points layer's
  cells plus a margin, at the model's µm/px; the region is taken to be annotated completely) and the
  ``train`` split of a points-dataset folder (``images/`` + ``points.csv``, at the model's µm/px).
- segmenter: the bounding box of the nuclei painted in a Labels layer (instance ids) over an image
  layer, and the ``train`` split of a masks-dataset folder (``images/`` + ``masks/`` + ``splits.csv``).
- enhancer: the same regions as the detector; the enhancer's detector runs on them and its cells are
  matched to the annotations, as ``pathreview train enhancer`` does on a points dataset.
- classifier: image layers given a class in the "image classes" table, and/or rectangles of a Shapes
  layer with a ``class`` feature over the image layer; plus the ``train`` split of a labels.csv folder.

Each runs the training function of ``pathreview train <task>`` (``backend.detection.train_detector``,
``segmentation.train_segmenter``, ``enhancement.train_enhancer``, ``classification.train_classifier``)
in a worker with epoch progress, a live loss / metric plot and Cancel; the result is saved into the
user weights folder under the "save as" name, and every widget's model list shows it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPointF, QRect, QSize, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QWidget,
)

from .base import LayerPicker, TaskWidget, layer_kind, layer_slide, set_items

TASKS = ("detector", "segmenter", "enhancer", "classifier")
MODEL_TASKS = {"classifier": ("classifier", "vit")}  # registry tasks a "start from" list shows
ANNOTATIONS = {  # layer types, form label, optional?
    "detector": (("points",), "annotations", False),
    "enhancer": (("points",), "annotations", False),
    "segmenter": (("labels",), "nuclei (Labels)", False),
    "classifier": (("shapes",), "regions (Shapes)", True),
}
FOLDERS = {
    "detector": "optional: points dataset folder (images/ + points.csv)",
    "enhancer": "optional: points dataset folder (images/ + points.csv)",
    "segmenter": "optional: masks dataset folder (images/ + masks/ + splits.csv)",
    "classifier": "optional: labels dataset folder (images/ + labels.csv)",
}
LEARNING_RATES = {"detector": 2e-4, "segmenter": 2e-4, "enhancer": 1e-4, "classifier": 3e-4}  # ~10x below scratch
METRIC_NAMES = {
    "loss": "loss",
    "det_f1": "detection F1",
    "weighted_f1": "weighted F1",
    "dice": "Dice",
    "aji": "AJI",
    "mF1": "mean F1",
    "accuracy": "accuracy",
}


class LossPlot(QWidget):
    """A small live plot per epoch: the training loss (left scale, auto) and the task's validation
    metrics (0..1): detector det_f1 / weighted_f1, segmenter dice / aji, enhancer mF1 / weighted_f1,
    classifier accuracy. The first metric of a task is its headline, :attr:`metric_key` (not named
    ``metric``: that is a QPaintDevice virtual Qt calls while painting). The legend names each series in
    words with its last value and wraps to the widget's width; the axes carry their values (loss left,
    metrics 0..1 right); a single epoch is drawn as a level across the plot."""

    SERIES = {
        "detector": (("loss", "#f58231"), ("det_f1", "#46f0f0"), ("weighted_f1", "#f032e6")),
        "segmenter": (("loss", "#f58231"), ("dice", "#46f0f0"), ("aji", "#f032e6")),
        "enhancer": (("loss", "#f58231"), ("mF1", "#46f0f0"), ("weighted_f1", "#f032e6")),
        "classifier": (("loss", "#f58231"), ("accuracy", "#46f0f0")),
    }

    def __init__(self, parent=None, task: str = "detector"):
        super().__init__(parent)
        self.rows: list[dict] = []
        self.task = task
        self.setMinimumHeight(170)

    @property
    def metric_key(self) -> str:
        return self.SERIES[self.task][1][0]

    def set_task(self, task: str):
        self.task = task
        self.clear()

    def clear(self):
        self.rows = []
        self.update()

    def add(self, row: dict):
        self.rows.append(dict(row))
        self.update()

    def series(self, key: str) -> list[float]:
        """The values of ``key`` per epoch (epochs without it, e.g. AJI on binary masks, left out)."""
        return [float(r[key]) for r in self.rows if r.get(key) is not None]

    def label(self, key: str) -> str:
        """A series' legend entry: its name in words and its last value ("weighted F1 0.806")."""
        vals = self.series(key)
        name = METRIC_NAMES.get(key, key)
        return name if not vals else f"{name} {vals[-1]:.4g}" if key == "loss" else f"{name} {vals[-1]:.3f}"

    def legend_items(self, width: int | None = None) -> list[tuple[str, str, QRect]]:
        """(key, text, rectangle) of each legend entry, laid out left to right and wrapped onto a new line
        where the next one would not fit ``width`` (the widget's): no entry is cut off in a narrow dock."""
        fm = self.fontMetrics()
        width = self.width() if width is None else width
        x, y, gap, out = 0, 0, 12, []
        for key, _ in self.SERIES[self.task]:
            text = self.label(key)
            tw = fm.horizontalAdvance(text) + 12  # a colour swatch, then the text
            if x and x + tw > width:
                x, y = 0, y + fm.height()
            out.append((key, text, QRect(x, y, tw, fm.height())))
            x += tw + gap
        return out

    def sizeHint(self):
        return QSize(260, self.minimumHeight())

    def paintEvent(self, _event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = self.fontMetrics()
        w, h = self.width(), self.height()
        colors = dict(self.SERIES[self.task])
        items = self.legend_items(w)
        for key, text, r in items:  # legend: swatch + name + last value
            p.fillRect(QRect(r.left(), r.top() + fm.height() // 2 - 3, 8, 6), QColor(colors[key]))
            p.setPen(QPen(QColor(colors[key])))
            p.drawText(r.left() + 12, r.top() + fm.ascent(), text)
        loss = self.series("loss")
        if loss:
            lo, hi = min(loss), max(loss)
            lo, hi = (lo - 0.5 * abs(lo) - 1e-3, hi + 0.5 * abs(hi) + 1e-3) if hi - lo < 1e-9 else (lo, hi)
        else:
            lo, hi = 0.0, 1.0
        ticks_l = [f"{hi:.3g}", f"{lo:.3g}"]
        left = max(fm.horizontalAdvance(t) for t in ticks_l) + 6
        right = fm.horizontalAdvance("1.0") + 6
        top = (items[-1][2].bottom() + 1 if items else 0) + fm.height() // 2 + 4
        bottom = fm.height() + 4
        pw, ph = max(1, w - left - right), max(1, h - top - bottom)
        p.setPen(QPen(QColor("#888888")))
        p.drawRect(left, top, pw, ph)
        p.setPen(QPen(QColor(colors["loss"])))  # left axis: the loss (its own range)
        p.drawText(left - 3 - fm.horizontalAdvance(ticks_l[0]), top + fm.ascent() // 2, ticks_l[0])
        p.drawText(left - 3 - fm.horizontalAdvance(ticks_l[1]), top + ph + fm.ascent() // 2, ticks_l[1])
        p.setPen(QPen(QColor("#aaaaaa")))  # right axis: the metrics, 0..1
        p.drawText(left + pw + 3, top + fm.ascent() // 2, "1.0")
        p.drawText(left + pw + 3, top + ph + fm.ascent() // 2, "0")
        n = len(self.rows)
        p.drawText(left, h - 3, "epoch 1" if n == 1 else f"epochs 1–{n}" if n else "epochs")
        x_of = lambda i: left + (pw * i / (n - 1) if n > 1 else pw / 2)
        for key, color in self.SERIES[self.task]:
            idx = [i for i, r in enumerate(self.rows) if r.get(key) is not None]
            vals = [float(self.rows[i][key]) for i in idx]
            if not vals:
                continue
            a, b = (lo, hi) if key == "loss" else (0.0, 1.0)
            pts = [QPointF(x_of(i), top + ph * (1 - (v - a) / (b - a))) for i, v in zip(idx, vals)]
            p.setPen(QPen(QColor(color), 2))
            if n == 1:  # one epoch: its value as a level across the plot (a lone dot reads as nothing)
                p.drawLine(QPointF(left + 1, pts[0].y()), QPointF(left + pw - 1, pts[0].y()))
            elif len(pts) > 1:
                p.drawPolyline(QPolygonF(pts))
            p.setBrush(QColor(color))
            for pt in pts:
                p.drawEllipse(pt, 2.5, 2.5)
            p.setBrush(Qt.BrushStyle.NoBrush)
        p.end()


class AnnotationPicker(LayerPicker):
    """A LayerPicker whose layer types follow the task, with a "(none)" entry when the layer is optional."""

    NONE = "(none)"

    def __init__(self, viewer, layer_types, parent=None):
        self.optional = False
        super().__init__(viewer, layer_types, parent)

    def set_types(self, layer_types: tuple[str, ...], optional: bool):
        self.layer_types, self.optional = layer_types, optional
        self.refresh()

    def names(self) -> list[str]:
        return ([self.NONE] if self.optional else []) + super().names()


class ImageClassTable(QTableWidget):
    """One row per image layer and a class for it ("(not used)" leaves the layer out): whole image
    layers as classifier training images. Follows the layer list; choices are kept by layer name."""

    NONE = "(not used)"

    def __init__(self, viewer, parent=None):
        super().__init__(0, 2, parent)
        self.viewer = viewer
        self.classes: list[str] = []
        self.chosen: dict[str, str] = {}
        self.setHorizontalHeaderLabels(["image layer", "class"])
        self.horizontalHeader().setStretchLastSection(True)
        self.verticalHeader().hide()
        self.setMaximumHeight(130)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.reordered):
            ev.connect(self.refresh)
        self.refresh()

    def set_classes(self, classes):
        self.classes = [str(c) for c in classes]
        self.refresh()

    def layer_names(self) -> list[str]:
        return [ly.name for ly in self.viewer.layers if layer_kind(ly) == "image"]

    def refresh(self, *_):
        from qtpy.QtWidgets import QTableWidgetItem

        names = self.layer_names()
        for i in range(self.rowCount()):  # replaced combos are deleted later: hide them now
            if self.cellWidget(i, 1) is not None:
                self.cellWidget(i, 1).hide()
        self.setRowCount(len(names))
        for i, name in enumerate(names):
            item = QTableWidgetItem(name)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.setItem(i, 0, item)
            combo = QComboBox()
            set_items(combo, [self.NONE] + self.classes, self.chosen.get(name, self.NONE))
            self.chosen[name] = combo.currentText()  # a class the model no longer has is dropped
            combo.currentTextChanged.connect(lambda text, n=name: self.chosen.__setitem__(n, text))
            self.setCellWidget(i, 1, combo)

    def set_class(self, layer_name: str, cls: str):
        """Choose ``cls`` for an image layer (what picking it in the table does)."""
        for i in range(self.rowCount()):
            if self.item(i, 0).text() == layer_name:
                self.cellWidget(i, 1).setCurrentText(cls)
                self.chosen[layer_name] = self.cellWidget(i, 1).currentText()
                return
        raise KeyError(layer_name)

    def assignments(self) -> list[tuple[str, str]]:
        """(image layer name, class) of the layers given a class, in layer-list order."""
        out = []
        for name in self.layer_names():
            cls = self.chosen.get(name, self.NONE)
            if cls != self.NONE:
                out.append((name, cls))
        return out


def _to_image_pixels(yx, layer, image) -> np.ndarray:
    """(N, 2) data coordinates of ``layer`` in ``image``'s data pixels (through world coordinates)."""
    world = np.asarray(yx, np.float64) * np.asarray(layer.scale[-2:]) + np.asarray(layer.translate[-2:])
    return (world - np.asarray(image.translate[-2:])) / np.asarray(image.scale[-2:])


class TrainWidget(TaskWidget):
    task = "detector"
    layer_types = ("image",)
    epoch_done = Signal(dict)  # emitted from the worker thread; Qt queues it to the GUI thread

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.form.labelForField(self.model).setText("start from")
        self.kind = QComboBox()
        self.kind.addItems(TASKS)
        self.form.insertRow(0, "task", self.kind)
        self.annotations = AnnotationPicker(napari_viewer, ("points",))
        self.form.addRow("annotations", self.annotations)
        self.image_classes = ImageClassTable(napari_viewer)
        self.image_classes.setToolTip("classifier: whole image layers as training images, one class each")
        self.form.addRow("image classes", self.image_classes)
        row = QHBoxLayout()
        self.folder = QLineEdit()
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
        self.lr.setValue(LEARNING_RATES["detector"])
        self.lr.setToolTip("learning rate; fine-tuning wants ~10x less than training from scratch")
        self.form.addRow("learning rate", self.lr)
        self.save_as = QLineEdit("detector-finetuned")
        self.save_as.setToolTip("name of the new weights in the user weights folder")
        self.form.addRow("save as", self.save_as)
        self.run_btn.setText("Train")
        self.plot = LossPlot()
        self.extra.addWidget(self.plot)
        self.epoch_done.connect(self._on_epoch)
        self.saved = None
        self.kind.currentTextChanged.connect(self._task_changed)
        self.model.currentTextChanged.connect(self._model_changed)
        self._task_changed(self.kind.currentText())

    # ------------------------------------------------------------ controls following the task

    def _task_changed(self, task: str):
        self.task = task
        self.model.task, self.model.tasks = task, MODEL_TASKS.get(task, (task,))
        self.model.refresh()
        types, label, optional = ANNOTATIONS[task]
        self.annotations.set_types(types, optional)
        self.form.labelForField(self.annotations).setText(label)
        for w in (self.image_classes,):
            self.form.labelForField(w).setVisible(task == "classifier")
            w.setVisible(task == "classifier")
        self.folder.setPlaceholderText(FOLDERS[task])
        self.lr.setValue(LEARNING_RATES[task])
        name = self.save_as.text().strip()
        if not name or name.endswith("-finetuned"):
            self.save_as.setText(f"{task}-finetuned")
        self.plot.set_task(task)
        self._model_changed()

    def _model_changed(self, *_):
        card = self.model_card()
        self.image_classes.set_classes(card.classes if card is not None and self.task == "classifier" else [])

    def model_card(self):
        """Card of the selected "start from" model (None when the task has no registered model)."""
        from ..backend.weights import list_models

        cards = [c for t in self.model.tasks for c in list_models(t) if c.name == self.model.currentText()]
        return cards[0] if cards else None

    def _browse(self):
        d = QFileDialog.getExistingDirectory(self, FOLDERS[self.task].replace("optional: ", ""))
        if d:
            self.folder.setText(d)

    def _on_epoch(self, row: dict):
        self.plot.add(row)
        metrics = ", ".join(
            f"{METRIC_NAMES[k]} {row[k]:.3f}" for k, _ in LossPlot.SERIES[self.task][1:] if row.get(k) is not None
        )
        self.status.setText(f"epoch {row['epoch']}: loss {row['loss']:.4f}" + (f", {metrics}" if metrics else ""))

    def _out_path(self) -> Path:
        from ..backend.errors import InputError
        from ..backend.weights import SHIPPED_DIR, list_models, user_weights_dir

        name = self.save_as.text().strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", name or ""):
            raise InputError(f"'save as' name {name!r}: use letters, digits, '.', '_' or '-' (no spaces or '/')")
        if any(c.name == name and Path(c.path).parent == SHIPPED_DIR for c in list_models()):
            raise InputError(f"'{name}' is a shipped model's name; choose another 'save as' name")
        return user_weights_dir() / name

    # ------------------------------------------------------------ the job

    def job(self):
        from ..backend.errors import InputError

        task = self.kind.currentText()
        card = self.model_card()
        if card is None:
            raise InputError(f"no {task} weights to start from; train one with `pathreview train {task}`")
        build = {
            "detector": self._detector,
            "segmenter": self._segmenter,
            "enhancer": self._enhancer,
            "classifier": self._classifier,
        }[task]
        train, note = build(card)  # reads and checks the layers
        out = self._out_path()
        folder = self.folder.text().strip()
        if folder and not Path(folder).is_dir():
            raise InputError(f"dataset folder {folder} does not exist")
        init = Path(card.path).with_suffix(".safetensors")
        kw = dict(epochs=self.epochs.value(), lr=self.lr.value(), device=self.device.currentText())
        command = f"napari Train / fine-tune {task}: {kw['epochs']} epochs, lr {kw['lr']:g}, from {card.name}" + (
            f", + {folder}" if folder else ""
        )
        self.plot.set_task(task)
        metric = self.plot.metric_key

        def fn(progress, cancel):
            new_card = train(
                out,
                folder,
                init,
                progress=progress,
                cancel=cancel,
                on_epoch=self.epoch_done.emit,
                command=command,
                **kw,
            )
            return out, new_card

        def done(result):
            path, new_card = result
            self.saved = path
            self.model.refresh(select=self.model.currentText())
            hist = new_card.training.get("history", [])
            best = new_card.training.get("best_epoch")
            value = next((r.get(metric) for r in hist if r["epoch"] == best), None)
            self.status.setText(
                f"saved '{new_card.name}' to {path}.safetensors (best epoch {best}"
                + (f", {METRIC_NAMES[metric]} on the training annotations {value:.3f}" if value is not None else "")
                + f"){note}; every widget now lists it"
            )

        return fn, done

    def _annotation_layer(self, what: str):
        from ..backend.errors import InputError

        layer = self.annotations.layer()
        if layer is None:
            raise InputError(f"pick {what}")
        return layer

    def _points(self, image):
        """The annotation Points layer's cells in ``image`` pixels, their class names, the image's mpp."""
        from ..backend.errors import InputError
        from .compare import to_pixels_of

        ann = self._annotation_layer("an annotation Points layer with annotated cells (see 'Annotate cells')")
        if len(ann.data) == 0:
            raise InputError(f"'{ann.name}' has no points; annotate cells first (see 'Annotate cells')")
        names = [str(c) for c in ann.features["class"]] if "class" in ann.features else ["unlabeled"] * len(ann.data)
        return ann, to_pixels_of(ann, image), names

    def _detector(self, card):
        from ..backend.annotations import points_sample

        image = self.selected_image()
        ann, yx, names = self._points(image)
        mpp = self.image_mpp(image)  # as every widget: typed (becomes the scale), else the file's, else refused
        data = image.data[0] if image.multiscale else image.data
        region, classes = f"{image.name}/{ann.name}", list(card.classes)
        note = ""

        def train(out, folder, init, **kw):
            from ..backend.datasets import load_points_dataset
            from ..backend.detection import train_detector

            samples = [points_sample(data, yx, names, classes, mpp, card.mpp, name=region)]
            if folder:
                samples += load_points_dataset(folder, "train", classes=classes)[0]
            crop = int(min(256, *(min(s.image.shape[:2]) for s in samples)))
            return train_detector(samples, out, init=init, crop=crop, tune_images=0, classes=classes, **kw)[1]

        return train, note

    def _enhancer(self, card):
        from ..backend.annotations import points_sample
        from ..backend.datasets import UNLABELED_NAME
        from ..backend.errors import InputError
        from ..backend.weights import resolve

        image = self.selected_image()
        ann, yx, names = self._points(image)
        classes = list(card.classes)
        unknown = sorted(set(names) - set(classes) - {UNLABELED_NAME})
        if unknown:
            raise InputError(
                f"'{ann.name}' has classes {unknown} that enhancer '{card.name}' does not know "
                f"({', '.join(classes)}); fix them or start from another enhancer"
            )
        if not any(n in classes for n in names):
            raise InputError(f"'{ann.name}': no cell has a class; the enhancer learns cell classes")
        det_card = resolve(card.params.get("detector") or "", "detector")[1]
        mpp = self.image_mpp(image)  # as every widget: typed (becomes the scale), else the file's, else refused
        data = image.data[0] if image.multiscale else image.data
        region = f"{image.name}/{ann.name}"
        note = f" (cells from detector '{det_card.name}')"

        def train(out, folder, init, epochs, lr, **kw):
            from ..backend.datasets import load_points_dataset
            from ..backend.enhancement import EnhancerTrainOptions, train_enhancer

            samples = [points_sample(data, yx, names, classes, mpp, det_card.mpp, name=region)]
            if folder:
                samples += load_points_dataset(folder, "train", classes=classes)[0]
            opt = EnhancerTrainOptions(epochs=epochs, lr=lr)
            return train_enhancer(
                samples,
                out,
                init=init,
                detector=Path(det_card.path).with_suffix(".safetensors"),
                options=opt,
                mpp=det_card.mpp,
                **kw,
            )[1]

        return train, note

    def _segmenter(self, card):
        from ..backend.errors import InputError

        image = self.selected_image()
        labels = self._annotation_layer("a Labels layer with the nuclei painted over the image (one label each)")
        mpp = self.image_mpp(image)  # as every widget: typed (becomes the scale), else the file's, else refused
        if not np.allclose(np.asarray(labels.scale[-2:]), np.asarray(image.scale[-2:]), rtol=1e-3):
            raise InputError(
                f"'{labels.name}' and '{image.name}' have different pixel sizes; paint the nuclei "
                "in a Labels layer with the image's scale"
            )
        lab = labels.data[0] if labels.multiscale else labels.data
        if isinstance(lab, np.ndarray) and not lab.any():
            raise InputError(f"'{labels.name}' is empty: paint the nuclei (one label per nucleus) first")
        offset = _to_image_pixels(np.zeros((1, 2)), labels, image)[0]
        data = image.data[0] if image.multiscale else image.data
        region = f"{image.name}/{labels.name}"

        def train(out, folder, init, epochs, lr, **kw):
            from ..backend.annotations import mask_sample
            from ..backend.segmentation import (
                MONUSEG_MPP,
                SegmenterTrainOptions,
                load_masks_dataset,
                train_segmenter,
            )

            data_mpp = MONUSEG_MPP if folder else mpp  # a masks folder is read at MoNuSeg's 0.25 µm/px
            samples = [mask_sample(data, lab, mpp, data_mpp, name=region, offset=offset)]
            tile = 256
            if folder:
                samples += load_masks_dataset(folder, "train")
            else:  # the region's 2x2 grid cells at the model's scale (MultiScaleTiles), 64..256 px
                side = min(samples[0].image.shape[:2]) / 2 * data_mpp / card.mpp
                tile = int(np.clip(round(side / 32) * 32, 64, 256))
            opts = SegmenterTrainOptions(
                epochs=epochs, lr=lr, init=init, model_mpp=card.mpp, tile=tile, tune_images=0, report_images=0
            )
            return train_segmenter(samples, out, opts, data_mpp=data_mpp, **kw)[1]

        return train, ""

    def _classifier(self, card):
        from ..backend.errors import InputError

        classes = [str(c) for c in card.classes]
        chosen = [(self.viewer.layers[n], c) for n, c in self.image_classes.assignments() if n in self.viewer.layers]
        boxes, image = [], None
        shapes = self.annotations.layer()
        if shapes is not None:
            image = self.selected_image()
            if len(shapes.data) == 0:
                raise InputError(f"'{shapes.name}' has no shapes; draw rectangles over the regions to use")
            if "class" not in shapes.features:
                raise InputError(
                    f"'{shapes.name}' has no 'class' feature; give each rectangle a class ({', '.join(classes)})"
                )
            for k, (verts, cls) in enumerate(zip(shapes.data, shapes.features["class"])):
                px = _to_image_pixels(np.asarray(verts)[:, -2:], shapes, image)
                boxes.append((f"{image.name}/{shapes.name}#{k}", str(cls), (*px.min(0), *(px.max(0) + 1))))
        names = [c for _, c in chosen] + [c for _, c, _ in boxes]
        if not names:
            raise InputError(
                "give image layers a class in 'image classes', or pick a Shapes layer of "
                "rectangles with a 'class' feature"
            )
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise InputError(f"classes {unknown} are not classes of '{card.name}' ({', '.join(classes)})")
        folder = self.folder.text().strip()
        if len(set(names)) < 2 and not folder:
            raise InputError(f"all training images are '{names[0]}': give images of at least two classes")
        whole = [(layer_slide(ly, self.image_mpp(ly)), ly.name, c) for ly, c in chosen]  # unknown mpp: refused
        img_slide = layer_slide(image, self.image_mpp(image)) if image is not None else None
        note = ""

        def train(out, folder, init, **kw):
            from ..backend.annotations import labelled_region
            from ..backend.classification import load_split, train_classifier

            samples = [labelled_region(s, c, s.mpp, card.mpp, name=n) for s, n, c in whole]
            samples += [labelled_region(img_slide, c, img_slide.mpp, card.mpp, name=n, box=b) for n, c, b in boxes]
            if folder:
                samples += load_split(folder, "train")[0]
            steps = int(np.clip(len(samples), 2, 16))
            return train_classifier(samples, out, init=init, steps_per_epoch=steps, **kw)[1]

        return train, note
