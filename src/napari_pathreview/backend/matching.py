"""One-to-one matching of predicted to annotated points, for evaluation and for training.

Two entry points over the same two solvers (Hungarian: maximum cardinality, then minimum total cost;
greedy: cheapest pairs first):

- :func:`match_points` (evaluation, ``metrics``, the enhancer's targets): points within a radius.
  Candidates come from a KD-tree (pairs closer than the radius); the assignment is solved per
  connected component of the candidate graph, so 10^6 x 10^6 points match in seconds instead of
  needing an N x M cost matrix.
- :func:`match_cost` (the enhancer's bipartite loss, as DETR's ``HungarianMatcher``): a dense cost
  matrix of one image's predictions and annotations, with the pairs that may match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Matches:
    """Result of matching ``pred`` (N, 2) to ``gt`` (M, 2) points.

    pred_idx, gt_idx: (K,) int arrays of matched pairs; distance: (K,) in the points' units.
    """

    pred_idx: np.ndarray
    gt_idx: np.ndarray
    distance: np.ndarray
    n_pred: int
    n_gt: int

    @property
    def unmatched_pred(self) -> np.ndarray:
        """Indices of false-positive predictions."""
        return np.setdiff1d(np.arange(self.n_pred), self.pred_idx)

    @property
    def unmatched_gt(self) -> np.ndarray:
        """Indices of missed annotations (false negatives)."""
        return np.setdiff1d(np.arange(self.n_gt), self.gt_idx)


def _empty(n_pred: int, n_gt: int) -> Matches:
    e = np.zeros(0, dtype=np.int64)
    return Matches(e, e.copy(), np.zeros(0), n_pred, n_gt)


def _greedy(rows: np.ndarray, cols: np.ndarray, n: int, m: int) -> np.ndarray:
    """Candidate pairs ``(rows[k], cols[k])`` (K,) visited in the order given (cheapest first): the
    positions k of those taken, each when both its prediction (of ``n``) and annotation (of ``m``) are
    still free."""
    used_p, used_g = np.zeros(n, bool), np.zeros(m, bool)
    keep = []
    for k in range(len(rows)):
        if not used_p[rows[k]] and not used_g[cols[k]]:
            used_p[rows[k]] = used_g[cols[k]] = True
            keep.append(k)
    return np.asarray(keep, dtype=np.int64)


def _hungarian(cost: np.ndarray, big: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal assignment of a dense (N, M) ``cost`` whose forbidden pairs cost ``big`` (more than any
    set of allowed pairs, so the number of allowed matches is maximised first) -> rows, cols (K,) of the
    allowed pairs matched."""
    from scipy.optimize import linear_sum_assignment

    r, k = linear_sum_assignment(cost)
    ok = cost[r, k] < big
    return r[ok], k[ok]


#: cost of a forbidden pair in :func:`match_cost` (costs there are O(1): class probability + L1 of
#: normalised coordinates)
FORBIDDEN_COST = 1e6


def match_cost(cost: np.ndarray, allowed: np.ndarray, method: str = "hungarian") -> tuple[np.ndarray, np.ndarray]:
    """Match one image's predictions to its annotations on a dense cost matrix.

    Args:
        cost: (N, M) cost of matching prediction i to annotation j (lower is better), N predictions,
            M annotations.
        allowed: (N, M) bool, False where a pair may not match (e.g. further apart than the radius).
        method: "hungarian" (maximum number of allowed matches, then minimum total cost) or "greedy"
            (cheapest allowed pairs first).

    Returns ``(pred_idx, gt_idx)``: (K,) int arrays of the matched pairs, K <= min(N, M).
    """
    cost = np.array(cost, copy=True)
    cost[~np.asarray(allowed, bool)] = FORBIDDEN_COST
    if method == "hungarian":
        return _hungarian(cost, FORBIDDEN_COST)
    if method != "greedy":
        raise ValueError(f"unknown matching method {method!r}; use 'hungarian' or 'greedy'")
    order = np.argsort(cost, axis=None)
    stop = np.flatnonzero(cost.flat[order] >= FORBIDDEN_COST)
    order = order[: stop[0]] if len(stop) else order
    rows, cols = np.divmod(order, cost.shape[1])
    keep = _greedy(rows, cols, *cost.shape)
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


