"""The Explain dock widget in a real napari viewer (pytest-qt + Xvfb), and its start-up cost."""
import subprocess
import sys

import numpy as np

from napari_pathreview.widgets.explain import ExplainWidget


def test_explain_widget_adds_aligned_heat_map_layers(make_napari_viewer, qtbot, shared_data):
    import imageio.v3 as iio

    viewer = make_napari_viewer()
    rgb = iio.imread(shared_data / "glas" / "images" / "testA_22.jpg")
    image = viewer.add_image(rgb, name="glas", rgb=True, scale=(0.62, 0.62), translate=(100.0, 50.0),
                             metadata={"mpp": 0.62})
    w = ExplainWidget(viewer)
    w.device.setCurrentText("cpu")
    assert w.model.currentText() == "classifier-glas"
    assert [w.target.itemText(i) for i in range(w.target.count())] == ["all", "benign", "malignant"]
    w.method.setCurrentText("cam")
    w.target.setCurrentText("malignant")
    w.colormap.setCurrentText("turbo")
    n = len(viewer.layers)
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert len(viewer.layers) == n + 1
    layer = viewer.layers["glas cam malignant"]
    assert type(layer).__name__ == "Image" and layer.data.shape == rgb.shape[:2]
    assert np.allclose(layer.scale, image.scale) and np.allclose(layer.translate, image.translate)
    assert layer.blending == "additive" and layer.colormap.name == "turbo"
    assert layer.opacity == 0.6 and layer.contrast_limits[1] > 0
    assert "malignant" in w.probs.text() and "benign" in w.probs.text()
    w.opacity.setValue(30)
    assert layer.opacity == 0.3
    # all classes, another method: one layer per class
    w.method.setCurrentText("lrp-epsilon")
    w.target.setCurrentText("all")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert {"glas lrp-epsilon benign", "glas lrp-epsilon malignant"} <= {ly.name for ly in viewer.layers}


def test_cancel_stops_a_tiled_explanation(make_napari_viewer, qtbot, shared_data):
    import imageio.v3 as iio

    viewer = make_napari_viewer()
    rgb = iio.imread(shared_data / "glas" / "images" / "testA_22.jpg")
    viewer.add_image(np.tile(rgb, (4, 4, 1)), name="big", rgb=True, metadata={"mpp": 0.62})  # 12 tiles
    w = ExplainWidget(viewer)
    w.device.setCurrentText("cpu")
    w.method.setCurrentText("lrp-epsilon")
    n = len(viewer.layers)
    w.run()
    qtbot.waitUntil(lambda: "tile 1 of" in w.status.text(), timeout=60_000)
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert w.status.text() == "cancelled" and len(viewer.layers) == n and w.run_btn.isEnabled()


def test_explain_widget_reports_a_method_that_does_not_apply(make_napari_viewer, qtbot, shared_data):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="blank")
    w = ExplainWidget(viewer)
    w.device.setCurrentText("cpu")
    w.method.setCurrentText("rollout")
    n = len(viewer.layers)
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert "does not apply" in w.status.text() and len(viewer.layers) == n


def test_explain_widget_module_does_not_import_torch():
    code = "import sys, napari_pathreview.widgets.explain; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
