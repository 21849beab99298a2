"""All eight docks opened from Plugins > PathReview on one viewer, as a user opens them: every dock is a
clean form (each visible input labelled, nothing overlapping, each input reachable by the mouse), and the
precision row runs the network at the precision chosen."""

from __future__ import annotations

import shutil

import napari
import numpy as np
import pytest
from conftest import WIDGETS
from test_explain_widget import _inputs, _rect
from test_explain_widget import _label_of as _label_of_widget


def _label_of(w, dock) -> str:
    """As the Explain test's, and also the label of a form row whose field is a layout holding ``w``
    (e.g. a folder box beside its Browse button)."""
    from qtpy.QtWidgets import QFormLayout

    text = _label_of_widget(w, dock)
    if text:
        return text
    for form in dock.findChildren(QFormLayout):
        for row in range(form.rowCount()):
            field = form.itemAt(row, QFormLayout.ItemRole.FieldRole)
            lay = field.layout() if field is not None else None
            if lay is not None and lay.indexOf(w) >= 0:
                lab = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
                if lab is not None and lab.widget() is not None and lab.widget().text().strip():
                    return lab.widget().text()
    return ""


def _form_problems(docks: dict, qtbot) -> list[str]:
    """Every visible input of every dock labelled, nothing overlapping, each input reachable by the mouse
    (each dock brought to the front in turn: docks tabify)."""
    from qtpy.QtWidgets import QApplication, QLabel

    problems = []
    for key, w in docks.items():
        _dock_of(w).raise_()  # docks tabify: bring this one to the front
        qtbot.waitUntil(w.isVisible, timeout=5000)
        QApplication.processEvents()
        from qtpy.QtWidgets import QScrollBar

        inputs = [i for i in _inputs(w) if not isinstance(i, QScrollBar)]  # a table's scroll bars are its own
        assert inputs, key
        problems += [f"{key}: unlabelled {type(i).__name__}" for i in inputs if not _label_of(i, w)]
        shown = inputs + [c for c in w.findChildren(QLabel) if c.isVisibleTo(w) and c.text().strip()]
        for i, a in enumerate(shown):
            for b in shown[i + 1 :]:
                if not (a.isAncestorOf(b) or b.isAncestorOf(a)) and _rect(a, w).intersects(_rect(b, w)):
                    problems.append(
                        f"{key}: {_label_of(a, w) or type(a).__name__!r} overlaps "
                        f"{_label_of(b, w) or type(b).__name__!r}"
                    )
        for i in inputs:
            hit = w.childAt(_rect(i, w).center())
            if not (hit is i or (hit is not None and i.isAncestorOf(hit))):
                problems.append(f"{key}: {_label_of(i, w)!r} covered by {type(hit).__name__}")
    return problems


def _dock_of(w):
    from qtpy.QtWidgets import QDockWidget

    d = w.parentWidget()
    while not isinstance(d, QDockWidget):
        d = d.parentWidget()
    return d


def test_all_eight_docks_from_the_menu_are_clean_forms(sample_viewer, open_dock, qtbot):
    window = sample_viewer.window._qt_window
    window.resize(1280, 800)
    window.show()
    qtbot.waitExposed(window)
    docks = {key: open_dock(sample_viewer, key) for key in WIDGETS}
    assert len({id(w) for w in docks.values()}) == 8
    problems = _form_problems(docks, qtbot)
    assert not problems, problems
    assert window.minimumSizeHint().height() <= 800


@pytest.mark.parametrize("dock", ["detect", "segment", "enhance"])
def test_precision_row_offers_the_precisions(sample_viewer, open_dock, dock):
    w = open_dock(sample_viewer, dock)
    assert [w.precision.itemText(i) for i in range(w.precision.count())] == ["fp32", "auto", "bf16", "fp16"]
    assert w.precision.currentText() == "fp32" and _label_of(w.precision, w) == "precision"


