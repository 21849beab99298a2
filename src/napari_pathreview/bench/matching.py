"""``bench matching``: sparse one-to-one cell matching against scipy's dense assignment."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..backend.matching import match_points
from .common import bench, peak_rss_mb, timed


def _cells(n: int, rng, density_per_px2: float = 1 / 250.0, jitter: float = 2.0):
    """n annotated cells spread at CRCHisto-like density and n predictions: 90 % near a cell
    (Gaussian jitter, px), 10 % spurious."""
    side = float(np.sqrt(n / density_per_px2))
    gt = rng.uniform(0, side, (n, 2))
    k = int(0.9 * n)
    pred = np.vstack([gt[rng.permutation(n)[:k]] + rng.normal(0, jitter, (k, 2)), rng.uniform(0, side, (n - k, 2))])
    return pred, gt


@bench("matching")
def bench_matching(n: int = 1_000_000, dense_n: int = 5000, radius: float = 6.0, seed: int = 0) -> dict:
    """Ours: KD-tree candidates + Hungarian per connected component. Reference: scipy's dense
    linear_sum_assignment on the full distance matrix, at the largest N it handles here (dense_n)."""

    rng = np.random.default_rng(seed)
    pred, gt = _cells(dense_n, rng)

    def dense(p, g):
        d = np.sqrt(((p[:, None, :] - g[None, :, :]) ** 2).sum(-1))
        big = radius * (len(p) + 1) + 1.0
        cost = np.where(d <= radius, d, big)
        r, c = linear_sum_assignment(cost)
        return int((cost[r, c] < big).sum())

    n_dense, t_dense = timed(dense, pred, gt)
    m_small, t_small = timed(match_points, pred, gt, radius)
    f1 = lambda tp, a, b: 2 * tp / (a + b)
    pred_l, gt_l = _cells(n, rng)
    m_big, t_big = timed(match_points, pred_l, gt_l, radius)
    return {
        "name": "matching",
        "reference": f"scipy linear_sum_assignment dense {dense_n}x{dense_n}",
        "n": n,
        "dense_n": dense_n,
        "ours_s": round(t_small, 4),
        "reference_s": round(t_dense, 4),
        "ratio": round(t_small / t_dense, 5),
        "same_f1": bool(len(m_small.pred_idx) == n_dense),
        "f1_ours": round(f1(len(m_small.pred_idx), dense_n, dense_n), 6),
        "f1_dense": round(f1(n_dense, dense_n, dense_n), 6),
        "large_n_s": round(t_big, 2),
        "large_n_f1": round(f1(len(m_big.pred_idx), n, n), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
