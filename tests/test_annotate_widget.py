"""'Annotate cells' dock, opened from Plugins > PathReview (``open_dock``) on the bundled sample: what the
screen shows after making a layer (one set of class buttons; the scale bar in µm, no 'inconsistent units')."""

import numpy as np
from qtpy.QtWidgets import QPushButton


def _class_buttons(w):
    return [b for b in w.findChildren(QPushButton) if b not in (w.new_btn, w.copy_btn) and not b.isHidden()]


def test_new_layer_shows_one_set_of_class_buttons_and_micron_units(sample_viewer, open_dock, qtbot):
    w = open_dock(sample_viewer, "annotate")
    image = sample_viewer.layers["MoNuSeg tile"]
    classes, _ = w.classes()
    assert len(_class_buttons(w)) == len(classes)
    layer = w.new_layer()
    # the buttons rebuilt for the layer replace the old ones at once, even before the event loop deletes
    # the old ones (a screenshot taken then showed both sets drawn over each other)
    buttons = _class_buttons(w)
    assert len(buttons) == len(layer.metadata["classes"]), [b.text() for b in buttons]
    # the sample is scaled in µm (0.25 µm/px): the image and the annotation layer say so, alike
    assert np.allclose(image.scale[-2:], 0.25) and np.allclose(layer.scale[-2:], 0.25)
    assert [str(u) for u in image.units] == [str(u) for u in layer.units] == ["micrometer"] * 2


def test_copy_for_correction_keeps_the_prediction_units(sample_viewer, open_dock, qtbot):
    det = open_dock(sample_viewer, "detect")
    det.device.setCurrentText("cpu")
    det.run()
    qtbot.waitUntil(lambda: det.worker is None, timeout=120_000)
    cells = det.points_layer
    w = open_dock(sample_viewer, "annotate")
    copy = w.copy_for_correction(cells)
    assert [str(u) for u in copy.units] == [str(u) for u in cells.units] == ["micrometer"] * 2
    assert np.array_equal(copy.data, cells.data) and not cells.visible


def test_the_current_class_button_shows_pressed(sample_viewer, open_dock):
    """The class the next clicks get is visible in the dock (its button pressed), not only in the status."""
    w = open_dock(sample_viewer, "annotate")
    layer = w.new_layer()
    classes = layer.metadata["classes"]

    def pressed():
        return [b.property("class_name") for b in _class_buttons(w) if b.isChecked()]

    assert pressed() == [classes[0]]
    w.set_class(layer, classes[1], selected=False)
    assert pressed() == [classes[1]] and w.current_class() == classes[1]
    [b for b in _class_buttons(w) if b.property("class_name") == classes[2]][0].click()
    assert pressed() == [classes[2]]
    layer.add(np.array([100.0, 100.0]))
    assert str(layer.features["class"].iloc[-1]) == classes[2]
