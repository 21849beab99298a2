"""The Explain dock as users open it (Plugins > PathReview > Explain, pytest-qt + Xvfb): a clean form,
the image the user picks is the one explained, heat maps readable over H&E, and its start-up cost.

Each behaviour runs on GlaS images (``shared_data``; skipped without the data) and on the bundled
MoNuSeg sample tile (``sample_viewer``), so a fresh clone still covers it."""

import subprocess
import sys

import numpy as np
import pytest

INPUTS = ("QComboBox", "QAbstractSpinBox", "QAbstractSlider", "QLineEdit", "QCheckBox")


def _glas(shared_data, name="testA_22"):
    import imageio.v3 as iio

    return iio.imread(shared_data / "glas" / "images" / f"{name}.jpg")


def _run(w, qtbot, timeout=120_000):
    w.run_btn.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)


def _notifications():
    from napari.utils.notifications import notification_manager

    return notification_manager.records


# ---- the form: labelled, reachable, nothing overlapping, no stray windows -----------------------------
def _inputs(dock):
    """Visible input widgets of a dock (the line edit inside a spin box / combo box is part of it)."""
    from qtpy import QtWidgets

    kinds = tuple(getattr(QtWidgets, k) for k in INPUTS)
    found = []
    for c in dock.findChildren(QtWidgets.QWidget):
        if isinstance(c, kinds) and c.isVisibleTo(dock) and not isinstance(c.parentWidget(), kinds):
            found.append(c)
    return found


def _label_of(w, dock) -> str:
    """The text that labels input ``w``: its own text (check box), a QLabel whose buddy is it, or the
    label of the QFormLayout row holding it (or a container of it)."""
    from qtpy.QtWidgets import QCheckBox, QFormLayout, QLabel

    if isinstance(w, QCheckBox) and w.text().strip():
        return w.text()
    chain, p = [], w
    while p is not None and p is not dock.parentWidget():
        chain.append(p)
        p = p.parentWidget()
    for lab in dock.findChildren(QLabel):
        if lab.buddy() in chain and lab.isVisibleTo(dock) and lab.text().strip():
            return lab.text()
    for form in dock.findChildren(QFormLayout):
        for c in chain:
            lab = form.labelForField(c)
            if lab is not None and lab.isVisibleTo(dock) and lab.text().strip():
                return lab.text()
    return ""


def _rect(w, dock):
    from qtpy.QtCore import QPoint, QRect

    return QRect(w.mapTo(dock, QPoint(0, 0)), w.size())


