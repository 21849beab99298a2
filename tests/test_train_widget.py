"""'Train / fine-tune' for the segmenter, enhancer and classifier, in a real napari viewer on real data
(MoNuSeg nuclei masks, CRCHisto cell points, GlaS graded images): one short epoch each from the shipped
weights, the live plot, the user weights folder, every widget's model list, Cancel and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

MONUSEG_IMAGE = "TCGA-21-5784-01Z-00-DX1"  # a mask=instance image of ../shared/data/monuseg


@pytest.fixture
def user_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PATHREVIEW_WEIGHTS", str(tmp_path / "user-weights"))
    return tmp_path / "user-weights"


@pytest.fixture(scope="module")
def monuseg_sample(shared_data):
    from napari_pathreview.backend.segmentation import load_masks_dataset

    (s,) = load_masks_dataset(shared_data / "monuseg", names=[MONUSEG_IMAGE])
    assert s.instances
    return s


def _window_nuclei(labels: np.ndarray, y0: int, x0: int, side: int) -> np.ndarray:
    """The real instance mask with only the nuclei lying wholly inside a window kept (an annotated region)."""
    inside = np.zeros_like(labels, bool)
    inside[y0 : y0 + side, x0 : x0 + side] = True
    cut = np.unique(labels[~inside])
    out = np.where(inside & ~np.isin(labels, cut), labels, 0)
    assert len(np.unique(out)) > 10
    return out


def _image_layer(viewer, image, name, mpp):
    return viewer.add_image(image, name=name, rgb=True, scale=(mpp, mpp), metadata={"mpp": mpp})


def _train(w, qtbot, name, model, epochs=1):
    w.model.setCurrentText(model)
    assert w.model.currentText() == model
    w.device.setCurrentText("cpu")
    w.params["epochs"].value = epochs
    w.params["save_as"].value = name
    w.run()
    assert w.worker is not None, w.status.text()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.saved is not None, w.status.text()


def _check_saved(w, user_weights, name, task, metric, picker_widget):
    from napari_pathreview.backend.weights import list_models

    assert len(w.plot.rows) == 1 and w.plot.metric_key == metric
    row = w.plot.rows[0]
    assert row["epoch"] == 1 and np.isfinite(row["loss"]) and 0.0 <= row[metric] <= 1.0
    assert w.plot.series(metric) == [row[metric]]
    assert not w.plot.grab().isNull()  # paints the task's series (an exception in paintEvent fails the test)
    out = user_weights / name
    assert out.with_suffix(".safetensors").stat().st_size > 0
    card = json.loads(out.with_suffix(".json").read_text())
    training = card["training"]
    assert card["name"] == name and card["task"] == task
    assert training.get("epochs", training.get("options", {}).get("epochs")) == 1 and training["best_epoch"] == 1
    assert card["training"]["data"].startswith("in-memory: ") and card["training"]["init"].endswith(".safetensors")
    assert name in [c.name for c in list_models(task)]
    picker_widget.model.showPopup()
    picker_widget.model.hidePopup()
    assert name in [picker_widget.model.itemText(i) for i in range(picker_widget.model.count())]
    return card


def test_fine_tune_segmenter_on_painted_nuclei(make_napari_viewer, open_dock, qtbot, monuseg_sample, user_weights):
    """Real MoNuSeg image + its real instance mask restricted to a 160 px window (the annotated region)."""

    s = monuseg_sample
    viewer = make_napari_viewer()
    _image_layer(viewer, s.image, "monuseg", 0.25)
    viewer.add_labels(_window_nuclei(s.labels, 420, 380, 160), name="my nuclei", scale=(0.25, 0.25))
    segment = open_dock(viewer, "segment")  # opened before training: its list re-reads the registry
    w = open_dock(viewer, "train")
    w.kind.setCurrentText("segmenter")
    assert w.annotations.currentText() == "my nuclei" and w.plot.metric_key == "dice"
    _train(w, qtbot, "segmenter-test", "segmenter-monuseg")
    card = _check_saved(w, user_weights, "segmenter-test", "segmenter", "dice", segment)
    assert card["mpp"] == 0.5 and card["classes"] == ["nucleus"]
    # the region (window + 4 µm margin, <= 192 px at 0.25 µm/px) seen with its 2x2 cells near the model's scale
    assert card["training"]["tile"] == 64
    assert "aji" in w.plot.rows[0] and "Dice" in w.status.text()


def test_fine_tune_enhancer_on_annotated_cells(make_napari_viewer, open_dock, qtbot, val_sample, user_weights):
    """Real CRCHisto image + its real cell annotations as a Points layer with a class feature."""
    from napari_pathreview.backend.points import CellPoints
    from napari_pathreview.widgets.layers import points_layer_data

    sample, classes = val_sample
    cl = classes + ["unlabeled"]
    labels = np.where(sample.labels < 0, len(classes), sample.labels)
    pts = CellPoints(
        sample.yx, labels, np.ones(len(labels), np.float32), np.eye(len(cl), dtype=np.float32)[labels], cl, 0.55
    )
    viewer = make_napari_viewer()
    _image_layer(viewer, sample.image, "crchisto", 0.55)
    data, kwargs, _ = points_layer_data(pts, "my cells")
    viewer.add_points(data, **kwargs)
    w = open_dock(viewer, "train")
    w.kind.setCurrentText("enhancer")
    assert w.annotations.currentText() == "my cells"
    _train(w, qtbot, "enhancer-test", "enhancer-crchisto")
    card = _check_saved(w, user_weights, "enhancer-test", "enhancer", "mF1", open_dock(viewer, "enhance"))
    assert card["classes"] == classes and card["params"]["detector"] == "detector-crchisto"
    assert "detector-crchisto" in w.status.text()


def test_fine_tune_classifier_on_graded_images(make_napari_viewer, open_dock, qtbot, shared_data, user_weights):
    """Two real GlaS train images: a benign one given its class in the image-class table, a malignant one
    through a rectangle of a Shapes layer with a class feature."""
    import csv

    from skimage.io import imread

    rows = [r for r in csv.DictReader(open(shared_data / "glas" / "labels.csv")) if r["split"] == "train"]
    benign = next(r["image"] for r in rows if r["grade"] == "benign")
    malignant = next(r["image"] for r in rows if r["grade"] == "malignant")
    viewer = make_napari_viewer()
    _image_layer(viewer, imread(shared_data / "glas" / "images" / f"{benign}.jpg"), benign, 0.62)
    m = _image_layer(viewer, imread(shared_data / "glas" / "images" / f"{malignant}.jpg"), malignant, 0.62)
    h, w_ = m.data.shape[:2]
    rect = np.array([[0, 0], [0, w_ // 2], [h // 2, w_ // 2], [h // 2, 0]], float) * 0.62  # world µm
    viewer.add_shapes([rect], shape_type="rectangle", name="regions", features={"class": ["malignant"]})
    w = open_dock(viewer, "train")
    w.kind.setCurrentText("classifier")
    w.model.setCurrentText("classifier-glas")
    w.image.setCurrentText(malignant)
    assert w.annotations.currentText() == "(none)"  # an optional layer: none until picked
    w.annotations.setCurrentText("regions")
    w.image_classes.set_class(benign, "benign")
    assert w.image_classes.assignments() == [(benign, "benign")]
    _train(w, qtbot, "classifier-test", "classifier-glas")
    card = _check_saved(w, user_weights, "classifier-test", "classifier", "accuracy", open_dock(viewer, "explain"))
    assert card["classes"] == ["benign", "malignant"] and card["mpp"] == 1.24
    assert card["params"]["input_mpp"] == 0.62 and len(card["params"]["thresholds"]) == 2
    assert card["training"]["tune_images"] == [benign, f"{malignant}/regions#0"]


@pytest.mark.slow
def test_cancel_mid_training_saves_nothing_and_the_widget_trains_again(
    make_napari_viewer, open_dock, qtbot, monuseg_sample, user_weights
):

    s = monuseg_sample
    viewer = make_napari_viewer()
    _image_layer(viewer, s.image, "monuseg", 0.25)
    viewer.add_labels(_window_nuclei(s.labels, 420, 380, 128), name="nuclei", scale=(0.25, 0.25))
    w = open_dock(viewer, "train")
    w.kind.setCurrentText("segmenter")
    w.device.setCurrentText("cpu")
    w.params["epochs"].value = 100
    w.params["save_as"].value = "never-saved"
    w.run()
    qtbot.waitUntil(lambda: len(w.plot.rows) >= 1, timeout=120_000)  # mid-training: an epoch is done
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.text() == "cancelled" and w.saved is None and len(w.plot.rows) < 100
    assert not list(user_weights.glob("never-saved*"))
    assert w.run_btn.isEnabled() and not w.cancel_btn.isEnabled()
    _train(w, qtbot, "after-cancel", "segmenter-monuseg")
    assert len(w.plot.rows) == 1 and (user_weights / "after-cancel.safetensors").exists()


def _refused(w, *fragments):
    """Run; the job must be refused before any worker starts, with a one-line message naming the problem."""
    w.run()
    text = w.status.text()
    assert w.worker is None and "\n" not in text, text
    for f in fragments:
        assert f in text, text


def test_segmenter_bad_input(make_napari_viewer, open_dock, monuseg_sample, user_weights):

    s = monuseg_sample
    viewer = make_napari_viewer()
    img = viewer.add_image(s.image[:200, :200], name="no mpp", rgb=True)
    viewer.add_points(np.array([[10.0, 10.0]]), name="cells")  # a layer of the wrong type
    w = open_dock(viewer, "train")
    w.kind.setCurrentText("segmenter")
    _refused(w, "Labels layer")
    viewer.add_labels(np.zeros((200, 200), np.int32), name="empty")
    _refused(w, "microns per pixel unknown")
    img.metadata["mpp"] = 0.25
    _refused(w, "'empty' is empty")
    viewer.layers["empty"].data = s.labels[:200, :200].astype(np.int32)
    w.params["save_as"].value = "segmenter-monuseg"
    _refused(w, "shipped model's name")
    w.params["save_as"].value = "a b/c"
    _refused(w, "save as")
    assert not user_weights.exists() or not list(user_weights.iterdir())


def test_enhancer_bad_input(make_napari_viewer, open_dock, val_sample, user_weights):

    sample, classes = val_sample
    viewer = make_napari_viewer()
    _image_layer(viewer, sample.image, "crchisto", 0.55)
    w = open_dock(viewer, "train")
    w.kind.setCurrentText("enhancer")
    _refused(w, "annotation Points layer")
    yx = sample.yx[:20] * 0.55
    viewer.add_points(yx, name="no classes", scale=(1, 1))
    _refused(w, "no cell has a class")
    viewer.add_points(yx, name="odd classes", features={"class": ["epithelial"] * 10 + ["tumour"] * 10})
    w.annotations.setCurrentText("odd classes")
    _refused(w, "['tumour']", "enhancer-crchisto")
    assert not user_weights.exists() or not list(user_weights.iterdir())


def test_classifier_bad_input(make_napari_viewer, open_dock, shared_data, user_weights):
    from skimage.io import imread

    image = imread(shared_data / "glas" / "images" / "train_1.jpg")
    viewer = make_napari_viewer()
    _image_layer(viewer, image, "glas", 0.62)
    w = open_dock(viewer, "train")
    w.kind.setCurrentText("classifier")
    assert w.annotations.currentText() == "(none)"
    _refused(w, "image classes")
    w.image_classes.set_class("glas", "malignant")
    _refused(w, "at least two classes")
    box = np.array([[0, 0], [0, 100], [100, 100], [100, 0]], float) * 0.62
    viewer.add_shapes([box], shape_type="rectangle", name="no class")
    w.annotations.setCurrentText("no class")
    _refused(w, "'class' feature")
    viewer.add_shapes([box, box], shape_type="rectangle", name="odd", features={"class": ["benign", "cancer"]})
    w.annotations.setCurrentText("odd")
    _refused(w, "['cancer']", "classifier-glas")
    assert not user_weights.exists() or not list(user_weights.iterdir())


def _color_pixels(img, hex_color: str, tol: int = 40) -> np.ndarray:
    """Mask of the pixels of a QImage close to ``hex_color`` (antialiased text and lines included)."""
    from qtpy.QtGui import QImage

    img = img.convertToFormat(QImage.Format.Format_RGBA8888)
    arr = np.frombuffer(img.constBits().asstring(img.sizeInBytes()), np.uint8)
    arr = arr.reshape(img.height(), img.bytesPerLine() // 4, 4)[:, : img.width(), :3].astype(int)
    target = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return np.abs(arr - target).max(-1) < tol


def test_one_epoch_plot_draws_levels_and_whole_labels_in_a_narrow_dock(sample_viewer, open_dock, qtbot):
    """The Train dock from the Plugins menu after a one-epoch detector run (the epoch row as the worker
    emits it): each series is a level across the plot, not a lone dot, and every legend entry ("weighted
    F1 ...") is drawn whole at a narrow dock width as at a wide one."""
    w = open_dock(sample_viewer, "train")
    assert w.kind.currentText() == "detector"
    w.epoch_done.emit({"epoch": 1, "loss": 0.8123, "det_f1": 0.92, "weighted_f1": 0.806})
    qtbot.waitUntil(lambda: len(w.plot.rows) == 1, timeout=5_000)
    plot = w.plot
    colors = dict(plot.SERIES["detector"])
    plot.setFixedSize(240, 180)  # a narrow dock
    qtbot.wait(10)
    narrow = plot.grab().toImage()
    below = plot.legend_items(240)[-1][2].bottom() + 4 if hasattr(plot, "legend_items") else 14
    for key in ("det_f1", "weighted_f1", "loss"):
        mask = _color_pixels(narrow, colors[key])
        cols = np.flatnonzero(mask[below:].any(0))  # below the legend: the plotted series
        assert cols.size and cols.max() - cols.min() > 0.6 * plot.width(), (key, cols)
    # the legend: entries inside the widget, not overlapping; the text pixels equal those of a wide plot
    items = plot.legend_items(240)
    for k, (_, _, r) in enumerate(items):
        assert 0 <= r.left() and r.right() < 240
        assert all(not r.intersects(o) for _, _, o in items[k + 1 :])
    assert "weighted F1 0.806" in [t for _, t, _ in items]
    legend_h = items[-1][2].bottom() + 1
    n_narrow = _color_pixels(narrow, colors["weighted_f1"])[:legend_h].sum()
    plot.setFixedSize(700, 180)
    qtbot.wait(10)
    wide = plot.grab().toImage()
    n_wide = _color_pixels(wide, colors["weighted_f1"])[: plot.legend_items(700)[-1][2].bottom() + 1].sum()
    assert n_wide > 0 and n_narrow >= 0.95 * n_wide, (n_narrow, n_wide)
