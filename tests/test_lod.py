"""Level of detail for large cell / line layers: the numpy helper (widgets/lod_rules.py) and the viewer
controller (widgets/lod_control.py) in a real napari viewer."""

import numpy as np
import pytest

from napari_pathreview.widgets.lod_rules import LinesLOD, PointsLOD, View, density_pyramid, in_view, palette_codes

RED, GREEN, BLUE = (1.0, 0.0, 0.0, 1.0), (0.0, 1.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0)


def _cells(n=200_000, side=20_000.0, seed=0):
    rng = np.random.default_rng(seed)
    yx = rng.uniform(0, side, (n, 2)).astype(np.float32)
    colors = np.array([RED, GREEN, BLUE], np.float32)[rng.integers(0, 3, n)]
    return yx, colors


# ---------------------------------------------------------------- numpy helper
def test_points_lod_density_when_zoomed_out_in_view_points_when_zoomed_in():
    yx, colors = _cells()
    shown = np.ones(len(yx), bool)
    shown[::10] = False  # a user filter: never drawn
    lod = PointsLOD(yx, colors, shown, budget=50_000)
    whole = View(0, 0, 20_000, 20_000, 800, 1000)
    d = lod.decide(whole)
    assert d.mode == "density" and d.indices is None and d.n_in_view == int(shown.sum())
    pyr = lod.pyramid
    assert max(pyr.levels[0].shape[:2]) <= 2048 and pyr.levels[-1].shape[0] <= 256
    assert all(lv.shape[0] == 2 * nxt.shape[0] for lv, nxt in zip(pyr.levels, pyr.levels[1:]))
    assert int(pyr.counts.sum()) == int(shown.sum())
    assert d.level == pyr.level_for(whole) > 0  # 20 data px per screen px: a coarse level
    # zoomed in: the shown cells of the view plus a 25 % margin, exactly
    view = View(5_000, 7_000, 5_800, 8_000, 800, 1000)
    d = lod.decide(view)
    inside = (yx[:, 0] >= 5_000) & (yx[:, 0] < 5_800) & (yx[:, 1] >= 7_000) & (yx[:, 1] < 8_000)
    assert d.mode == "points" and d.n_in_view == int((inside & shown).sum()) > 300
    margin = (yx[:, 0] >= 4_800) & (yx[:, 0] < 6_000) & (yx[:, 1] >= 6_750) & (yx[:, 1] < 8_250)
    np.testing.assert_array_equal(d.indices, np.flatnonzero(margin & shown))
    assert not np.isin(np.flatnonzero(~shown), d.indices).any()
    # the limit follows the screen: a tiny canvas cannot hold these as points
    assert lod.decide(View(5_000, 7_000, 5_800, 8_000, 40, 50)).mode == "density"


def test_density_pyramid_colours_its_bins_by_majority_class_and_density():
    # 3 cells in bin (0, 0) (2 red, 1 green), 1 blue in bin (1, 1), bins of 10 px, 4 x 4 bins
    yx = np.array([[1, 1], [2, 5], [8, 8], [15, 12], [39, 39]], np.float32)
    codes, pal = palette_codes(np.array([RED, RED, GREEN, BLUE, BLUE], np.float32))
    pyr = density_pyramid(yx, codes, pal, bin=10.0, min_side=2, extent=((0, 0), (40, 40)))
    lv = pyr.levels[0]
    assert lv.shape == (4, 4, 4) and [p.shape[:2] for p in pyr.levels] == [(4, 4), (2, 2)]
    assert tuple(lv[0, 0, :3]) == (255, 0, 0) and tuple(lv[1, 1, :3]) == (0, 0, 255)
    assert lv[0, 0, 3] > lv[1, 1, 3] > 0 and lv[0, 1, 3] == 0 and lv[2, 2, 3] == 0
    assert pyr.counts[0, 0] == 3 and pyr.counts.sum() == 5
    assert pyr.image_scale_translate(0) == ((10.0, 10.0), (5.0, 5.0))  # bin centres
    assert tuple(pyr.levels[1][0, 0, :3]) == (255, 0, 0) and pyr.levels[1][0, 0, 3] == 255  # 4 cells, 2 red


