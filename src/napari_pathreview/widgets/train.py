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

The task list is the task registry's (``backend.tasks``); a task this dock cannot build training data for
(no row in :data:`VIEWER`) is listed, greyed, with the command that trains it. Each runs a fine-tune recipe
of ``backend.finetune`` (the training function of ``pathreview train <task>`` on the samples) in a worker
with epoch progress, a live loss / metric plot and Cancel; the result is saved into the user weights folder
under the "save as" name, and every widget's model list shows it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QTableWidget

from ..backend.errors import InputError
from ..backend.finetune import LEARNING_RATES, FineTune, check_folder, save_path
from ..backend.tasks import REGISTRY, TrainRun, trainable
from .base import LayerPicker, TaskWidget, layer_kind, layer_slide, set_items
from .forms import Param, ParamForm
from .loss_plot import METRIC_NAMES, LossPlot

__all__ = ["VIEWER", "AnnotationPicker", "ImageClassTable", "LossPlot", "TrainWidget", "ViewerTraining"]


@dataclass(frozen=True)
class ViewerTraining:
    """How the dock gathers a registry task's training data: the annotation layer types, their form label,
    whether that layer is optional, the dataset folder hint, and the registry tasks whose models the
    "start from" list shows (default: the task's own)."""

    layers: tuple
    label: str
    optional: bool
    folder: str
    models: tuple = ()


_POINTS_FOLDER = "optional: points dataset folder (images/ + points.csv)"
VIEWER = {  # keyed by registry task names
    "detector": ViewerTraining(("points",), "annotations", False, _POINTS_FOLDER),
    "segmenter": ViewerTraining(
        ("labels",), "nuclei (Labels)", False, "optional: masks dataset folder (images/ + masks/ + splits.csv)"
    ),
    "enhancer": ViewerTraining(("points",), "annotations", False, _POINTS_FOLDER),
    "classifier": ViewerTraining(
        ("shapes",),
        "regions (Shapes)",
        True,
        "optional: labels dataset folder (images/ + labels.csv)",
        ("classifier", "vit"),
    ),
}


