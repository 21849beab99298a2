"""``bench enhancer``: neighbour-sparse attention against dense N x N attention."""

from __future__ import annotations

import time

import numpy as np

from ..backend.weights import default_model, load_model
from .common import bench, in_child


def _enhancer_forward(n: int, mode: str, seed: int = 0) -> float:
    """Seconds for one forward of the shipped enhancer over n synthetic cells at CRCHisto density
    (~1 per 75 µm²); the model is loaded and warmed up before the clock and the memory baseline."""
    import torch

    torch.set_grad_enabled(False)
    model, _ = load_model(None, "enhancer", "cpu")
    rng = np.random.default_rng(seed)

    def inputs(m):
        side_um = float(np.sqrt(m * 75.6))
        pos = rng.uniform(0, side_um, (m, 2)).astype(np.float32)
        feats = rng.normal(0, 1, (m, model.cfg.feature_dim)).astype(np.float32)
        logits = rng.normal(0, 1, (m, len(model.cfg.classes))).astype(np.float32)
        return feats, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), pos

    model(*inputs(300), mode=mode)
    args = inputs(n)
    t = time.perf_counter()
    model(*args, mode=mode)
    return time.perf_counter() - t


@bench("enhancer")
def bench_enhancer(sizes=(1_000, 10_000, 100_000, 1_000_000), dense_max: int = 10_000) -> dict:
    """Ours: neighbour-sparse attention (KD-tree lists, gathered per chunk). Reference: dense N x N
    attention with the same distance mask, at every N up to ``dense_max`` (beyond it N² does not fit
    comfortably). Shipped enhancer weights; each run in a fresh forked process so its peak RSS growth
    (MB) is its own. ``ratio``: sparse time over dense time at ``dense_max``."""
    import torch

    rows = []
    for n in sizes:
        row = {"n": n}
        row["sparse_s"], row["sparse_rss_mb"] = in_child(_enhancer_forward, n, "sparse")
        if n <= dense_max:
            row["dense_s"], row["dense_rss_mb"] = in_child(_enhancer_forward, n, "dense")
        rows.append({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    ref = [r for r in rows if "dense_s" in r][-1]
    return {
        "name": "enhancer",
        "reference": "dense masked N x N attention (same model, same mask)",
        "model": default_model("enhancer"),
        "rows": rows,
        "n_compared": ref["n"],
        "ours_s": ref["sparse_s"],
        "reference_s": ref["dense_s"],
        "ratio": round(ref["sparse_s"] / ref["dense_s"], 3),
        "largest_n": rows[-1]["n"],
        "largest_sparse_s": rows[-1]["sparse_s"],
        "largest_sparse_rss_mb": rows[-1]["sparse_rss_mb"],
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }
