import numpy as np

from napari_pathreview.backend.points import find_peaks, point_targets, sample_bilinear


def test_targets_peak_at_points_and_classes_nearest():
    yx = np.array([[10.2, 10.7], [30.0, 40.0], [50, 5]], np.float32)
    labels = np.array([1, 0, -1])
    obj, cls = point_targets((64, 64), yx, labels, sigma=2.0, class_radius=4.0)
    assert obj[10, 11] == 1.0 and obj[30, 40] == 1.0
    assert np.isclose(obj[30, 42], np.exp(-4 / 8), atol=1e-6)
    assert cls[10, 11] == 1 and cls[31, 41] == 0
    assert cls[50, 5] == -1 and cls[0, 63] == -1  # unlabeled nucleus and far pixels are ignored
    peaks = find_peaks(obj, 0.5, 3)
    assert {tuple(p) for p in peaks} == {(10, 11), (30, 40), (50, 5)}


def test_sample_bilinear_is_linear():
    yy, xx = np.mgrid[0:8, 0:9].astype(np.float32)
    fmap = np.stack([yy, xx, 2 * yy + 3 * xx])
    pts = np.array([[1.5, 2.25], [6.9, 7.1], [0, 0]], np.float32)
    out = sample_bilinear(fmap, pts)
    assert np.allclose(out[:, 0], pts[:, 0]) and np.allclose(out[:, 1], pts[:, 1])
    assert np.allclose(out[:, 2], 2 * pts[:, 0] + 3 * pts[:, 1], atol=1e-5)


def test_crowding_narrows_only_touching_cells():
    yx = np.array([[20.0, 20.0], [20.0, 30.0], [50.0, 50.0]], np.float32)  # two cells 10 px apart, one alone
    labels = np.array([0, 0, 1])
    wide, _ = point_targets((80, 80), yx, labels, sigma=6.0)
    crowd, _ = point_targets((80, 80), yx, labels, sigma=6.0, crowding=0.4)
    # sigma of the touching pair drops to 0.4 * 10 = 4 px: the dip between them deepens
    assert np.isclose(wide[20, 25], np.exp(-25 / 72), atol=1e-6)
    assert np.isclose(crowd[20, 25], np.exp(-25 / 32), atol=1e-6)
    # the isolated cell (nearest neighbour ~36 px away) keeps sigma 6
    assert np.isclose(crowd[50, 56], wide[50, 56]) and np.isclose(wide[50, 56], np.exp(-36 / 72), atol=1e-6)
    assert crowd[20, 20] == 1.0 and crowd[20, 30] == 1.0
