"""Graphs between cells for review: k-nearest neighbours, radius, and feature similarity.

Every function returns :class:`Edges` (``src``, ``dst`` int64 and ``weight`` float32 arrays of equal
length, E); ``layers.edges_layer_data`` turns them into a napari Vectors layer. Candidate pairs always
come from a KD-tree, so graphs over 10^6 cells stay sparse (no N×N matrix).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Edges(NamedTuple):
    """Directed edges ``src[e] -> dst[e]`` with ``weight[e]`` (distance, or similarity)."""

    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray

    @classmethod
    def empty(cls) -> Edges:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def knn_graph(yx: np.ndarray, k: int = 3) -> Edges:
    """Each cell -> its ``k`` nearest other cells (directed); weight = distance (units of ``yx``).
    ``yx`` may be (N, D) of any D (feature-space kNN)."""
    from scipy.spatial import cKDTree

    yx = np.asarray(yx, np.float64)
    yx = yx.reshape(len(yx), -1)
    n = len(yx)
    k = int(min(k, n - 1))
    if k < 1:
        return Edges.empty()
    dist, idx = cKDTree(yx).query(yx, k=k + 1)
    # drop each cell itself (usually column 0; with duplicate positions it may sit elsewhere)
    not_self = idx != np.arange(n)[:, None]
    keep = not_self & (np.cumsum(not_self, 1) <= k)
    src = np.repeat(np.arange(n), k + 1).reshape(n, k + 1)[keep]
    return Edges(src.astype(np.int64), idx[keep].astype(np.int64), dist[keep].astype(np.float32))


def radius_graph(yx: np.ndarray, r: float) -> Edges:
    """Every ordered pair of distinct cells closer than ``r`` (both directions); weight = distance."""
    from scipy.spatial import cKDTree

    yx = np.asarray(yx, np.float64).reshape(-1, 2)
    if len(yx) < 2:
        return Edges.empty()
    pairs = cKDTree(yx).query_pairs(r, output_type="ndarray")
    if len(pairs) == 0:
        return Edges.empty()
    d = np.linalg.norm(yx[pairs[:, 0]] - yx[pairs[:, 1]], axis=1).astype(np.float32)
    return Edges(
        np.r_[pairs[:, 0], pairs[:, 1]].astype(np.int64), np.r_[pairs[:, 1], pairs[:, 0]].astype(np.int64), np.r_[d, d]
    )


def cosine_similarity(features: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Cosine similarity of feature rows ``src[e]`` and ``dst[e]`` -> (E,) float32."""
    f = np.asarray(features, np.float32)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return np.einsum("ef,ef->e", f[src], f[dst]).astype(np.float32)


def feature_similarity_graph(
    features: np.ndarray,
    threshold: float = 0.97,
    yx: np.ndarray | None = None,
    k: int = 16,
    radius: float | None = None,
) -> Edges:
    """Pairs of cells whose feature vectors have cosine similarity >= ``threshold`` (0.97 in the original).

    Candidates (to stay sparse): the pairs closer than ``radius`` when given with ``yx``; else the ``k``
    nearest cells in position when ``yx`` is given; else the ``k`` nearest in feature space (cosine).
    Returns each unordered pair once (src < dst); weight = cosine similarity.
    """
    f = np.asarray(features, np.float32)
    n = len(f)
    if n < 2:
        return Edges.empty()
    if yx is not None and radius is not None:
        cand = radius_graph(yx, radius)
    elif yx is not None:
        cand = knn_graph(yx, k)
    else:
        unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        cand = knn_graph(unit, k)
    src, dst = np.minimum(cand.src, cand.dst), np.maximum(cand.src, cand.dst)
    if len(src) == 0:
        return Edges.empty()
    pair = np.unique(np.stack([src, dst], 1), axis=0)
    sim = cosine_similarity(f, pair[:, 0], pair[:, 1])
    keep = sim >= threshold
    return Edges(pair[keep, 0].astype(np.int64), pair[keep, 1].astype(np.int64), sim[keep])
