"""'Weak cell types' dock as users open it (Plugins > PathReview): CAM Image layers drawn like every heat
map (translucent, clear at low values, colour bar), a Labels layer and a Points layer, all aligned (same
scale) with the image. On the bundled sample, and on a GlaS image when the data are there."""

import sys

import numpy as np
import pytest

from napari_pathreview.widgets.weak import DETECT

CLASSES = ["epithelial", "fibroblast", "inflammatory", "others"]


def test_widget_module_does_not_import_torch_at_import():
    import subprocess

    code = "import sys, napari_pathreview.widgets.weak; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def assert_readable_cam(layer):
    """Translucent (additive washes pale H&E out), transparent at 0, opaque-ish at 1, a colour bar."""
    assert layer.blending != "additive"
    lo, hi = layer.colormap.map(np.array([0.0, 1.0], np.float32))
    assert lo[3] == 0.0 and hi[3] > 0.5
    assert layer.colorbar.visible and tuple(layer.contrast_limits) == (0.0, 1.0)


def run_weak(viewer, image, qtbot, open_dock):
    w = open_dock(viewer, "weak")
    w.device.setCurrentText("cpu")
    assert w.image.currentText() == image.name and w.model.currentText() == "weak-cells"
    assert w.cells.currentText() == DETECT
    w.run_btn.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    cams = [ly for ly in viewer.layers if ly.name.startswith(f"{image.name} CAM ")][::-1]  # list: top down
    assert [ly.name.split()[-1] for ly in cams] == CLASSES and cams == w.cam_layers
    for ly in cams:
        assert_readable_cam(ly)
    labels = viewer.layers[f"{image.name} pseudo-labels"]
    points = viewer.layers[f"{image.name} weak cells"]
    for ly in cams + [labels, points]:
        assert np.allclose(ly.scale[-2:], image.scale[-2:]) and np.allclose(ly.translate[-2:], image.translate[-2:])
    assert cams[0].data.shape == labels.data.shape == image.data.shape[:2]
    assert 0.0 <= float(cams[0].data.min()) and float(cams[0].data.max()) <= 1.0
    assert set(np.unique(labels.data)) <= {0, 1, 2, 3, 4}
    return w, points


@pytest.mark.slow
def test_weak_widget_adds_readable_cams_labels_and_points(sample_viewer, open_dock, qtbot):
    image = sample_viewer.layers[0]
    w, points = run_weak(sample_viewer, image, qtbot, open_dock)
    assert len(points.data) > 50 and set(points.features["class"]) <= set(w.model_classes())
    # every result layer is in the image's units (no "Inconsistent units across layers" warning)
    assert [str(u) for u in image.units] == ["micrometer", "micrometer"]
    assert all(tuple(ly.units) == tuple(image.units) for ly in sample_viewer.layers), [
        (ly.name, ly.units) for ly in sample_viewer.layers
    ]


@pytest.mark.slow
def test_weak_widget_adds_readable_cams_on_a_glas_image(make_napari_viewer, open_dock, qtbot, shared_data):
    import imageio.v3 as iio

    viewer = make_napari_viewer()
    rgb = iio.imread(shared_data / "glas" / "images" / "testA_2.jpg")[..., :3]
    image = viewer.add_image(
        rgb, name="glas", rgb=True, scale=(0.62, 0.62), translate=(20.0, 40.0), metadata={"mpp": 0.62}
    )
    w, points = run_weak(viewer, image, qtbot, open_dock)
    assert len(points.data) > 20


def test_weak_widget_types_the_cells_of_a_chosen_points_layer(sample_viewer, open_dock, qtbot):
    image = sample_viewer.layers[0]
    yx = np.array([[100.0, 100.0], [200.0, 300.0], [400.0, 50.0]])
    sample_viewer.add_points(yx, name="my cells", scale=image.scale, translate=image.translate)
    w = open_dock(sample_viewer, "weak")
    w.device.setCurrentText("cpu")
    w.image.setCurrentText(image.name)
    w.cells.setCurrentText("my cells")
    w.run_btn.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    points = sample_viewer.layers[f"{image.name} weak cells"]
    assert np.allclose(points.data, yx) and np.allclose(points.scale, image.scale)
    assert len(points.features["class"]) == 3
