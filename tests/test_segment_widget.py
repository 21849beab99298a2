"""The Segment dock, opened from Plugins > PathReview as a user opens it (``open_dock``): an aligned Labels
layer with an instance table, at the image's full resolution."""

import threading

import numpy as np

COLUMNS = {"index", "area_px", "area_um2", "centroid_y", "centroid_x", "mean_intensity"}


def _open(viewer, name):
    return viewer.open_sample("napari-pathreview", f"monuseg_{name}")[0]


def _run(w, qtbot):
    w.device.setCurrentText("cpu")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)


def test_segment_widget_adds_aligned_labels_layer_with_features(sample_viewer, open_dock, qtbot):
    viewer = sample_viewer
    image = viewer.layers[0]
    w = open_dock(viewer, "segment")
    assert w.image.currentText() == image.name and w.model.count() >= 1
    w.params["tile"].value = 256
    _run(w, qtbot)
    layer = viewer.layers[f"{image.name} nuclei"]
    assert layer == w.labels_layer and w.labels_layer.__class__.__name__ == "Labels"
    assert layer.data.shape == image.data.shape[:2]
    assert np.allclose(layer.scale, image.scale) and np.allclose(layer.translate, image.translate)
    assert COLUMNS <= set(layer.features.columns)
    ids = np.unique(layer.data)[1:]
    assert len(ids) > 20 and np.array_equal(np.sort(layer.features["index"]), ids)
    f = layer.features
    assert ((f["centroid_y"] >= 0) & (f["centroid_y"] < 512) & (f["centroid_x"] >= 0) & (f["centroid_x"] < 512)).all()
    k = int(f["index"].iloc[0])
    grey = np.asarray(image.data)[..., :3].mean(-1)
    assert np.isclose(f["mean_intensity"].iloc[0], grey[layer.data == k].mean(), atol=0.05)
    assert np.isclose(f["area_px"].iloc[0], (layer.data == k).sum())
    assert w.status.text() == f"{len(ids)} nuclei"
    # the default model was trained on stain-normalised images: normalising is on; off gives other masks
    assert w.params["stain_norm"].value
    w.params["stain_norm"].value = False
    _run(w, qtbot)
    plain = viewer.layers[-1]
    assert plain != layer and plain.data.shape == layer.data.shape
    assert not np.array_equal(plain.data > 0, layer.data > 0)


def test_segment_widget_asks_for_the_pixel_size_in_gui_words_and_a_typed_one_scales_the_image(
    make_napari_viewer, open_dock, qtbot
):
    from napari_pathreview._sample_data import sample_path

    viewer = make_napari_viewer()
    image = viewer.open(str(sample_path("tile")), plugin="napari-pathreview")[0]  # a PNG: no mpp
    assert np.allclose(image.scale, 1.0)
    w = open_dock(viewer, "segment")
    w.run()
    assert w.worker is None
    assert (
        w.status.text() == f"'{image.name}': microns per pixel unknown; set 'mpp (µm/px)' (0.25 for 40x, 0.5 for 20x)"
    )
    w.mpp.setValue(0.25)
    w.params["tile"].value = 256
    _run(w, qtbot)
    layer = viewer.layers[f"{image.name} nuclei"]
    # the typed value is now the image's scale (µm), and the labels carry it
    assert np.allclose(image.scale, 0.25) and image.metadata["mpp"] == 0.25
    assert layer.data.shape == (512, 512) and np.allclose(layer.scale, 0.25) and len(layer.features) > 20


def test_segment_widget_on_a_pyramid_gives_full_resolution_multiscale_labels(make_napari_viewer, open_dock, qtbot):
    """Issue 26 item 6: the bundled pyramid (0.25 µm/px) was segmented at its 0.5 µm/px level (the model's
    scale), so the labels had half the image's resolution."""
    viewer = make_napari_viewer()
    image = _open(viewer, "pyramid")
    assert image.multiscale
    w = open_dock(viewer, "segment")
    _run(w, qtbot)
    layer = viewer.layers[f"{image.name} nuclei"]
    assert layer.multiscale and len(layer.data) >= 2
    assert layer.data[0].shape == image.data[0].shape[:2]  # full resolution
    assert np.allclose(layer.scale, image.scale) and np.allclose(layer.translate, image.translate)
    assert np.allclose(layer.extent.world, image.extent.world)
    assert len(layer.features) > 20 and COLUMNS <= set(layer.features.columns)
    assert layer.metadata["downsample"] == 1.0