def test_detect_dock_at_bf16_gives_the_pipelines_bf16_cells(sample_viewer, open_dock, qtbot):
    from napari_pathreview.backend import pipelines

    image = sample_viewer.layers[0]
    w = open_dock(sample_viewer, "detect")
    w.device.setCurrentText("cpu")
    w.precision.setCurrentText("bf16")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    layer = sample_viewer.layers[f"{image.name} cells"]
    ref = pipelines.detect(np.asarray(image.data), pipelines.DetectOptions(mpp=0.25, device="cpu", precision="bf16"))
    assert len(layer.data) == len(ref) > 50
    np.testing.assert_allclose(np.sort(layer.features["score"]), np.sort(ref.scores), atol=1e-5)


def test_fp16_on_the_cpu_is_a_notification_not_a_crash(sample_viewer, open_dock, qtbot):
    w = open_dock(sample_viewer, "detect")
    w.device.setCurrentText("cpu")
    w.precision.setCurrentText("fp16")
    n = len(sample_viewer.layers)
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert len(sample_viewer.layers) == n and "fp16 is not a CPU precision" in w.status.text()


@pytest.mark.slow
def test_all_eight_docks_run_on_real_data_in_one_viewer(
    sample_viewer, open_dock, qtbot, tmp_path, monkeypatch, mini_masks
):
    """A user's session on the bundled sample, every dock from the menu on one viewer: detect, enhance,
    segment, annotate a correction, compare with it, fine-tune on it, explain, weak cell types."""
    from napari_pathreview.backend import pipelines

    monkeypatch.setenv("PATHREVIEW_WEIGHTS", str(tmp_path / "weights"))  # the fine-tune lands here
    viewer = sample_viewer
    image = viewer.layers[0]
    pixels = np.asarray(image.data)

    def run(w, timeout=240_000):
        n = len(viewer.layers)
        w.device.setCurrentText("cpu")
        w.image.setCurrentText(image.name)
        w.run()
        qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)
        return list(viewer.layers)[n:]

    det = open_dock(viewer, "detect")
    (cells,) = run(det)
    ref = pipelines.detect(pixels, pipelines.DetectOptions(mpp=0.25, device="cpu"))
    assert len(cells.data) == len(ref) > 50 and np.allclose(cells.scale, image.scale)

    enh = open_dock(viewer, "enhance")
    enh.cells.setCurrentText(cells.name)
    added = run(enh)
    assert enh.result is not None and len(enh.result.enhanced) == len(ref)
    assert any(ly.name.endswith("attention") or "attention" in ly.name for ly in added), [a.name for a in added]

    seg = open_dock(viewer, "segment")
    seg.params["tile"].value = 256
    (nuclei,) = run(seg)
    assert nuclei.data.shape == pixels.shape[:2] and nuclei.data.max() > 50

    ann = open_dock(viewer, "annotate")
    corrected = ann.copy_for_correction(cells)
    corrected.selected_data = set(range(5))
    corrected.remove_selected()
    assert len(corrected.data) == len(ref) - 5

    cmp_ = open_dock(viewer, "compare")
    cmp_.image.setCurrentText(cells.name)
    cmp_.annotation.setCurrentText(corrected.name)
    cmp_.run()
    qtbot.waitUntil(lambda: cmp_.worker is None, timeout=60_000)
    det_row = cmp_.table_values()["detection"]
    assert det_row["matched"] == len(ref) - 5 and det_row["predicted"] == len(ref)  # 5 false positives

    tr = open_dock(viewer, "train")
    tr.kind.setCurrentText("detector")
    tr.annotations.setCurrentText(corrected.name)
    tr.params["epochs"].value = 1
    tr.params["save_as"].value = "detector-session"
    run(tr, timeout=600_000)
    assert tr.saved is not None and (tmp_path / "weights" / "detector-session.safetensors").is_file()

    ex = open_dock(viewer, "explain")
    ex.params["method"].value = "cam"
    maps = run(ex)
    assert maps and all(m.blending != "additive" for m in maps)

    weak = open_dock(viewer, "weak")
    run(weak)
    assert weak.points_layer is not None and len(weak.points_layer.data) > 50 and weak.cam_layers

    # every visible input of the eight docks, after all that: labelled, not overlapping, reachable
    window = viewer.window._qt_window
    window.resize(1280, 800)
    window.show()
    qtbot.waitExposed(window)
    docks = {
        "detect": det,
        "enhance": enh,
        "segment": seg,
        "annotate": ann,
        "compare": cmp_,
        "train": tr,
        "explain": ex,
        "weak": weak,
    }
    problems = _form_problems(docks, qtbot)
    assert not problems, problems

    # Detect's cells saved as GeoJSON (File > Save Selected Layers) re-open on the same world positions
    world = cells.data * cells.scale + cells.translate
    path = str(tmp_path / "cells.geojson")
    viewer.layers.selection = {cells}
    assert viewer.layers.save(path, selected=True, plugin="napari-pathreview") == [path]
    back = [ly for ly in viewer.open(path, plugin="napari-pathreview") if isinstance(ly, napari.layers.Points)][0]
    np.testing.assert_allclose(back.data * back.scale + back.translate, world, atol=0.25 * 0.01)

    # Compare on Labels: a real MoNuSeg crop segmented from the Segment dock vs its instance mask gives the
    # Dice / AJI / PQ that `pathreview evaluate segmenter` reports for that pair
    import imageio.v3 as iio

    from napari_pathreview.backend.segmentation import evaluate_segmenter
    from napari_pathreview.backend.weights import default_model

    crop = "TCGA-21-5784-crop"
    ds = tmp_path / "ds"
    for sub in ("images", "masks"):
        (ds / sub).mkdir(parents=True)
        shutil.copy(mini_masks / sub / f"{crop}.png", ds / sub)
    (ds / "splits.csv").write_text(f"image,split,mask\n{crop},validation,instance\n")
    (ref_eval,) = evaluate_segmenter(ds, "validation", device="cpu")["per_image"]
    he = viewer.add_image(
        iio.imread(ds / "images" / f"{crop}.png")[..., :3],
        name=crop,
        rgb=True,
        scale=(0.25, 0.25),
        metadata={"mpp": 0.25},
    )
    seg.model.setCurrentText(default_model("segmenter"))
    seg.params["tile"].value = int(seg.model_card().params.get("tile", 512))  # the card's tile, as evaluate
    seg.region.setCurrentText("(whole image)")
    n = len(viewer.layers)
    seg.image.setCurrentText(he.name)
    seg.run()
    qtbot.waitUntil(lambda: seg.worker is None, timeout=240_000)
    (pred,) = list(viewer.layers)[n:]
    viewer.add_labels(
        iio.imread(ds / "masks" / f"{crop}.png").astype(np.int32), name="annotated nuclei", scale=(0.25, 0.25)
    )
    cmp_.image.setCurrentText(pred.name)
    cmp_.annotation.setCurrentText("annotated nuclei")
    cmp_.run()
    qtbot.waitUntil(lambda: cmp_.worker is None, timeout=60_000)
    t = cmp_.table_values()
    for key in ("dice", "aji", "pq"):
        assert abs(t[key]["value"] - ref_eval[key]) <= 1e-6, (key, t[key]["value"], ref_eval[key])

    # a result of more than 50 000 cells from Detect engages level of detail (a lazy 27 x 27 mosaic of the
    # sample; the real detector runs on one copy and its cells repeat: 16 min of CPU otherwise)
    from test_lod import MOSAIC_REPS, _mosaic, _mosaic_detect

    from napari_pathreview.widgets.lod_control import controller_for

    viewer.add_image(
        _mosaic(pixels, MOSAIC_REPS),
        name="mosaic",
        rgb=True,
        multiscale=True,
        scale=(0.25, 0.25),
        metadata={"mpp": 0.25},
    )
    _mosaic_detect(monkeypatch)
    det.image.setCurrentText("mosaic")
    det.run()
    qtbot.waitUntil(lambda: det.worker is None, timeout=120_000)
    big = viewer.layers["mosaic cells"]
    assert len(big.data) > 50_000 and controller_for(big) is not None