PARAMS = [  # FineTune's epochs and lr (the learning rate follows the task: not remembered); save as: dock only
    Param("epochs", "epochs", "passes over the training crops", {"min": 1, "max": 1000}, int, 5),
    Param(
        "lr",
        "learning rate",
        "learning rate; fine-tuning wants ~10x less than training from scratch",
        {"min": 1e-6, "max": 1e-1, "step": 1e-4},
        float,
        LEARNING_RATES["detector"],
        decimals=6,
        persist=False,
    ),
    Param(
        "save_as",
        "save as",
        "name of the new weights in the user weights folder",
        annotation=str,
        default="detector-finetuned",
        persist=False,
    ),
]


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
    runs_models = False  # no region / precision rows: it trains on the annotated region, in float32
    layer_types = ("image",)
    epoch_done = Signal(dict)  # emitted from the worker thread; Qt queues it to the GUI thread

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.form.labelForField(self.model).setText("start from")
        self.kind = QComboBox()
        self._add_tasks()
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
        self.params = ParamForm("train", FineTune, PARAMS)  # the epochs are remembered across sessions
        self.params.add_rows(self.form)
        self.run_btn.setText("Train")
        self.plot = LossPlot()
        self.extra.addWidget(self.plot)
        self.epoch_done.connect(self._on_epoch)
        self.saved = None
        self.kind.currentTextChanged.connect(self._task_changed)
        self.model.currentTextChanged.connect(self._model_changed)
        self._task_changed(self.kind.currentText())

    def _add_tasks(self):
        """The registry's trainable tasks; those without a :data:`VIEWER` row greyed, with their command."""
        self.kind.addItems(trainable())
        for i, name in enumerate(trainable()):
            if name not in VIEWER:
                item = self.kind.model().item(i)
                item.setEnabled(False)
                item.setToolTip(f"{REGISTRY[name].summary}; not trainable from the viewer: pathreview train {name}")

    def task_names(self) -> list[str]:
        """The tasks the list shows, in its order."""
        return [self.kind.itemText(i) for i in range(self.kind.count())]

    # ------------------------------------------------------------ controls following the task

    def _task_changed(self, task: str):
        self.task = task
        spec = VIEWER.get(task)
        self.model.task, self.model.tasks = task, (spec.models if spec else ()) or (task,)
        self.model.refresh()
        self.annotations.set_types(spec.layers if spec else (), spec.optional if spec else False)
        self.form.labelForField(self.annotations).setText(spec.label if spec else "annotations")
        for w in (self.image_classes,):
            self.form.labelForField(w).setVisible(task == "classifier")
            w.setVisible(task == "classifier")
        self.folder.setPlaceholderText(spec.folder if spec else "")
        self.params.set(lr=LEARNING_RATES.get(task, self.params["lr"].value))
        name = self.params["save_as"].value.strip()
        if not name or name.endswith("-finetuned"):
            self.params.set(save_as=f"{task}-finetuned")
        self.plot.set_task(task)
        self.status.setText("" if spec else f"'{task}' is not trainable from the viewer; use `pathreview train {task}`")
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
        d = QFileDialog.getExistingDirectory(self, self.folder.placeholderText().replace("optional: ", ""))
        if d:
            self.folder.setText(d)

    def _on_epoch(self, row: dict):
        self.plot.add(row)
        metrics = ", ".join(
            f"{METRIC_NAMES[k]} {row[k]:.3f}" for k, _ in self.plot.series_of()[1:] if row.get(k) is not None
        )
        self.status.setText(f"epoch {row['epoch']}: loss {row['loss']:.4f}" + (f", {metrics}" if metrics else ""))

    # ------------------------------------------------------------ the job

    def job(self):
        task = self.kind.currentText()
        if task not in VIEWER:
            raise InputError(f"'{task}' is not trainable from the viewer; use `pathreview train {task}`")
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
        out = save_path(self.params["save_as"].value)
        folder = self.folder.text().strip()
        check_folder(folder)
        init = Path(card.path).with_suffix(".safetensors")
        epochs, lr, device = self.params["epochs"].value, self.params["lr"].value, self.device.currentText()
        command = f"napari Train / fine-tune {task}: {epochs} epochs, lr {lr:g}, from {card.name}" + (
            f", + {folder}" if folder else ""
        )
        self.plot.set_task(task)
        metric = self.plot.metric_key
        fine_tune = self.params.options(run=None, init=init)  # the form is read here, on the GUI thread

        def fn(progress, cancel):
            emit = self.epoch_done.emit  # a Qt signal: the rows reach the plot on the GUI thread
            run = TrainRun(folder, out, device=device, command=command, progress=progress, cancel=cancel, on_epoch=emit)
            return out, train(dataclasses.replace(fine_tune, run=run))

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
        layer = self.annotations.layer()
        if layer is None:
            raise InputError(f"pick {what}")
        return layer

    def _points(self, image):
        """The annotation Points layer's cells in ``image`` pixels, their class names, the image's mpp."""
        from .layers import to_pixels_of

        ann = self._annotation_layer("an annotation Points layer with annotated cells (see 'Annotate cells')")
        if len(ann.data) == 0:
            raise InputError(f"'{ann.name}' has no points; annotate cells first (see 'Annotate cells')")
        names = [str(c) for c in ann.features["class"]] if "class" in ann.features else ["unlabeled"] * len(ann.data)
        return ann, to_pixels_of(ann, image), names

    def _detector(self, card):
        from ..backend.annotations import points_sample
        from ..backend.finetune import finetune_detector

        image = self.selected_image()
        ann, yx, names = self._points(image)
        mpp = self.image_mpp(image)  # as every widget: typed (becomes the scale), else the file's, else refused
        data = image.data[0] if image.multiscale else image.data
        region, classes = f"{image.name}/{ann.name}", list(card.classes)

        def train(ft: FineTune):
            sample = points_sample(data, yx, names, classes, mpp, card.mpp, name=region)
            return finetune_detector(ft, sample, classes)

        return train, ""

    def _enhancer(self, card):
        from ..backend.annotations import points_sample
        from ..backend.finetune import check_enhancer_classes, finetune_enhancer
        from ..backend.weights import resolve

        image = self.selected_image()
        ann, yx, names = self._points(image)
        classes = list(card.classes)
        check_enhancer_classes(names, classes, ann.name, card.name)
        det_card = resolve(card.params.get("detector") or "", "detector")[1]
        mpp = self.image_mpp(image)  # as every widget: typed (becomes the scale), else the file's, else refused
        data = image.data[0] if image.multiscale else image.data
        region = f"{image.name}/{ann.name}"

        def train(ft: FineTune):
            sample = points_sample(data, yx, names, classes, mpp, det_card.mpp, name=region)
            return finetune_enhancer(ft, sample, classes, det_card)

        return train, f" (cells from detector '{det_card.name}')"

    def _segmenter(self, card):
        from ..backend.finetune import finetune_segmenter

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

        def train(ft: FineTune):
            return finetune_segmenter(ft, data, lab, mpp, offset, region, card.mpp)

        return train, ""

    def _classifier(self, card):
        from ..backend.finetune import check_classifier_classes, finetune_classifier

        classes = [str(c) for c in card.classes]
        chosen = [(self.viewer.layers[n], c) for n, c in self.image_classes.assignments() if n in self.viewer.layers]
        boxes, image = self._class_boxes(classes)
        names = [c for _, c in chosen] + [c for _, c, _ in boxes]
        check_classifier_classes(names, classes, card.name, self.folder.text().strip())
        whole = [(layer_slide(ly, self.image_mpp(ly)), ly.name, c) for ly, c in chosen]  # unknown mpp: refused
        img_slide = layer_slide(image, self.image_mpp(image)) if image is not None else None

        def train(ft: FineTune):
            from ..backend.annotations import labelled_region

            samples = [labelled_region(s, c, s.mpp, card.mpp, name=n) for s, n, c in whole]
            samples += [labelled_region(img_slide, c, img_slide.mpp, card.mpp, name=n, box=b) for n, c, b in boxes]
            return finetune_classifier(ft, samples)

        return train, ""

    def _class_boxes(self, classes) -> tuple[list, object]:
        """(name, class, (y0, x0, y1, x1) in image pixels) of the picked Shapes layer's rectangles, and the
        image layer they lie on (([], None) without a Shapes layer)."""
        shapes = self.annotations.layer()
        if shapes is None:
            return [], None
        image = self.selected_image()
        if len(shapes.data) == 0:
            raise InputError(f"'{shapes.name}' has no shapes; draw rectangles over the regions to use")
        if "class" not in shapes.features:
            raise InputError(
                f"'{shapes.name}' has no 'class' feature; give each rectangle a class ({', '.join(classes)})"
            )
        boxes = []
        for k, (verts, cls) in enumerate(zip(shapes.data, shapes.features["class"])):
            px = _to_image_pixels(np.asarray(verts)[:, -2:], shapes, image)
            boxes.append((f"{image.name}/{shapes.name}#{k}", str(cls), (*px.min(0), *(px.max(0) + 1))))
        return boxes, image
