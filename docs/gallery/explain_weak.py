"""Render docs/gallery/explain.png and docs/gallery/weak.png: the Explain and Weak cell types docks opened
from Plugins > PathReview, after a real run (Explain on a GlaS gland image, Weak cell types on the bundled
MoNuSeg sample). Run under Xvfb with the xcb platform:

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1280x800x24" python docs/gallery/explain_weak.py [GLAS_IMAGE]

GLAS_IMAGE defaults to $PATHREVIEW_DATA/glas/images/testA_22.jpg (../shared/data beside the clone);
without it Explain runs on the bundled sample instead.
"""

import os
import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("PATHREVIEW_DATA", HERE.parents[2] / "shared" / "data"))


def _wait(widget):
    app = QApplication.instance()
    widget.run_btn.click()
    while widget.worker is not None:
        app.processEvents()
    for _ in range(30):
        app.processEvents()


def _viewer():
    viewer = napari.Viewer(title="napari-pathreview")
    viewer.window._qt_window.resize(1280, 800)
    return viewer


def explain(out=HERE / "explain.png", glas: str | None = None) -> None:
    import imageio.v3 as iio

    viewer = _viewer()
    path = Path(glas) if glas else DATA / "glas" / "images" / "testA_22.jpg"
    if path.is_file():
        viewer.add_image(
            iio.imread(path)[..., :3],
            name=path.stem,
            rgb=True,
            scale=(0.62, 0.62),
            units="um",
            metadata={"mpp": 0.62, "path": str(path)},
        )  # GlaS: 20x, 0.62 µm/px
    else:
        viewer.open_sample("napari-pathreview", "monuseg_tile")
    _, w = viewer.window.add_plugin_dock_widget("napari-pathreview", "Explain")
    w.device.setCurrentText("cpu")
    w.params["method"].value = "gradcam"
    w.target.setCurrentText("malignant")
    _wait(w)
    viewer.reset_view()
    viewer.scale_bar.visible = path.is_file()  # the GlaS layer carries µm units; the sample reader does not
    for _ in range(30):
        QApplication.instance().processEvents()
    viewer.window.screenshot(str(out), canvas_only=False)
    print(out)
    viewer.close()


def weak(out=HERE / "weak.png") -> None:
    viewer = _viewer()
    viewer.open_sample("napari-pathreview", "monuseg_tile")
    _, w = viewer.window.add_plugin_dock_widget("napari-pathreview", "Weak cell types")
    w.device.setCurrentText("cpu")
    _wait(w)
    viewer.reset_view()
    for _ in range(30):
        QApplication.instance().processEvents()
    viewer.window.screenshot(str(out), canvas_only=False)
    print(out)
    viewer.close()


if __name__ == "__main__":
    which = os.environ.get("GALLERY", "explain,weak").split(",")
    if "explain" in which:
        explain(glas=(sys.argv[1:] or [None])[0])
    if "weak" in which:
        weak()