def test_probability_and_minimum_size_thresholds_reach_the_instances(sample_viewer, open_dock, qtbot):
    viewer = sample_viewer
    image = viewer.layers[0]
    w = open_dock(viewer, "segment")
    card = w.model_card()
    assert np.isclose(w.params["threshold"].value, card.params["threshold"])
    assert np.isclose(w.params["min_area_um2"].value, card.params["min_area_um2"])
    w.params["tile"].value = 256
    _run(w, qtbot)
    base = w.labels_layer
    areas = np.asarray(base.features["area_um2"])
    w.params["min_area_um2"].value = float(np.median(areas))
    _run(w, qtbot)
    big = w.labels_layer
    assert big != base and 0 < len(big.features) < len(areas)
    assert (np.asarray(big.features["area_um2"]) >= np.median(areas) - 0.07).all()  # one pixel of 0.0625 µm²
    w.params["min_area_um2"].value = card.params["min_area_um2"]
    w.params["threshold"].value = 0.9
    _run(w, qtbot)
    strict = w.labels_layer
    assert (np.asarray(strict.data) > 0).sum() < (np.asarray(base.data) > 0).sum()
    assert w.status.text() == f"{len(strict.features)} nuclei" and image in viewer.layers


def test_cancel_acts_inside_a_tta_ensemble_tile(sample_viewer, open_dock, qtbot, monkeypatch):
    """Issue 26 item 6: Cancel took 17-19 s during one TTA x ensemble tile (8 network passes). Now the
    dock stops waiting at once and the job itself stops before its next pass. The networks here block until
    the test releases them, as a pass on a large tile does on a busy CPU."""
    import torch

    from napari_pathreview.backend import pipelines

    entered, release, passes = threading.Event(), threading.Event(), []

    class Blocking(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.stride = inner, inner.stride

        def forward(self, x):
            passes.append(1)
            entered.set()
            release.wait(60)
            return self.inner(x)

    real = pipelines.get_models

    def models(weights, task, device):
        ms, cs = real(weights, task, device)
        return [Blocking(m) for m in ms], cs

    monkeypatch.setattr(pipelines, "get_models", models)
    viewer = sample_viewer
    w = open_dock(viewer, "segment")
    w.params["tta"].value = True
    w.ensemble_with.setCurrentIndex(2)  # the second model
    assert w.ensemble_with.currentText() not in ("(none)", w.model.currentText())
    w.device.setCurrentText("cpu")
    n_layers = len(viewer.layers)
    w.run()
    qtbot.waitUntil(entered.is_set, timeout=60_000)
    w.cancel_btn.click()
    try:
        # the dock is free while the network pass is still running
        qtbot.waitUntil(lambda: w.worker is None, timeout=20_000)
        assert w.status.text() == "cancelled" and w.run_btn.isEnabled() and not release.is_set()
        assert len(viewer.layers) == n_layers
    finally:
        release.set()
    # the job stops before its next pass: one of the tile's 8 (4 flips x 2 models) ran
    job = [t for t in threading.enumerate() if t.name == "pathreview-job"]
    for t in job:
        t.join(60)
    assert len(passes) == 1
    monkeypatch.setattr(pipelines, "get_models", real)
    w.params["tta"].value = False
    w.ensemble_with.setCurrentIndex(0)
    w.params["tile"].value = 256
    _run(w, qtbot)
    assert w.status.text().endswith("nuclei") and len(viewer.layers) == n_layers + 1


def test_cancel_stops_a_running_segmentation(sample_viewer, open_dock, qtbot):
    """Cancel mid-run: the job stops at its next tile, no layer is added and the widget runs again."""
    viewer = sample_viewer
    image = viewer.layers[0]
    viewer.add_image(
        np.tile(np.asarray(image.data), (8, 8, 1)), name="big", rgb=True, scale=(0.25, 0.25), metadata={"mpp": 0.25}
    )
    w = open_dock(viewer, "segment")
    w.device.setCurrentText("cpu")
    w.image.setCurrentText("big")
    w.params["tile"].value = 256
    n_layers = len(viewer.layers)
    w.run()
    qtbot.waitUntil(lambda: w.status.text().startswith("tiles"), timeout=60_000)
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert w.status.text() == "cancelled"
    assert len(viewer.layers) == n_layers and w.run_btn.isEnabled()
    w.image.setCurrentText(image.name)
    _run(w, qtbot)
    assert f"{image.name} nuclei" in viewer.layers


def test_a_rerun_never_replaces_a_layer_of_the_same_name(sample_viewer, open_dock, qtbot):
    """The user's edited labels layer named like the widget's output stays as it was; the run adds its own."""
    viewer = sample_viewer
    image = viewer.layers[0]
    painted = np.zeros((512, 512), np.int32)
    painted[100:120, 100:120] = 7
    mine = viewer.add_labels(painted.copy(), name=f"{image.name} nuclei", scale=image.scale[-2:])
    w = open_dock(viewer, "segment")
    w.params["tile"].value = 256
    _run(w, qtbot)
    assert mine in viewer.layers and np.array_equal(mine.data, painted)
    assert w.labels_layer != mine and w.labels_layer.name != mine.name
    assert int(np.asarray(w.labels_layer.data).max()) > 20