def assert_clean_form(viewer, dock, qtbot):
    """Every visible input labelled, reachable by the mouse, no two overlapping, the dock fits a 1280x800
    screen, and no stray top-level window is left visible."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication, QLabel

    window = viewer.window._qt_window
    window.resize(1280, 800)
    window.show()
    qtbot.waitExposed(window)
    qtbot.waitUntil(lambda: dock.isVisible())
    QApplication.processEvents()
    inputs = _inputs(dock)
    assert len(inputs) >= 7, [type(i).__name__ for i in inputs]
    unlabelled = [type(i).__name__ for i in inputs if not _label_of(i, dock)]
    assert not unlabelled, f"inputs without a label: {unlabelled}"
    widgets = inputs + [c for c in dock.findChildren(QLabel) if c.isVisibleTo(dock) and c.text().strip()]
    for i, a in enumerate(widgets):
        for b in widgets[i + 1 :]:
            if a.isAncestorOf(b) or b.isAncestorOf(a):
                continue
            assert not _rect(a, dock).intersects(_rect(b, dock)), (
                f"{type(a).__name__} {_label_of(a, dock) or getattr(a, 'text', str)()!r} overlaps "
                f"{type(b).__name__} {_label_of(b, dock) or getattr(b, 'text', str)()!r}"
            )
    for w in inputs:  # what the mouse hits at the centre of each input is that input
        hit = dock.childAt(_rect(w, dock).center())
        assert hit is w or w.isAncestorOf(hit), f"{_label_of(w, dock)!r} is covered by {type(hit).__name__}"
    assert dock.minimumSizeHint().height() <= 700 and dock.sizeHint().width() <= 640
    stray = [
        t
        for t in QApplication.topLevelWidgets()
        if t.isVisible() and t is not window and t.windowType() not in (Qt.WindowType.Popup, Qt.WindowType.ToolTip)
    ]
    assert not stray, [(type(t).__name__, t.geometry()) for t in stray]


def test_explain_dock_is_a_clean_form_glas(make_napari_viewer, open_dock, qtbot, shared_data):
    viewer = make_napari_viewer()
    viewer.add_image(_glas(shared_data), name="glas", rgb=True, scale=(0.62, 0.62), metadata={"mpp": 0.62})
    w = open_dock(viewer, "explain")
    assert_clean_form(viewer, w, qtbot)


def test_explain_dock_is_a_clean_form(sample_viewer, open_dock, qtbot):
    w = open_dock(sample_viewer, "explain")
    assert_clean_form(sample_viewer, w, qtbot)
    assert w.model.currentText() == "classifier-glas"
    assert [w.target.itemText(i) for i in range(w.target.count())] == ["all", "benign", "malignant"]


# ---- two images: the one picked is the one explained -------------------------------------------------
def check_second_image_is_explained(viewer, w, second, qtbot):
    viewer.window._qt_window.show()
    qtbot.waitExposed(viewer.window._qt_window)
    w.device.setCurrentText("cpu")
    picker = w.image
    names = [picker.itemText(i) for i in range(picker.count())]
    assert second.name in names and len(names) >= 2
    hit = w.childAt(picker.mapTo(w, picker.rect().center()))
    assert hit is picker or picker.isAncestorOf(hit), "the image picker is covered"
    picker.setCurrentIndex(names.index(second.name))
    w.params["method"].value = "gradcam"
    w.target.setCurrentText("malignant")
    before = {ly.name for ly in viewer.layers}
    _run(w, qtbot)
    new = [ly for ly in viewer.layers if ly.name not in before]
    assert [ly.name for ly in new] == [f"{second.name} gradcam malignant"]
    assert new[0].data.shape == second.data.shape[:2]
    assert np.allclose(new[0].scale, second.scale[-2:]) and np.allclose(new[0].translate, second.translate[-2:])


def test_the_chosen_of_two_glas_images_is_explained(make_napari_viewer, open_dock, qtbot, shared_data):
    viewer = make_napari_viewer()
    viewer.add_image(
        _glas(shared_data, "testA_22"), name="testA_22", rgb=True, scale=(0.62, 0.62), metadata={"mpp": 0.62}
    )
    second = viewer.add_image(
        _glas(shared_data, "testA_2"),
        name="testA_2",
        rgb=True,
        scale=(0.62, 0.62),
        translate=(10.0, 600.0),
        metadata={"mpp": 0.62},
    )
    w = open_dock(viewer, "explain")
    check_second_image_is_explained(viewer, w, second, qtbot)


def test_the_chosen_of_two_images_is_explained(sample_viewer, open_dock, qtbot):
    tile = sample_viewer.layers[0]
    rgb = np.asarray(tile.data)[64:448:2, 32:480:2]  # a half-resolution crop: other shape, other scale
    second = sample_viewer.add_image(
        rgb,
        name="crop",
        rgb=True,
        scale=tuple(2 * np.asarray(tile.scale)),
        translate=(16.0, 8.0),
        metadata={"mpp": 0.5},
    )
    w = open_dock(sample_viewer, "explain")
    check_second_image_is_explained(sample_viewer, w, second, qtbot)


# ---- heat maps readable over H&E ---------------------------------------------------------------------
def assert_readable_heat_map(layer):
    """Translucent (additive washes pale H&E out), transparent at low values, a colour bar."""
    assert layer.blending != "additive"
    lo, hi = layer.colormap.map(np.array([0.0, 1.0], np.float32))
    assert lo[3] == 0.0 and hi[3] > 0.5
    assert layer.colorbar.visible
    assert layer.contrast_limits[1] > layer.contrast_limits[0]


def test_explain_widget_adds_aligned_readable_heat_maps_glas(make_napari_viewer, open_dock, qtbot, shared_data):
    viewer = make_napari_viewer()
    rgb = _glas(shared_data)
    image = viewer.add_image(
        rgb, name="glas", rgb=True, scale=(0.62, 0.62), translate=(100.0, 50.0), metadata={"mpp": 0.62}
    )
    w = open_dock(viewer, "explain")
    w.device.setCurrentText("cpu")
    assert w.model.currentText() == "classifier-glas"
    w.params["method"].value = "cam"
    w.target.setCurrentText("malignant")
    w.params["colormap"].value = "turbo"
    n = len(viewer.layers)
    _run(w, qtbot)
    assert len(viewer.layers) == n + 1
    layer = viewer.layers["glas cam malignant"]
    assert isinstance(layer, type(image)) and layer.data.shape == rgb.shape[:2]
    assert np.allclose(layer.scale, image.scale) and np.allclose(layer.translate, image.translate)
    assert_readable_heat_map(layer)
    assert "malignant" in w.probs.text() and "benign" in w.probs.text()
    w.opacity.setValue(30)
    assert layer.opacity == pytest.approx(0.3)
    # all classes, another method: one layer per class, each readable
    w.params["method"].value = "lrp-epsilon"
    w.target.setCurrentText("all")
    _run(w, qtbot)
    for name in ("glas lrp-epsilon benign", "glas lrp-epsilon malignant"):
        assert_readable_heat_map(viewer.layers[name])


def test_explain_widget_adds_readable_heat_maps(sample_viewer, open_dock, qtbot):
    image = sample_viewer.layers[0]
    w = open_dock(sample_viewer, "explain")
    w.device.setCurrentText("cpu")
    w.params["method"].value = "gradcam"
    w.target.setCurrentText("all")
    n = len(sample_viewer.layers)
    _run(w, qtbot)
    assert len(sample_viewer.layers) == n + 2
    for layer in list(sample_viewer.layers)[n:]:
        assert_readable_heat_map(layer)
        assert layer.data.shape == image.data.shape[:2] and np.allclose(layer.scale, image.scale)


def check_rollout_adds_one_layer(viewer, w, qtbot):
    w.device.setCurrentText("cpu")
    w.model.setCurrentText("vit-glas")
    assert w.params["method"].value == "rollout"
    w.target.setCurrentText("all")
    n = len(viewer.layers)
    _run(w, qtbot)
    assert len(viewer.layers) == n + 1, [ly.name for ly in viewer.layers][n:]
    assert_readable_heat_map(viewer.layers[-1])


def test_rollout_adds_exactly_one_layer_glas(make_napari_viewer, open_dock, qtbot, shared_data):
    viewer = make_napari_viewer()
    viewer.add_image(_glas(shared_data), name="glas", rgb=True, metadata={"mpp": 0.62})
    check_rollout_adds_one_layer(viewer, open_dock(viewer, "explain"), qtbot)


def test_rollout_adds_exactly_one_layer(sample_viewer, open_dock, qtbot):
    check_rollout_adds_one_layer(sample_viewer, open_dock(sample_viewer, "explain"), qtbot)


def check_empty_map_is_explained(viewer, w, qtbot, empty_class, full_class):
    """lrp-a1b0 keeps positive relevance only: the class the model rejects has an empty map."""
    w.device.setCurrentText("cpu")
    w.params["method"].value = "lrp-a1b0"
    w.target.setCurrentText("all")
    n, seen = len(viewer.layers), len(_notifications())
    _run(w, qtbot)
    names = [ly.name for ly in viewer.layers][n:]
    assert len(names) == 1 and names[0].endswith(f"lrp-a1b0 {full_class}"), names
    messages = [str(r.message) for r in _notifications()[seen:]]
    assert any(empty_class in m and "empty map" in m.lower() for m in messages), messages
    assert empty_class in w.status.text() and "empty" in w.status.text()


def test_an_empty_map_says_why_glas(make_napari_viewer, open_dock, qtbot, shared_data):
    viewer = make_napari_viewer()
    viewer.add_image(_glas(shared_data), name="glas", rgb=True, metadata={"mpp": 0.62})  # malignant, p 0.998
    check_empty_map_is_explained(viewer, open_dock(viewer, "explain"), qtbot, "benign", "malignant")


def test_an_empty_map_says_why(sample_viewer, open_dock, qtbot):
    check_empty_map_is_explained(sample_viewer, open_dock(sample_viewer, "explain"), qtbot, "malignant", "benign")


# ---- cancel, refusal, start-up cost ------------------------------------------------------------------
@pytest.mark.slow
def test_cancel_stops_a_tiled_explanation(make_napari_viewer, open_dock, qtbot, shared_data):
    viewer = make_napari_viewer()
    viewer.add_image(np.tile(_glas(shared_data), (4, 4, 1)), name="big", rgb=True, metadata={"mpp": 0.62})  # 12 tiles
    w = open_dock(viewer, "explain")
    w.device.setCurrentText("cpu")
    w.params["method"].value = "lrp-epsilon"
    n = len(viewer.layers)
    w.run_btn.click()
    qtbot.waitUntil(lambda: "tile 1 of" in w.status.text(), timeout=60_000)
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert w.status.text() == "cancelled" and len(viewer.layers) == n and w.run_btn.isEnabled()


def test_explain_widget_reports_a_method_that_does_not_apply(make_napari_viewer, open_dock, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="blank", metadata={"mpp": 0.62})
    w = open_dock(viewer, "explain")
    w.device.setCurrentText("cpu")
    w.params["method"].value = "rollout"
    n = len(viewer.layers)
    _run(w, qtbot, 60_000)
    assert "does not apply" in w.status.text() and len(viewer.layers) == n


def test_explain_refuses_an_image_of_unknown_pixel_size_like_every_dock(make_napari_viewer, open_dock, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="no-mpp")
    w = open_dock(viewer, "explain")
    n = len(viewer.layers)
    _run(w, qtbot, 60_000)
    assert "microns per pixel unknown" in w.status.text() and "mpp (µm/px)" in w.status.text()
    assert "--mpp" not in w.status.text() and len(viewer.layers) == n


def test_explain_widget_module_does_not_import_torch():
    code = "import sys, napari_pathreview.widgets.explain; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
