"""Pixel size in the docks (issue 26 item 4), opened from Plugins > PathReview: every widget treats an unknown
mpp the same way, in the dock's words; a typed mpp becomes the image's scale and takes along the layers
drawn over the image."""

import numpy as np
import pytest

MESSAGE = "'{name}': microns per pixel unknown; set 'mpp (µm/px)' (0.25 for 40x, 0.5 for 20x)"


def _png(viewer):
    from napari_pathreview._sample_data import sample_path

    image = viewer.open(str(sample_path("tile")), plugin="napari-pathreview")[0]  # a PNG: no pixel size
    assert image.metadata.get("mpp") is None and np.allclose(image.scale, 1.0)
    return image


@pytest.mark.parametrize("key", ["detect", "segment", "weak", "train"])
def test_every_widget_refuses_an_unknown_mpp_in_the_same_gui_words(make_napari_viewer, open_dock, key):
    """Before: Detect said `give --mpp (...)` (the command line's words), Weak cell types ran anyway and Train
    assumed the model's pixel size."""
    viewer = make_napari_viewer()
    image = _png(viewer)
    viewer.add_points(
        np.array([[100.0, 100.0], [200.0, 300.0]]), name="my cells", features={"class": ["epithelial", "inflammatory"]}
    )
    w = open_dock(viewer, key)
    if key == "train":
        w.kind.setCurrentText("detector")
        w.annotations.setCurrentText("my cells")
        w.params["save_as"].value = "never-saved"
    w.image.setCurrentText(image.name)
    w.run()
    assert w.worker is None, f"{key} ran on an image of unknown pixel size"
    assert w.status.text() == MESSAGE.format(name=image.name)
    assert np.allclose(image.scale, 1.0)


def test_typed_mpp_takes_the_layers_drawn_over_the_image_along(make_napari_viewer, open_dock, qtbot):
    viewer = make_napari_viewer()
    image = _png(viewer)
    painted = np.zeros((512, 512), np.int32)
    painted[100:120, 100:120] = 1
    mine = viewer.add_labels(painted, name="my nuclei")  # painted over the PNG: scale 1, pixels
    other = viewer.add_image(np.zeros((64, 64), np.uint8), name="another image")
    w = open_dock(viewer, "segment")
    w.image.setCurrentText(image.name)
    w.mpp.setValue(0.25)
    w.params["tile"].value = 256
    w.device.setCurrentText("cpu")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert np.allclose(image.scale, 0.25) and image.metadata["mpp"] == 0.25
    assert np.allclose(mine.scale, 0.25)  # still on the image
    assert np.allclose(other.scale, 1.0)  # another image keeps its own scale
    assert np.allclose(w.labels_layer.scale, 0.25) and w.status.text().endswith("nuclei")
    # the same value again changes nothing
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert np.allclose(image.scale, 0.25) and np.allclose(mine.scale, 0.25)


def test_an_implausible_typed_mpp_is_refused_in_gui_words(sample_viewer, open_dock):
    w = open_dock(sample_viewer, "detect")
    w.mpp.setValue(w.mpp.maximum())
    w.mpp.setValue(0.005)  # below the plausible range (0.01 µm/px)
    w.run()
    text = w.status.text()
    assert w.worker is None and "--mpp" not in text
    assert text.startswith("mpp") and "set 'mpp (µm/px)' between" in text
    assert np.allclose(sample_viewer.layers[0].scale, 0.25)
