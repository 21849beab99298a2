"""The Segment dock widget in a real napari viewer: an aligned Labels layer with an instance table."""
import numpy as np

from napari_pathreview.widgets.segment import SegmentWidget

COLUMNS = {"index", "area_px", "area_um2", "centroid_y", "centroid_x", "mean_intensity"}


def _open(viewer, name):
    return viewer.open_sample("napari-pathreview", f"monuseg_{name}")[0]


def _run(w, qtbot):
    w.device.setCurrentText("cpu")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)


def test_segment_widget_adds_aligned_labels_layer_with_features(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = _open(viewer, "tile")
    w = SegmentWidget(viewer)
    assert w.image.currentText() == image.name and w.model.count() >= 1
    w.tile.setValue(256)
    _run(w, qtbot)
    layer = viewer.layers[f"{image.name} nuclei"]
    assert type(layer).__name__ == "Labels"
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
    assert w.stain_norm.isChecked()
    w.stain_norm.setChecked(False)
    _run(w, qtbot)
    plain = viewer.layers[-1]
    assert plain is not layer and plain.data.shape == layer.data.shape
    assert not np.array_equal(plain.data > 0, layer.data > 0)


def test_segment_widget_asks_for_the_pixel_size_when_unknown(make_napari_viewer, qtbot):
    from napari_pathreview._sample_data import sample_path

    viewer = make_napari_viewer()
    image = viewer.open(str(sample_path("tile")), plugin="napari-pathreview")[0]  # a PNG: no mpp
    w = SegmentWidget(viewer)
    w.run()
    assert w.worker is None and "microns per pixel unknown" in w.status.text()
    w.mpp.setValue(0.25)
    w.tile.setValue(256)
    _run(w, qtbot)
    layer = viewer.layers[f"{image.name} nuclei"]
    assert layer.data.shape == (512, 512) and np.allclose(layer.scale, image.scale) and len(layer.features) > 20


def test_segment_widget_on_a_pyramid_gives_multiscale_labels_over_the_same_area(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = _open(viewer, "pyramid")
    assert image.multiscale
    w = SegmentWidget(viewer)
    _run(w, qtbot)
    layer = viewer.layers[f"{image.name} nuclei"]
    assert type(layer).__name__ == "Labels" and layer.multiscale and len(layer.data) >= 2
    assert np.allclose(layer.extent.world, image.extent.world, atol=image.scale[-1])
    assert len(layer.features) > 20 and COLUMNS <= set(layer.features.columns)


def test_cancel_stops_a_running_segmentation(make_napari_viewer, qtbot):
    """Cancel mid-run: the job stops at its next tile, no layer is added and the widget runs again."""
    viewer = make_napari_viewer()
    image = _open(viewer, "tile")
    viewer.add_image(np.tile(np.asarray(image.data), (8, 8, 1)), name="big", rgb=True, metadata={"mpp": 0.25})
    w = SegmentWidget(viewer)
    w.device.setCurrentText("cpu")
    w.image.setCurrentText("big")
    w.tile.setValue(256)
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


def test_a_rerun_never_replaces_a_layer_of_the_same_name(make_napari_viewer, qtbot):
    """The user's edited labels layer named like the widget's output stays as it was; the run adds its own."""
    viewer = make_napari_viewer()
    image = _open(viewer, "tile")
    painted = np.zeros((512, 512), np.int32)
    painted[100:120, 100:120] = 7
    mine = viewer.add_labels(painted.copy(), name=f"{image.name} nuclei", scale=image.scale[-2:])
    w = SegmentWidget(viewer)
    w.tile.setValue(256)
    _run(w, qtbot)
    assert mine in viewer.layers and np.array_equal(mine.data, painted)
    assert w.labels_layer is not mine and w.labels_layer.name != mine.name
    assert int(np.asarray(w.labels_layer.data).max()) > 20
