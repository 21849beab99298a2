"""Render docs/gallery/detect.png and docs/gallery/segment.png: the Detect cells and Segment docks opened
from Plugins > PathReview, after a run on the bundled MoNuSeg sample. Run under Xvfb with the xcb platform:

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1280x800x24" python docs/gallery/detect_segment.py

Detect is shown with level of detail engaged, zoomed out: it runs on a 27 x 27 mosaic of the sample
(13 824 px a side at 0.25 µm/px, a lazy multiscale image). Running the detector 729 times would take a
quarter of an hour on a laptop CPU, so the real detector runs once, on one copy, and its cells are
repeated at every copy's offset (~65 000 cells, as tests/test_lod.py does). Segment runs for real on the
sample tile.
"""

import sys
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent
REPS = 27


def _settle(n=30):
    for _ in range(n):
        QApplication.instance().processEvents()


def _wait(widget):
    widget.run_btn.click()
    while widget.worker is not None:
        QApplication.instance().processEvents()
    _settle()


def _viewer():
    viewer = napari.Viewer(title="napari-pathreview")
    viewer.window._qt_window.resize(1280, 800)
    return viewer


def _mosaic(tile, reps):
    import dask.array as da

    return [
        da.tile(da.from_array(tile[:: 2**k, :: 2**k], chunks=tile[:: 2**k, :: 2**k].shape), (reps, reps, 1))
        for k in range(6)
    ]


def _repeat_detections(reps):
    """pipelines.detect on one 512 px copy of the mosaic, its cells repeated at every copy (see above)."""
    from napari_pathreview.backend import pipelines

    real = pipelines.detect

    def detect(slide, model=None, **kw):
        one = real(np.asarray(slide.levels[0][:512, :512]), model, **kw)
        offsets = np.stack(np.meshgrid(np.arange(reps), np.arange(reps), indexing="ij"), -1).reshape(-1, 2) * 512
        cells = one.select(np.tile(np.arange(len(one)), len(offsets)))
        cells.yx = (one.yx[None] + offsets[:, None]).reshape(-1, 2).astype(np.float32)
        return cells

    pipelines.detect = detect


def detect(out=HERE / "detect.png") -> None:
    viewer = _viewer()
    sample = viewer.open_sample("napari-pathreview", "monuseg_tile")[0]
    mosaic = viewer.add_image(
        _mosaic(np.asarray(sample.data), REPS),
        name="sample mosaic",
        rgb=True,
        units="um",
        multiscale=True,
        scale=(0.25, 0.25),
        metadata={"mpp": 0.25},
    )
    viewer.layers.remove(sample)
    _repeat_detections(REPS)
    _, w = viewer.window.add_plugin_dock_widget("napari-pathreview", "Detect cells")
    w.device.setCurrentText("cpu")
    w.image.setCurrentText(mosaic.name)
    _wait(w)
    viewer.reset_view()
    viewer.scale_bar.visible = True
    _settle(60)
    viewer.window.screenshot(str(out), canvas_only=False)
    print(out, w.status.text())
    viewer.close()


def segment(out=HERE / "segment.png") -> None:
    viewer = _viewer()
    viewer.open_sample("napari-pathreview", "monuseg_tile")
    _, w = viewer.window.add_plugin_dock_widget("napari-pathreview", "Segment")
    w.device.setCurrentText("cpu")
    w.params["tile"].value = 256
    _wait(w)
    viewer.reset_view()
    viewer.scale_bar.visible = True
    _settle(60)
    viewer.window.screenshot(str(out), canvas_only=False)
    print(out, w.status.text())
    viewer.close()


if __name__ == "__main__":
    which = sys.argv[1:] or ["detect", "segment"]
    for name in which:
        {"detect": detect, "segment": segment}[name]()
