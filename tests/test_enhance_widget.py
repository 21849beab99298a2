"""'Enhance cells' dock, opened from Plugins > PathReview (``open_dock``): enhanced points, attention lines,
graphs."""

import numpy as np
import pytest

from napari_pathreview.backend import pipelines
from napari_pathreview.widgets.layers import points_layer_data


def _viewer_with_cells(make_napari_viewer, val_sample, tiles=2):
    sample, _ = val_sample
    image = np.tile(sample.image, (tiles, tiles, 1))  # 1000 x 1000 px: ~1000 cells
    viewer = make_napari_viewer()
    img = viewer.add_image(image, name="slide", rgb=True, metadata={"mpp": 0.55})
    cells = pipelines.detect(image, pipelines.DetectOptions(mpp=0.55, device="cpu"))
    data, kwargs, _ = points_layer_data(cells, "slide cells")
    return viewer, img, viewer.add_points(data, **kwargs), cells


def _run(w, qtbot):
    w.device.setCurrentText("cpu")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)


@pytest.mark.slow
def test_enhance_widget_draws_over_10k_attention_lines(make_napari_viewer, open_dock, qtbot, val_sample):
    viewer, img, cells_layer, cells = _viewer_with_cells(make_napari_viewer, val_sample)
    w = open_dock(viewer, "enhance")
    assert w.cells.currentText() == "slide cells" and w.model.count() >= 1
    w.params["top_k"].value = 0  # all neighbours
    w.params["threshold"].value = 0.0
    _run(w, qtbot)
    enh = viewer.layers["slide cells enhanced"]
    assert len(enh.data) == len(cells) and {"class", "base_class", "changed"} <= set(enh.features.columns)
    assert (enh.features["changed"] == (enh.features["class"] != enh.features["base_class"])).all()
    att = viewer.layers["slide cells attention"]
    assert type(att).__name__ == "Vectors" and att.data.shape[1:] == (2, 2)
    assert len(att.data) >= 10_000, len(att.data)
    # every line starts at a cell and ends at a cell within the 70 µm mask
    ends = att.data[:, 0] + att.data[:, 1]
    assert np.linalg.norm(att.data[:, 1], axis=1).max() * 0.55 <= 70.0 + 1e-3
    assert np.isin(ends.round(2).view([("", ends.dtype)] * 2), cells.yx.round(2).view([("", ends.dtype)] * 2)).all()
    # controls: top-k 3, one head -> at most 3 lines per cell
    w.params["top_k"].value = 3
    w.head.setCurrentIndex(2)
    att = viewer.layers["slide cells attention"]
    assert len(att.data) <= 3 * len(cells) and np.bincount(att.features["src"]).max() <= 3
    # only changed
    w.only_changed.setChecked(True)
    assert int(enh.shown.sum()) == int(np.sum(enh.features["changed"]))
    assert np.array_equal(enh.face_color[:, 3] > 0, enh.shown)  # hidden on screen too (napari ignores shown in 2-D)
    # selecting a cell shows its attention neighbourhood
    enh.selected_data = {5}
    sel = viewer.layers["slide cells attention (selected)"]
    assert len(sel.data) >= 1 and (sel.features["src"] == 5).all()
    # graphs
    w.params["knn_k"].value = 3
    w.knn_btn.click()
    assert len(viewer.layers["slide cells kNN graph"].data) == 3 * len(cells)
    w.params["similarity"].value = 0.9
    w.sim_btn.click()
    sim = viewer.layers["slide cells similarity graph"]
    assert len(sim.data) > 0 and (sim.features["weight"] >= 0.9).all()


@pytest.mark.slow
def test_enhance_widget_samples_features_for_points_without_them(make_napari_viewer, open_dock, qtbot, val_sample):
    viewer, img, cells_layer, cells = _viewer_with_cells(make_napari_viewer, val_sample, tiles=1)
    viewer.add_points(
        cells.yx[:40] + 0.5,
        name="hand cells",
        features={"class": np.array([cells.classes[i] for i in cells.labels[:40]], object)},
        metadata={"mpp": 0.55},
    )
    w = open_dock(viewer, "enhance")
    w.cells.setCurrentText("hand cells")
    w.image.setCurrentText("slide")
    _run(w, qtbot)
    enh = viewer.layers["hand cells enhanced"]
    assert len(enh.data) == 40 and w.result.enhanced.features.shape == (40, 32)
    # sampled at (almost) the same places, the base probabilities are close to the detector's own
    assert (w.result.base.probs.argmax(1) == cells.labels[:40]).mean() > 0.8


