"""Run on a drawn region only: Detect and Segment opened from the menu on the bundled sample, with a
Shapes layer drawn over part of it (world coordinates, µm)."""

import numpy as np
import pytest

from napari_pathreview.backend.errors import InputError
from napari_pathreview.backend.regions import build_region


def test_region_box_contains_and_mask():
    tri = np.array([[10.0, 10.0], [10.0, 50.0], [50.0, 10.0]])
    r = build_region([tri], (100, 100))
    assert r.box == (10, 51, 10, 51) and np.allclose(r.offset, [10, 10])
    assert r.contains(np.array([[15.0, 15.0], [45.0, 45.0]])).tolist() == [True, False]
    m = r.mask()
    assert m.shape == (41, 41) and m[2, 2] and not m[38, 38]
    with pytest.raises(InputError, match="outlines no region"):
        build_region([tri[:2]], (100, 100))
    with pytest.raises(InputError, match="outside the image"):
        build_region([tri + 500], (100, 100))


def _shapes(viewer, polygon_um, kind="polygon"):
    return viewer.add_shapes([np.asarray(polygon_um, float)], shape_type=kind, name="roi")


def test_detect_on_a_drawn_polygon_keeps_the_cells_inside(sample_viewer, open_dock, qtbot):
    from napari_pathreview.backend import pipelines

    image = sample_viewer.layers[0]  # 512² px at 0.25 µm/px: 128 µm a side
    tri_um = [[4.0, 4.0], [4.0, 100.0], [100.0, 4.0]]
    _shapes(sample_viewer, tri_um)
    w = open_dock(sample_viewer, "detect")
    w.device.setCurrentText("cpu")
    w.image.setCurrentText(image.name)
    w.region.setCurrentText("roi")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    layer = sample_viewer.layers[f"{image.name} cells"]
    px = layer.data  # level-0 pixels of the image (the layer carries the image's scale)
    tri_px = np.array(tri_um) / 0.25
    region = build_region([tri_px], (512, 512))
    assert len(px) > 10 and region.contains(px).all()
    whole = pipelines.detect(np.asarray(image.data), pipelines.DetectOptions(mpp=0.25, device="cpu"))
    inside = whole.yx[region.contains(whole.yx)]
    # the same cells as detecting the whole image, away from the region's edges (context differs there)
    assert abs(len(px) - len(inside)) <= max(3, 0.15 * len(inside))
    from napari_pathreview.backend.matching import match_points

    m = match_points(px, inside, 4.0)
    assert len(m.pred_idx) >= 0.8 * len(inside)


def test_segment_on_a_drawn_rectangle_gives_labels_in_place(sample_viewer, open_dock, qtbot):
    image = sample_viewer.layers[0]
    _shapes(sample_viewer, [[20.0, 30.0], [20.0, 90.0], [70.0, 90.0], [70.0, 30.0]], "rectangle")
    w = open_dock(sample_viewer, "segment")
    w.device.setCurrentText("cpu")
    w.region.setCurrentText("roi")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    labels = [ly for ly in sample_viewer.layers if ly.name.endswith("nuclei")][-1]
    assert labels.data.shape == (201, 241)  # the rectangle's box, 50 x 60 µm at 0.25 µm/px (+1 px)
    assert np.allclose(labels.translate[-2:], np.asarray(image.translate[-2:]) + [20.0, 30.0])
    assert np.allclose(labels.scale[-2:], image.scale[-2:]) and labels.data.max() > 5
    cy, cx = labels.features["centroid_y"], labels.features["centroid_x"]
    assert ((cy >= 80) & (cy <= 281) & (cx >= 120) & (cx <= 361)).all()  # level-0 pixels of the image


def test_a_line_is_not_a_region(sample_viewer, open_dock, qtbot):
    _shapes(sample_viewer, [[4.0, 4.0], [50.0, 50.0]], "line")
    w = open_dock(sample_viewer, "detect")
    w.device.setCurrentText("cpu")
    w.region.setCurrentText("roi")
    n = len(sample_viewer.layers)
    w.run()
    assert w.worker is None and len(sample_viewer.layers) == n
    assert "outlines no region" in w.status.text()


def test_explain_on_a_drawn_rectangle_places_its_maps_over_it(sample_viewer, open_dock, qtbot):
    image = sample_viewer.layers[0]
    _shapes(sample_viewer, [[10.0, 20.0], [10.0, 100.0], [90.0, 100.0], [90.0, 20.0]], "rectangle")
    w = open_dock(sample_viewer, "explain")
    w.device.setCurrentText("cpu")
    w.params["method"].value = "cam"
    w.region.setCurrentText("roi")
    n = len(sample_viewer.layers)
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    maps = list(sample_viewer.layers)[n:]
    assert maps, w.status.text()
    for m in maps:  # each map covers the rectangle's box (80 x 80 µm), not the whole 128 µm tile
        lo = np.asarray(m.translate[-2:]) - np.asarray(m.scale[-2:]) / 2
        extent = np.asarray(m.data.shape[:2]) * np.asarray(m.scale[-2:])
        assert np.allclose(lo, np.asarray(image.translate[-2:]) + [10.0, 20.0], atol=2.0), (lo, m.translate)
        assert np.allclose(extent, [80.25, 80.25], atol=3.0), extent
