"""Render the screenshot gallery: one picture per PathReview dock, each opened from Plugins > PathReview
(``viewer.window.add_plugin_dock_widget``) after a real run, into docs/gallery/NAME.png.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1280x800x24" python docs/gallery/render.py [names...]

names: detect enhance segment compare annotate train explain weak (default: all, in that order). Inputs: the
bundled sample (File > Open Sample > MoNuSeg tile, 512² H&E at 0.25 µm/px); for Explain a GlaS image
($PATHREVIEW_DATA/glas/images/testA_22.jpg at 0.62 µm/px, the bundled sample when the data folder is missing).
Runs on the CPU (about a minute and a half on 2 cores); the fine-tuned detector is written
to a temporary weights folder, never the user's. Offscreen Qt renders a black canvas: use Xvfb + xcb.

detect / segment come from ``detect_segment.py``, explain / weak from ``explain_weak.py``; the other four
are here. See README.md beside this file for what each picture shows.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import detect_segment  # noqa: E402
import explain_weak  # noqa: E402

NAMES = ("detect", "enhance", "segment", "compare", "annotate", "train", "explain", "weak")


def _settle(n=60):
    from qtpy.QtCore import QEvent

    app = QApplication.instance()
    for _ in range(n):
        app.processEvents()
        app.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)  # as napari's event loop would


def _wait(widget):
    detect_segment._wait(widget)


def _dock(viewer, name):
    return viewer.window.add_plugin_dock_widget("napari-pathreview", name)[1]


def _sample_viewer():
    viewer = detect_segment._viewer()
    image = viewer.open_sample("napari-pathreview", "monuseg_tile")[0]
    return viewer, image


def _detected(viewer):
    """The Detect cells dock run on the sample (CPU): its dock and Points layer."""
    w = _dock(viewer, "Detect cells")
    w.device.setCurrentText("cpu")
    _wait(w)
    return w, w.points_layer


def _shot(viewer, out, status=""):
    viewer.canvas.overlays.scale_bar.visible = True
    _settle()
    viewer.window.screenshot(str(out), canvas_only=False)
    print(out, status)
    viewer.close()


def _zoom(viewer, center_px, zoom_factor, mpp=0.25):
    """Centre the camera on ``center_px`` (row, col of the sample) at ``zoom_factor`` x the fitted zoom."""
    viewer.reset_view()
    camera = viewer.scene.camera
    camera.center = tuple(np.asarray(center_px, float) * mpp)
    camera.zoom = camera.zoom * zoom_factor


# ------------------------------------------------------------------------------------------ the four new
def enhance(out=HERE / "enhance.png") -> None:
    """Detect, then Enhance on its cells: the enhanced classes (cells whose class the enhancer changed drawn
    over the detector's) and the attention lines of the last encoder layer, top 3 per cell, with their scale."""
    viewer, _ = _sample_viewer()
    _detected(viewer)
    w = _dock(viewer, "Enhance cells")
    w.device.setCurrentText("cpu")
    w.params["top_k"].value = 3
    _wait(w)
    _zoom(viewer, (256, 256), 1.6)
    _shot(viewer, out, w.status.text())


def _corrected_annotation(viewer, cells):
    """A pathologist's correction of the detections, made in the Annotate dock: copy for correction, then
    remove 8 cells (false positives), re-class 10 (wrong class) and add 5 cells the detector missed."""
    ann = _dock(viewer, "Annotate cells")
    layer = ann.copy_for_correction(cells)
    rng = np.random.default_rng(26)
    n = len(layer.data)
    layer.selected_data = {int(i) for i in rng.choice(n, 10, replace=False)}
    classes = layer.metadata["classes"]
    names = [str(c) for c in layer.features["class"]]
    # the commonest other class for each selected cell: one key press of a real correction
    other = next(c for c in classes if c != max(set(names), key=names.count))
    ann.set_class(layer, other)
    layer.selected_data = {int(i) for i in rng.choice(n, 8, replace=False)}
    layer.remove_selected()
    layer.mode = "add"
    ann.set_class(layer, classes[0], selected=False)
    for yx in ((60, 470), (130, 40), (300, 480), (450, 250), (495, 80)):
        layer.add(np.array(yx, float))
    layer.selected_data = set()
    layer.mode = "pan_zoom"
    return ann, layer


def compare(out=HERE / "compare.png") -> None:
    """Detect, then a corrected copy of its cells as the annotation (Annotate: copy for correction, 8 removed,
    10 re-classed, 5 added), then Compare: per-class table, confusion matrix and the errors as layers."""
    viewer, _ = _sample_viewer()
    _, cells = _detected(viewer)
    _, ann = _corrected_annotation(viewer, cells)
    cells.visible = True  # the copy hides the prediction; Compare draws its own error layers over both
    ann.visible = False
    w = _dock(viewer, "Compare with annotations")
    w.image.setCurrentText(cells.name)
    w.annotation.setCurrentText(ann.name)
    _wait(w)
    cells.visible = False
    import re

    for _ in range(len(w.errors)):  # the first error away from the tile's edge (the camera centres on it)
        w.next_btn.click()
        rc = [int(v) for v in re.findall(r"row (\d+), col (\d+)", w.error_label.text())[0]]
        if all(96 <= v <= 416 for v in rc):
            break
    _settle()
    _shot(viewer, out, w.status.text() + " | " + w.error_label.text())


def annotate(out=HERE / "annotate.png") -> None:
    """Annotate: a new annotation layer on the sample with the detector's classes, and a dozen cells placed
    and classed with the class keys (the cells at detector positions, classed by hand-picked classes)."""
    from napari_pathreview.backend import pipelines

    viewer, image = _sample_viewer()
    w = _dock(viewer, "Annotate cells")
    layer = w.new_layer()
    found = pipelines.detect(np.asarray(image.data), mpp=0.25, device="cpu")  # where the nuclei are
    centre = np.array([256.0, 256.0])
    near = np.argsort(np.linalg.norm(found.yx - centre, axis=1))[:14]
    classes = layer.metadata["classes"]
    for k, i in enumerate(near):
        w.set_class(layer, classes[int(found.labels[i]) if k % 4 else (k // 4) % len(classes)], selected=False)
        layer.add(found.yx[i][None].astype(float))
    layer.selected_data = set()
    w.set_class(layer, classes[1], selected=False)
    layer.mode = "add"
    _zoom(viewer, centre, 2.2)
    _shot(viewer, out, w.status.text())


def train(out=HERE / "train.png") -> None:
    """Detect, a corrected copy of its cells (as for compare.png), then Train / fine-tune: the detector, one
    epoch from the shipped weights, on the sample's corrected cells; the live loss / metric plot."""
    weights = tempfile.mkdtemp(prefix="pathreview-gallery-weights-")
    os.environ["PATHREVIEW_WEIGHTS"] = weights  # the new weights never land in the user's folder
    viewer, image = _sample_viewer()
    _, cells = _detected(viewer)
    _, ann = _corrected_annotation(viewer, cells)
    w = _dock(viewer, "Train / fine-tune")
    w.kind.setCurrentText("detector")
    w.image.setCurrentText(image.name)
    w.annotations.setCurrentText(ann.name)
    w.device.setCurrentText("cpu")
    w.params["epochs"].value = 1
    w.params["save_as"].value = "detector-sample-corrected"
    _wait(w)
    viewer.reset_view()
    _shot(viewer, out, w.status.text())


# ------------------------------------------------------------------------------------------ all eight
def render(name: str) -> None:
    from napari_pathreview.backend import pipelines

    real_detect = pipelines.detect  # detect_segment.detect repeats the detections over a mosaic: undo it after
    try:
        {
            "detect": detect_segment.detect,
            "segment": detect_segment.segment,
            "explain": explain_weak.explain,
            "weak": explain_weak.weak,
            "enhance": enhance,
            "compare": compare,
            "annotate": annotate,
            "train": train,
        }[name]()
    finally:
        pipelines.detect = real_detect
    _compact(HERE / f"{name}.png")


def _compact(path: Path) -> None:
    """Re-save a screenshot as optimised RGB (the window has no transparency): ~10 % smaller."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    rgb.save(path, optimize=True)


def _fresh_forms() -> None:
    """The docks' forms start at their defaults, not at the values this user last typed (``widgets/forms.py``
    remembers them in magicgui's cache folder): the gallery uses a temporary one."""
    import magicgui._util

    cache = Path(tempfile.mkdtemp(prefix="pathreview-gallery-forms-"))
    magicgui._util.user_cache_dir = lambda *a, **k: cache


def main(argv=None) -> None:
    names = list(argv if argv is not None else sys.argv[1:]) or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise SystemExit(f"unknown picture(s) {unknown}; choose from {' '.join(NAMES)}")
    _fresh_forms()
    for name in names:
        render(name)


if __name__ == "__main__":
    main()
