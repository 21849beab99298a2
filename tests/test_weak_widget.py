"""'Weak cell types' widget in a real napari viewer: CAM Image layers, a Labels layer and a Points layer,
all aligned (same scale) with the image."""
import sys

import numpy as np

from napari_pathreview.widgets.weak import DETECT, WeakWidget


def test_widget_module_does_not_import_torch_at_import():
    import subprocess

    code = "import sys, napari_pathreview.widgets.weak; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_weak_widget_adds_cam_labels_and_points_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = viewer.open_sample("napari-pathreview", "monuseg_tile")[0]
    w = WeakWidget(viewer)
    w.device.setCurrentText("cpu")
    assert w.image.currentText() == image.name and w.model.currentText() == "weak-cells"
    assert w.cells.currentText() == DETECT
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    cams = [ly for ly in viewer.layers if ly.name.startswith(f"{image.name} CAM ")]
    assert [ly.name.split()[-1] for ly in cams] == ["epithelial", "fibroblast", "inflammatory", "others"]
    labels = viewer.layers[f"{image.name} pseudo-labels"]
    points = viewer.layers[f"{image.name} weak cells"]
    assert type(labels).__name__ == "Labels" and type(points).__name__ == "Points"
    for ly in cams + [labels, points]:
        assert np.allclose(ly.scale[-2:], image.scale[-2:]) and np.allclose(ly.translate[-2:], image.translate[-2:])
    assert cams[0].data.shape == labels.data.shape == image.data.shape[:2]
    assert 0.0 <= float(cams[0].data.min()) and float(cams[0].data.max()) <= 1.0
    assert set(np.unique(labels.data)) <= {0, 1, 2, 3, 4}
    assert len(points.data) > 50 and set(points.features["class"]) <= set(w.model_classes())


def test_weak_widget_types_the_cells_of_a_chosen_points_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = viewer.open_sample("napari-pathreview", "monuseg_tile")[0]
    yx = np.array([[100.0, 100.0], [200.0, 300.0], [400.0, 50.0]])
    viewer.add_points(yx, name="my cells", scale=image.scale, translate=image.translate)
    w = WeakWidget(viewer)
    w.device.setCurrentText("cpu")
    w.image.setCurrentText(image.name)
    w.cells.setCurrentText("my cells")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    points = viewer.layers[f"{image.name} weak cells"]
    assert np.allclose(points.data, yx) and np.allclose(points.scale, image.scale)
    assert len(points.features["class"]) == 3