def test_lines_lod_hides_subpixel_lines_keeps_the_strongest_then_those_in_view():
    rng = np.random.default_rng(1)
    starts = rng.uniform(0, 20_000, (100_000, 2)).astype(np.float32)
    ends = starts + rng.normal(0, 20, starts.shape).astype(np.float32)
    w = rng.random(len(starts)).astype(np.float32)
    lod = LinesLOD(starts, ends, w, budget=5_000)
    assert lod.decide(View(0, 0, 20_000, 20_000, 800, 1000)).mode == "hidden"  # ~20 px lines, 20 px / screen px
    mid = View(0, 0, 4_000, 5_000, 800, 1000)  # 5 data px per screen px: lines ~4 screen px
    d = lod.decide(mid)
    near = in_view(starts, mid.expanded(0.25)) | in_view(ends, mid.expanded(0.25))
    assert d.mode == "top" and len(d.indices) == 5_000 and d.n_in_view == int(near.sum())
    assert w[d.indices].min() >= np.sort(w[near])[-5_000]  # the strongest of those in view
    small = View(1_000, 1_000, 1_800, 2_000, 800, 1000)
    d = lod.decide(small)
    near = in_view(starts, small.expanded(0.25)) | in_view(ends, small.expanded(0.25))
    assert d.mode == "all"
    np.testing.assert_array_equal(d.indices, np.flatnonzero(near))


# ---------------------------------------------------------------- viewer controller
def _big_points(viewer, n=200_000, side=20_000.0):
    from napari_pathreview.backend.points import CellPoints
    from napari_pathreview.widgets.layers import points_layer_data

    rng = np.random.default_rng(0)
    yx = rng.uniform(0, side, (n, 2)).astype(np.float32)
    labels = rng.integers(0, 3, n)
    probs = np.eye(3, dtype=np.float32)[labels]
    cells = CellPoints(
        yx, labels, rng.random(n).astype(np.float32), probs, ["epithelial", "inflammatory", "fibroblast"], mpp=0.5
    )
    data, kwargs, _ = points_layer_data(cells, "cells")
    return viewer.add_points(data, **kwargs)


def _wait_update(qtbot, ctl):
    before = ctl.updates
    qtbot.waitUntil(lambda: ctl.updates > before, timeout=10_000)


def _markers_drawn(viewer, layer) -> bool:
    return viewer.window._qt_viewer.canvas.layer_to_visual[layer].node.points_markers.visible


@pytest.mark.slow
def test_controller_swaps_density_and_in_view_points_on_camera_zoom(make_napari_viewer, qtbot):
    from napari_pathreview.widgets.base import LayerPicker
    from napari_pathreview.widgets.lod_control import attach_lod, controller_for

    viewer = make_napari_viewer()
    layer = _big_points(viewer)
    data0, feats0 = layer.data.copy(), layer.features.copy(deep=True)
    viewer.reset_view()
    ctl = attach_lod(viewer, layer)
    assert ctl is not None and controller_for(layer) is ctl
    # zoomed out: the density image is drawn, the full layer's own markers are not
    assert ctl.decision.mode == "density" and ctl.overview is not None and ctl.overview.visible
    assert ctl.overview.multiscale and ctl.overview.rgb and ctl.overview.name == "cells (overview)"
    assert layer.visible and not _markers_drawn(viewer, layer)
    assert ctl.shown_count == 0
    # zoom in on a region: after the debounce, only the cells around the view are drawn as points
    viewer.camera.center = (6_000.0, 9_000.0)
    viewer.camera.zoom = 1.0
    _wait_update(qtbot, ctl)
    assert ctl.decision.mode == "points" and not ctl.overview.visible and ctl.in_view.visible
    view = ctl.view()
    assert view.y0 < 6_000 < view.y1 and view.x0 < 9_000 < view.x1 and (view.y1 - view.y0) < 2_000
    yx = layer.data
    cov = ctl.decision.covered
    near = (yx[:, 0] >= cov.y0) & (yx[:, 0] < cov.y1) & (yx[:, 1] >= cov.x0) & (yx[:, 1] < cov.x1)
    assert 0 < ctl.shown_count == int(near.sum()) < 10_000
    np.testing.assert_array_equal(ctl.in_view.data, yx[near])
    np.testing.assert_array_equal(ctl.in_view.face_color, layer.face_color[near])
    assert ctl.decision.n_in_view == int(in_view(yx, view).sum())
    # the full layer is untouched: all cells, same features; the pickers skip the proxies
    np.testing.assert_array_equal(layer.data, data0)
    assert layer.features.equals(feats0) and len(layer.features) == 200_000
    assert LayerPicker(viewer, ("points",)).names() == ["cells"]
    # selecting a proxy selects the full layer (edits always go to the full layer)
    viewer.layers.selection.active = ctl.in_view
    assert viewer.layers.selection.active is layer
    # a filter on the full layer (shown) and an edit (delete) reach the drawn points
    layer.shown = np.asarray(layer.features["score"]) >= 0.5
    _wait_update(qtbot, ctl)
    keep = near & layer.shown
    np.testing.assert_array_equal(ctl.in_view.data, yx[keep])
    victim = int(np.flatnonzero(keep)[0])
    victim_yx = yx[victim].copy()
    layer.selected_data = {victim}
    layer.remove_selected()
    _wait_update(qtbot, ctl)
    assert len(layer.data) == 199_999 and len(layer.features) == 199_999
    assert ctl.shown_count == int(keep.sum()) - 1
    assert not (np.abs(ctl.in_view.data - victim_yx).sum(1) == 0).any()
    # zoom out again: back to the density image (recomputed without the filtered cells)
    viewer.reset_view()
    _wait_update(qtbot, ctl)
    assert ctl.decision.mode == "density" and ctl.overview.visible and not ctl.in_view.visible
    assert int(ctl.lod.pyramid.counts.sum()) == int(layer.shown.sum())
    # moving the full layer moves what stands for it
    t0 = np.asarray(ctl.overview.translate, float)
    layer.translate = (100.0, 0.0)
    np.testing.assert_allclose(ctl.overview.translate, t0 + [100.0, 0.0])
    np.testing.assert_allclose(ctl.in_view.translate, [100.0, 0.0])
    # hiding the full layer hides what stands for it
    layer.visible = False
    assert not ctl.overview.visible and not ctl.in_view.visible
    layer.visible = True
    assert ctl.overview.visible and not _markers_drawn(viewer, layer)
    # removing the full layer removes its proxies
    viewer.layers.remove(layer)
    assert [ly.name for ly in viewer.layers] == [] and controller_for(layer) is None