def test_enhance_without_points_layer_is_a_notification(make_napari_viewer, open_dock):
    viewer = make_napari_viewer()
    w = open_dock(viewer, "enhance")
    w.run()
    assert w.worker is None and "no points layer" in w.status.text()


@pytest.mark.slow
def test_cancel_stops_an_enhancement_that_samples_features(make_napari_viewer, open_dock, qtbot, val_sample):
    """Annotation points carry no detector features: they are sampled from the image tile by tile, and
    Cancel stops that; no layer is added and the user's points are unchanged."""
    sample, _ = val_sample
    image = np.tile(sample.image, (6, 6, 1))  # 3000 x 3000 px
    viewer = make_napari_viewer()
    viewer.add_image(image, name="slide", rgb=True, metadata={"mpp": 0.55})
    yx = np.concatenate([sample.yx + [500 * i, 500 * j] for i in range(6) for j in range(6)]).astype(np.float32)
    hand = viewer.add_points(yx, name="hand", metadata={"mpp": 0.55})
    before = hand.data.copy()
    w = open_dock(viewer, "enhance")
    w.cells.setCurrentText("hand")
    w.image.setCurrentText("slide")
    w.device.setCurrentText("cpu")
    n_layers = len(viewer.layers)
    w.run()
    qtbot.waitUntil(lambda: w.status.text().startswith("tiles"), timeout=60_000)
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert w.status.text() == "cancelled"
    assert len(viewer.layers) == n_layers and np.array_equal(hand.data, before) and w.run_btn.isEnabled()


def _enhanced_sample(sample_viewer, open_dock, qtbot):
    """Detect, then Enhance, on the bundled sample, both docks opened from the Plugins menu."""
    det = open_dock(sample_viewer, "detect")
    det.device.setCurrentText("cpu")
    det.run()
    qtbot.waitUntil(lambda: det.worker is None, timeout=120_000)
    w = open_dock(sample_viewer, "enhance")
    w.cells.setCurrentText(det.points_layer.name)
    _run(w, qtbot)
    assert w.points_layer is not None, w.status.text()
    return det.points_layer, w


def test_attention_lines_are_bright_with_a_colour_bar(sample_viewer, open_dock, qtbot):
    """Attention lines over H&E: even the weakest is not near-black, and the dock shows a colour bar with the
    layer's weight range (napari draws none for Vectors)."""
    base, w = _enhanced_sample(sample_viewer, open_dock, qtbot)
    att = w.attention_layer
    assert len(att.data) > 0
    lo, hi = att.edge_contrast_limits
    cmap = att.edge_colormap
    for v in (0.0, 0.5, 1.0):
        rgba = np.asarray(cmap.map(np.array([v], np.float32)))[0]
        luminance = 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]
        assert rgba[3] == 1.0 and luminance > 0.3, (v, rgba)
    assert not w.colorbar.isHidden() and w.colorbar.limits == (lo, hi)  # shown (the dock may be a back tab)
    assert f"{lo:.3g}" in w.colorbar.text() and f"{hi:.3g}" in w.colorbar.text()
    assert not w.colorbar.grab().isNull()
    # the cells, lines and colour bar say µm like the detector's layer (no 'inconsistent units')
    assert tuple(map(str, att.units)) == tuple(map(str, base.units)) == tuple(map(str, w.points_layer.units))


def test_show_only_changed_hides_the_detector_layer_too(sample_viewer, open_dock, qtbot):
    """'show only changed cells': the detector's own layer under the enhanced one is hidden too (else its
    cells show through and nothing seems to change), attention lines only from changed cells; off restores."""
    base, w = _enhanced_sample(sample_viewer, open_dock, qtbot)
    enh, changed = w.points_layer, np.asarray(w.result.changed, bool)
    assert base.visible and changed.any() and not changed.all()
    w.only_changed.setChecked(True)
    assert not base.visible
    assert np.array_equal(enh.face_color[:, 3] > 0, changed)
    assert set(np.unique(w.attention_layer.features["src"])) <= set(np.flatnonzero(changed))
    # changed cells are marked: a white ring, the others a black border
    assert np.allclose(enh.border_color[changed, :3], 1.0)
    w.only_changed.setChecked(False)
    assert base.visible and (enh.face_color[:, 3] > 0).all()
    assert len(set(np.unique(w.attention_layer.features["src"])) - set(np.flatnonzero(changed))) > 0
