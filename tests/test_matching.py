import numpy as np
from scipy.optimize import linear_sum_assignment

from napari_pathreview.backend.matching import match_points
from napari_pathreview.backend.metrics import PointScores


def _dense_optimum(pred, gt, radius):
    d = np.linalg.norm(pred[:, None] - gt[None], axis=-1)
    big = radius * (len(pred) + len(gt) + 1) + 1
    cost = np.where(d <= radius, d, big)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < big
    return ok.sum(), cost[r[ok], c[ok]].sum()


def test_matching_equals_dense_optimum_on_random_clusters():
    rng = np.random.default_rng(1)
    for _trial in range(20):
        gt = rng.uniform(0, 60, (40, 2))
        pred = gt[rng.permutation(40)[:30]] + rng.normal(0, 2.5, (30, 2))
        pred = np.vstack([pred, rng.uniform(0, 60, (10, 2))])
        m = match_points(pred, gt, 6.0)
        n, total = _dense_optimum(pred, gt, 6.0)
        assert len(m.pred_idx) == n
        assert np.isclose(m.distance.sum(), total)
        assert len(np.unique(m.pred_idx)) == len(m.pred_idx) and len(np.unique(m.gt_idx)) == len(m.gt_idx)
        assert np.all(np.linalg.norm(pred[m.pred_idx] - gt[m.gt_idx], axis=1) <= 6.0 + 1e-9)


def test_hungarian_beats_greedy_on_a_chain():
    # greedy takes the closest pair (p1-g0, d=0.1) and leaves p0 and g1 unmatched; optimal matches both
    gt = np.array([[0.0, 2.9], [0.0, 6.0]])
    pred = np.array([[0.0, 0.0], [0.0, 3.0]])
    assert len(match_points(pred, gt, 3.0, "greedy").pred_idx) == 1
    assert len(match_points(pred, gt, 3.0, "hungarian").pred_idx) == 2


def test_empty_inputs():
    m = match_points(np.zeros((0, 2)), np.ones((3, 2)), 5)
    assert len(m.pred_idx) == 0 and list(m.unmatched_gt) == [0, 1, 2]


def test_point_scores_by_hand():
    classes = ["a", "b"]
    gt = np.array([[0, 0], [0, 10], [0, 20], [0, 30], [0, 40]], float)
    gl = np.array([0, 0, 1, -1, 1])  # index 3 is a nucleus without class
    pred = np.array([[0, 1], [0, 11], [0, 21], [0, 31], [0, 80]], float)
    pl = np.array([0, 1, 1, 0, 0])
    s = PointScores(classes, radius=3)
    s.add(pred, pl, gt, gl)
    r = s.as_dict()
    # detection: 4 matched, 1 false positive (x=80), 1 missed (x=40)
    assert (s.tp, s.fp, s.fn) == (4, 1, 1)
    assert np.isclose(r["detection"]["f1"], 0.8)
    # class a: tp 1 (x=0); fp: unmatched pred at 80; fn: gt x=10 predicted b  -> P 1/2, R 1/2
    assert np.isclose(r["classes"]["a"]["precision"], 0.5) and np.isclose(r["classes"]["a"]["recall"], 0.5)
    # class b: tp 1 (x=20); fp: pred x=10; fn: missed gt x=40 -> P 1/2, R 1/2, support 2
    assert np.isclose(r["classes"]["b"]["f1"], 0.5) and r["classes"]["b"]["support"] == 2
    assert r["classes"]["a"]["support"] == 2
