"""Render docs/screenshot.png: the plugin on the bundled sample (run under Xvfb with the xcb platform).

xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshot.py
"""

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_pathreview.widgets.detect import DetectWidget
from napari_pathreview.widgets.enhance import EnhanceWidget


def main(out: str = str(Path(__file__).parent / "screenshot.png")) -> None:
    viewer = napari.Viewer(title="napari-pathreview")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-pathreview", "monuseg_tile")
    app = QApplication.instance()
    detect = DetectWidget(viewer)
    viewer.window.add_dock_widget(detect, name="Detect cells (PathReview)", area="right")
    detect.device.setCurrentText("cpu")
    detect.run()
    while detect.worker is not None:
        app.processEvents()
    enhance = EnhanceWidget(viewer)
    viewer.window.add_dock_widget(enhance, name="Enhance cells (PathReview)", area="right")
    enhance.cells.setCurrentText(detect.points_layer.name)
    enhance.device.setCurrentText("cpu")
    enhance.top_k.setValue(3)
    enhance.run()
    while enhance.worker is not None:
        app.processEvents()
    viewer.layers[detect.points_layer.name].visible = False
    for _ in range(20):
        app.processEvents()
    viewer.reset_view()
    viewer.window.screenshot(out, canvas_only=False)
    print(out)
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
