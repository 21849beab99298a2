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


def _precision_agreement(n: int, precision: str, seed: int = 0) -> dict:
    """The shipped enhancer's sparse forward over the same n synthetic cells at fp32 and at ``precision``
    (autocast, as ``enhance_points`` runs it): seconds of each and the share of cells whose corrected
    class (argmax of the logits) is the same."""
    import torch

    from ..backend.precision import autocast

    torch.set_grad_enabled(False)
    model, _ = load_model(None, "enhancer", "cpu")
    rng = np.random.default_rng(seed)
    side_um = float(np.sqrt(n * 75.6))
    pos = rng.uniform(0, side_um, (n, 2)).astype(np.float32)
    feats = rng.normal(0, 1, (n, model.cfg.feature_dim)).astype(np.float32)
    logits = rng.normal(0, 1, (n, len(model.cfg.classes))).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = {}
    for p in ("fp32", precision):
        with autocast("cpu", p):
            model(feats[:300], probs[:300], pos[:300], mode="sparse")  # warm-up
            t = time.perf_counter()
            out[p] = model(feats, probs, pos, mode="sparse")["logits"].float().argmax(1).numpy()
            out[p + "_s"] = time.perf_counter() - t
    return {
        "n": n,
        "fp32_s": round(out["fp32_s"], 3),
        f"{precision}_s": round(out[precision + "_s"], 3),
        "ratio": round(out[precision + "_s"] / out["fp32_s"], 3),
        "same_class": round(float((out["fp32"] == out[precision]).mean()), 5),
    }


@bench("enhancer")
def bench_enhancer(
    sizes=(1_000, 10_000, 100_000, 1_000_000), dense_max: int = 10_000, precision: str | None = None
) -> dict:
    """Ours: neighbour-sparse attention (KD-tree lists, gathered per chunk). Reference: dense N x N
    attention with the same distance mask, at every N up to ``dense_max`` (beyond it N² does not fit
    comfortably). Shipped enhancer weights; each run in a fresh forked process so its peak RSS growth
    (MB) is its own. ``ratio``: sparse time over dense time at ``dense_max``. ``precision`` (bf16):
    only the largest N, sparse, at fp32 and at that precision on the same cells: times and the share of
    cells given the same corrected class (the bound is 99.5 %)."""
    import torch

    if precision not in (None, "fp32"):
        (row, rss) = in_child(_precision_agreement, sizes[-1], precision)
        return {
            "name": "enhancer",
            "reference": "the same sparse forward at fp32, same cells, same run",
            "model": default_model("enhancer"),
            **row,
            "rss_mb": round(rss, 1),
            "within_bound": row["same_class"] >= 0.995,
            "threads": torch.get_num_threads(),
        }

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