def _local_index(node: np.ndarray, pair_comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: the node's index among the distinct nodes of its component; and nodes per component."""
    uniq, inv = np.unique(node, return_inverse=True)
    ucomp = np.zeros(len(uniq), np.int64)
    ucomp[inv] = pair_comp
    order = np.argsort(ucomp, kind="stable")
    counts = np.bincount(ucomp, minlength=pair_comp.max() + 1)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    local = np.empty(len(uniq), np.int64)
    local[order] = np.arange(len(uniq)) - starts[ucomp[order]]
    return local[inv], counts


def match_points(pred: np.ndarray, gt: np.ndarray, radius: float, method: str = "hungarian") -> Matches:
    """Match points one-to-one within ``radius``.

    Args:
        pred: (N, 2) predicted coordinates (y, x), any unit.
        gt: (M, 2) annotated coordinates, same unit.
        radius: largest allowed distance of a match, same unit.
        method: "hungarian" (optimal per connected component) or "greedy" (closest pairs first).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    n, m = len(pred), len(gt)
    if n == 0 or m == 0:
        return _empty(n, m)
    pairs = cKDTree(pred).sparse_distance_matrix(cKDTree(gt), radius, output_type="ndarray")
    if len(pairs) == 0:
        return _empty(n, m)
    pi, gi, d = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
    if method == "greedy":
        order = np.argsort(d, kind="stable")
        keep = order[_greedy(pi[order], gi[order], n, m)]
        return Matches(pi[keep], gi[keep], d[keep], n, m)
    if method != "hungarian":
        raise ValueError(f"unknown matching method {method!r}; use 'hungarian' or 'greedy'")
    graph = coo_matrix((np.ones(len(pi)), (pi, n + gi)), shape=(n + m, n + m))
    _, comp = connected_components(graph, directed=False)
    pair_comp = comp[pi]
    # Local index of every node inside its component (vectorised; no per-component np.unique).
    lp, n_p = _local_index(pi, pair_comp)
    lg, n_g = _local_index(gi, pair_comp)
    # A component with one prediction or one annotation is solved by its shortest pair.
    star = (n_p[pair_comp] == 1) | (n_g[pair_comp] == 1)
    sc, sd = pair_comp[star], d[star]
    order = np.lexsort((sd, sc))
    first = order[np.r_[True, np.diff(sc[order]) != 0]] if len(order) else order
    out_p, out_g, out_d = [pi[star][first]], [gi[star][first]], [sd[first]]
    rest = ~star
    pi, gi, d, pair_comp, lp, lg = pi[rest], gi[rest], d[rest], pair_comp[rest], lp[rest], lg[rest]
    order = np.argsort(pair_comp, kind="stable")
    pi, gi, d, pair_comp, lp, lg = pi[order], gi[order], d[order], pair_comp[order], lp[order], lg[order]
    bounds = np.flatnonzero(np.diff(pair_comp)) + 1
    for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(pi)]):
        if e <= s:
            continue
        c = pair_comp[s]
        # Non-candidates cost more than any set of candidate matches, so cardinality is maximised first.
        big = radius * (e - s + 1) + 1.0
        cost = np.full((n_p[c], n_g[c]), big)
        cost[lp[s:e], lg[s:e]] = d[s:e]
        r, k = _hungarian(cost, big)
        rows = np.empty(n_p[c], np.int64)
        rows[lp[s:e]] = pi[s:e]
        cols = np.empty(n_g[c], np.int64)
        cols[lg[s:e]] = gi[s:e]
        out_p.append(rows[r]), out_g.append(cols[k]), out_d.append(cost[r, k])
    return Matches(np.concatenate(out_p), np.concatenate(out_g), np.concatenate(out_d), n, m)