def test_controller_draws_only_lines_with_an_end_in_view(make_napari_viewer, qtbot):
    from napari_pathreview.widgets.lod_control import attach_lod

    viewer = make_napari_viewer()
    rng = np.random.default_rng(2)
    n = 120_000
    starts = rng.uniform(0, 20_000, (n, 2)).astype(np.float32)
    vec = np.stack([starts, rng.normal(0, 30, (n, 2)).astype(np.float32)], 1)
    w = rng.random(n).astype(np.float32)
    layer = viewer.add_vectors(vec, features={"weight": w}, edge_color="weight", name="attention")
    viewer.reset_view()
    ctl = attach_lod(viewer, layer)
    assert ctl.decision.mode in ("hidden", "top") and ctl.shown_count <= 20_000
    node = viewer.window._qt_viewer.canvas.layer_to_visual[layer].node
    assert not node.visible and layer.visible
    viewer.camera.center = (10_000.0, 10_000.0)
    viewer.camera.zoom = 1.0
    _wait_update(qtbot, ctl)
    cov = ctl.decision.covered
    ends = starts + vec[:, 1]
    near = in_view(starts, cov) | in_view(ends, cov)
    assert ctl.decision.mode == "all" and ctl.shown_count == int(near.sum()) > 0
    np.testing.assert_array_equal(ctl.in_view.data, vec[near])
    np.testing.assert_allclose(ctl.in_view.edge_color, layer.edge_color[near])
    assert len(layer.data) == n and len(layer.features) == n
    layer.visible = False
    layer.visible = True  # napari shows the node again on a visibility change; the controller re-hides it
    assert not node.visible and ctl.in_view.visible


def test_small_layers_are_untouched(make_napari_viewer):
    from napari_pathreview.widgets.lod_control import attach_lod, controller_for

    viewer = make_napari_viewer()
    layer = _big_points(viewer, n=10_000, side=2_000.0)
    vec = viewer.add_vectors(np.zeros((1_000, 2, 2), np.float32), name="lines")
    assert attach_lod(viewer, layer) is None and attach_lod(viewer, vec) is None
    assert [ly.name for ly in viewer.layers] == ["cells", "lines"] and controller_for(layer) is None
    assert _markers_drawn(viewer, layer)
    assert viewer.window._qt_viewer.canvas.layer_to_visual[vec].node.visible


def _mosaic(tile: np.ndarray, reps: int):
    """``reps`` x ``reps`` copies of ``tile`` as a lazy multiscale pyramid (dask: nothing is held in
    memory; napari reads only the tiles it draws)."""
    import dask.array as da

    levels = []
    for k in range(6):
        small = tile[:: 2**k, :: 2**k]
        levels.append(da.tile(da.from_array(small, chunks=small.shape), (reps, reps, 1)))
    return levels


