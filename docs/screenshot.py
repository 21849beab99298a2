"""Render docs/screenshot.png: the plugin on the bundled sample (run under Xvfb with the xcb platform).

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshot.py
"""
import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_pathreview.demo import sample_path
from napari_pathreview.widgets.detect import DetectWidget


def main(out: str = str(Path(__file__).parent / "screenshot.png")) -> None:
    viewer = napari.Viewer(title="napari-pathreview")
    viewer.window.resize(1500, 950)
    viewer.open(str(sample_path()), plugin="napari-pathreview")
    widget = DetectWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Detect cells (PathReview)", area="right")
    widget.device.setCurrentText("cpu")
    widget.run()
    app = QApplication.instance()
    while widget.worker is not None:
        app.processEvents()
    viewer.layers[-1].size = viewer.layers[-1].size * 1.3
    for _ in range(20):
        app.processEvents()
    viewer.reset_view()
    viewer.window.screenshot(out, canvas_only=False)
    print(out)
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
