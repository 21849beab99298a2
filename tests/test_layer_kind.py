"""Layer kinds through napari's plugin proxy: docks opened from Plugins > PathReview get a proxied viewer
whose layers are wrapped, so kinds are told by isinstance (widgets.base.layer_kind), never by type name."""

from __future__ import annotations

import numpy as np


def test_layer_kind_sees_through_the_plugin_proxy(make_napari_viewer, open_dock):
    from napari.utils._proxies import PublicOnlyProxy

    from napari_pathreview.widgets.base import layer_kind

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 20, 3), np.uint8), name="img", rgb=True)
    viewer.add_labels(np.zeros((20, 20), np.int32), name="lab")
    viewer.add_points(np.zeros((1, 2)), name="pts")
    viewer.add_shapes([np.array([[0, 0], [0, 5], [5, 5]], float)], shape_type="polygon", name="shp")
    w = open_dock(viewer, "compare")
    proxied = w.viewer.layers["lab"]
    assert isinstance(proxied, PublicOnlyProxy) and type(proxied).__name__ != "Labels"  # what broke name checks
    assert [layer_kind(w.viewer.layers[n]) for n in ("img", "lab", "pts", "shp")] == [
        "image",
        "labels",
        "points",
        "shapes",
    ]
    assert layer_kind(None) == "" and layer_kind(object()) == ""
    # the pickers list layers by kind
    assert [w.image.itemText(i) for i in range(w.image.count())] == ["lab", "pts"]


def test_train_dock_lists_image_layers_from_the_plugin_menu(make_napari_viewer, open_dock):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 20, 3), np.uint8), name="slide a", rgb=True)
    viewer.add_labels(np.zeros((20, 20), np.int32), name="nuclei")
    viewer.add_image(np.zeros((20, 20, 3), np.uint8), name="slide b", rgb=True)
    w = open_dock(viewer, "train")
    assert w.image_classes.layer_names() == ["slide a", "slide b"]