MOSAIC_REPS = 27  # 27 x 27 copies of the 512 px sample: 13 824 px a side at 0.25 µm/px, ~65 000 cells


def _mosaic_detect(monkeypatch, reps=MOSAIC_REPS):
    """Detection on the mosaic without running the detector 729 times: the widget's call reaches the real
    ``pipelines.detect`` on one 512 px copy (same model, mpp, device, progress, cancel), whose cells are
    repeated at every copy's offset. Returns the calls' record."""
    from napari_pathreview.backend import pipelines

    real, calls = pipelines.detect, []

    def detect(slide, options=None, **kw):
        one = real(np.asarray(slide.levels[0][:512, :512]), options, **kw)
        offsets = np.stack(np.meshgrid(np.arange(reps), np.arange(reps), indexing="ij"), -1).reshape(-1, 2) * 512
        cells = one.select(np.tile(np.arange(len(one)), len(offsets)))
        cells.yx = (one.yx[None] + offsets[:, None]).reshape(-1, 2).astype(np.float32)
        calls.append((slide, options, len(one)))
        return cells

    monkeypatch.setattr(pipelines, "detect", detect)
    return calls


@pytest.mark.slow
def test_detect_from_the_plugin_menu_puts_over_50k_cells_under_level_of_detail(
    sample_viewer, open_dock, qtbot, monkeypatch
):
    """Issue 26 item 5: Detect opened from Plugins > PathReview (proxied viewer and layers) on a 13 824² mosaic
    of the bundled sample: > 50 000 cells get level of detail, a density image zoomed out and only the
    in-view cells zoomed in; the score filter reaches what is drawn; the proxies follow the layer."""
    from napari_pathreview.widgets.lod_control import controller_for

    viewer = sample_viewer
    sample = viewer.layers[0]
    viewer.add_image(
        _mosaic(np.asarray(sample.data), MOSAIC_REPS),
        name="mosaic",
        rgb=True,
        multiscale=True,
        scale=(0.25, 0.25),
        metadata={"mpp": 0.25},
    )
    calls = _mosaic_detect(monkeypatch)
    w = open_dock(viewer, "detect")
    assert type(w.viewer).__name__ == "PublicOnlyProxy"  # what napari hands a plugin dock
    w.device.setCurrentText("cpu")
    w.image.setCurrentText("mosaic")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    layer = viewer.layers["mosaic cells"]
    n = len(layer.data)
    assert len(calls) == 1 and calls[0][1].mpp == 0.25 and n == calls[0][2] * MOSAIC_REPS**2 > 50_000
    ctl = controller_for(layer)
    assert ctl is not None, "level of detail did not engage for a Detect result opened from the menu"
    assert w.status.text() == f"{n} cells"
    names = ["mosaic cells", "mosaic cells (in view)", "mosaic cells (overview)"]
    assert [ly.name for ly in viewer.layers][-3:] == names
    # zoomed out on the whole mosaic: the density image, not 65 000 markers
    viewer.reset_view()
    _wait_update(qtbot, ctl)
    assert ctl.decision.mode == "density" and ctl.overview.visible and not ctl.in_view.visible
    assert int(ctl.lod.pyramid.counts.sum()) == n
    # zoomed in (world coordinates are µm): only the cells around the view, as points
    viewer.camera.center, viewer.camera.zoom = (1_728.0, 1_728.0), 3.0
    _wait_update(qtbot, ctl)
    assert ctl.decision.mode == "points" and ctl.in_view.visible and not ctl.overview.visible
    cov, yx = ctl.decision.covered, layer.data
    near = in_view(yx, cov)
    assert 0 < ctl.shown_count == int(near.sum()) < 2_000
    np.testing.assert_array_equal(ctl.in_view.data, yx[near])
    drawn = ctl.shown_count
    # the live score filter reaches the drawn cells; the layer keeps them all
    w.score.setValue(80)
    _wait_update(qtbot, ctl)
    high = np.asarray(layer.features["score"]) >= 0.8
    assert int(layer.shown.sum()) == int(high.sum()) and len(layer.data) == n
    assert 0 < ctl.shown_count < drawn
    np.testing.assert_array_equal(ctl.in_view.data, yx[near & high])
    # the proxies follow the full layer in the layer list
    i = [ly.name for ly in viewer.layers].index("mosaic cells")
    viewer.layers.move(i, 0)
    assert [ly.name for ly in viewer.layers][:3] == names


def test_view_of_an_empty_layer_is_harmless():
    lod = PointsLOD(np.zeros((0, 2)), np.zeros((0, 4)))
    d = lod.decide(View(0, 0, 10, 10))
    assert d.mode == "points" and len(d.indices) == 0
    assert LinesLOD(np.zeros((0, 2)), np.zeros((0, 2))).decide(View(0, 0, 10, 10)).mode == "hidden"


@pytest.mark.slow
def test_enhance_widget_puts_large_cell_and_attention_layers_under_level_of_detail(
    make_napari_viewer, open_dock, qtbot, monkeypatch
):
    """The Enhance widget's result path with 60 000 cells and 5 attended cells each (the enhancer replaced
    by a stub returning a real EnhanceResult): the enhanced cells and the attention lines get controllers;
    redrawing the attention (top-k) replaces the lines layer, its proxy and its controller."""
    from scipy.spatial import cKDTree

    from napari_pathreview.backend import pipelines
    from napari_pathreview.backend.enhancement import EnhanceResult
    from napari_pathreview.backend.models.enhancer import Attention
    from napari_pathreview.backend.points import CellPoints
    from napari_pathreview.widgets.layers import points_layer_data
    from napari_pathreview.widgets.lod_control import controller_for

    viewer = make_napari_viewer()
    w = open_dock(viewer, "enhance")  # from the plugin menu: a proxied viewer
    classes = list(w.model_card().classes)
    rng = np.random.default_rng(4)
    n = 60_000
    yx = rng.uniform(0, 6_000, (n, 2)).astype(np.float32)
    labels = rng.integers(0, len(classes), n)
    base = CellPoints(
        yx, labels, rng.random(n).astype(np.float32), np.eye(len(classes), dtype=np.float32)[labels], classes, mpp=0.5
    )
    data, kwargs, _ = points_layer_data(base, "cells")
    viewer.add_points(data, **kwargs)
    _, nn = cKDTree(yx).query(yx, k=6)
    src, dst = np.repeat(np.arange(n), 5), nn[:, 1:].reshape(-1)
    weights = rng.random((2, 2, len(src))).astype(np.float32)
    new_labels = np.where(rng.random(n) < 0.1, (labels + 1) % len(classes), labels)
    enhanced = CellPoints(
        yx, new_labels, base.scores, np.eye(len(classes), dtype=np.float32)[new_labels], classes, mpp=0.5
    )
    result = EnhanceResult(base, enhanced, new_labels != labels, Attention(src, dst, weights))
    monkeypatch.setattr(pipelines, "enhance", lambda *a, **k: result)
    w.device.setCurrentText("cpu")
    w.cells.setCurrentText("cells")
    w.params["top_k"].value = 2
    w.params["threshold"].value = 0.0
    _run_widget(w, qtbot)
    enh, att = viewer.layers["cells enhanced"], viewer.layers["cells attention"]
    assert len(enh.data) == n and len(att.data) == 2 * n
    ctl_cells, ctl_lines = controller_for(enh), controller_for(att)
    assert ctl_cells is not None and ctl_lines is not None
    assert {"cells enhanced (overview)", "cells enhanced (in view)", "cells attention (in view)"} <= {
        ly.name for ly in viewer.layers
    }
    assert w.cells.names() == ["cells", "cells enhanced"]  # no proxies in the picker
    # top-k 1: the lines layer is replaced; the old controller and its proxy go with it
    w.params["top_k"].value = 1
    att2 = viewer.layers["cells attention"]
    assert att2 != att and len(att2.data) == n and controller_for(att2) is not None
    assert not ctl_lines._attached and controller_for(att) is None
    assert [ly.name for ly in viewer.layers].count("cells attention (in view)") == 1
    # zoomed in: only the changed cells once "only changed" is ticked
    viewer.camera.center, viewer.camera.zoom = (3_000.0, 3_000.0), 1.5
    w.only_changed.setChecked(True)
    _wait_update(qtbot, ctl_cells)
    ctl_cells.flush()
    assert ctl_cells.decision.mode == "points" and ctl_cells.shown_count > 0
    changed_yx = enh.data[np.asarray(enh.features["changed"], bool)]
    assert np.isin(
        ctl_cells.in_view.data.view([("", np.float32)] * 2), changed_yx.astype(np.float32).view([("", np.float32)] * 2)
    ).all()
    assert len(enh.data) == n and int(enh.shown.sum()) == int(result.changed.sum())


def _run_widget(w, qtbot):
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
