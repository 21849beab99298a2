"""``pathreview bench NAME``: timings against a named reference measured in the same run.

Each benchmark returns a dict with at least ``name``, ``reference``, ``ours_s``, ``reference_s`` and
``ratio`` (our time over the reference's; < 1 means faster), plus whatever else it measured.
"""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BENCHES: dict[str, Callable[..., dict]] = {}


def bench(name: str):
    def deco(fn):
        BENCHES[name] = fn
        return fn

    return deco


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, *a, **k):
    gc.collect()
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


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
    from scipy.optimize import linear_sum_assignment

    from .matching import match_points

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


def run_bench(name: str, **kw) -> dict:
    from .errors import InputError

    if name not in BENCHES:
        names = sorted([*BENCHES, "viewer"])  # viewer: Qt, run by the CLI from viewer_bench
        raise InputError(f"unknown benchmark '{name}'; available: {', '.join(names)}")
    return BENCHES[name](**kw)


def _mosaic(size: int) -> np.ndarray:
    """A size x size RGB mosaic of the bundled real H&E sample (mirrored copies, so no hard seams)."""
    from pathlib import Path

    from skimage.io import imread

    tile = imread(Path(__file__).resolve().parents[1] / "sample_data" / "monuseg_tile.png")[..., :3]
    row = np.concatenate([tile, tile[:, ::-1]], 1)
    block = np.concatenate([row, row[::-1]], 0)
    reps = -(-size // block.shape[0])
    return np.ascontiguousarray(np.tile(block, (reps, reps, 1))[:size, :size])


def matmul_ceiling_gflops(n: int = 2048, repeats: int = 8) -> float:
    """Achieved fp32 GFLOP/s of a square matmul, the best of ``repeats``: the machine's practical
    ceiling in this process (the best, so a fraction of it is not flattered by a slow moment)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _dense_model(task: str | None, compile: bool = False):
    """A shipped fully-convolutional model and a (B, C, h, w) tensor -> (B, K, h, w) tensor function
    (``compile``: through ``compiled.compile_for_inference``; the function's ``eager`` attribute is the
    same function without compiling)."""
    import torch

    from .weights import list_models, load_model

    tasks = [task] if task else ["segmenter", "detector"]
    for t in tasks:
        if list_models(t):
            model, card = load_model(None, t, "cpu")
            break
    else:
        raise RuntimeError("no shipped segmenter or detector weights to benchmark")
    model = model.to(memory_format=torch.channels_last)
    net = model
    if compile:
        from .compiled import compile_for_inference

        net = compile_for_inference(model)
    mean = torch.tensor(card.normalisation["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(card.normalisation["std"]).view(1, -1, 1, 1)

    def first_output(out):
        if isinstance(out, dict):
            return next(iter(out.values()))
        return out[0] if isinstance(out, (tuple, list)) else out

    def run(m, x):
        with torch.inference_mode():
            x = ((x / 255.0 - mean) / std).contiguous(memory_format=torch.channels_last)
            return first_output(m(x)).float()

    def fn(x):
        return run(net, x)

    fn.eager = lambda x: run(model, x)
    return fn, card


@bench("tiling")
def bench_tiling(
    size: int = 4096,
    tile: int = 512,
    overlap: int = 64,
    batch: int = 4,
    task: str | None = None,
    repeats: int = 2,
    compile: bool = True,
    precision: str = "fp32",
) -> dict:
    """Ours: tiling.predict_tiled (minimal-padding plan). Reference: MONAI's sliding_window_inference with
    the same model, tile, overlap and Gaussian blending, same image. Both blend with MONAI's own
    importance map (``compute_importance_map``, sigma 0.125 of the tile), so the outputs must agree to
    float rounding wherever the two plans place the same tiles (all of them at 4096² with 512 / 64).
    ``compile``: both run the model through ``torch.compile`` (frozen weights), compiled and warmed up
    for both batch shapes before the clock; the project's ``segment --compile``."""
    import torch
    from monai.data.utils import compute_importance_map
    from monai.inferers import sliding_window_inference
    from torch.utils.flop_counter import FlopCounterMode

    from .tiling import plan_tiles, predict_tiled

    torch.set_grad_enabled(False)
    fn, card = _dense_model(task, compile)
    image = _mosaic(size)
    k = fn.eager(torch.zeros(1, 3, tile, tile)).shape[1]

    ceiling = matmul_ceiling_gflops()
    with FlopCounterMode(display=False) as fc:
        fn.eager(torch.zeros(1, 3, tile, tile))
    flops_tile = fc.get_total_flops()
    n_tiles = len(plan_tiles((size, size), tile, overlap))
    t_compile = time.perf_counter()
    from .precision import autocast, resolve

    precision = resolve(precision, "cpu")
    ours_fn = fn
    if precision != "fp32":  # ours at reduced precision, the reference stays MONAI in float32

        def ours_fn(x):
            with autocast("cpu", precision):
                return fn(x)

    def predict_np(batch_np):
        # (B, H, W, C) numpy viewed as (B, C, H, W): already channels_last in memory, no copy
        return ours_fn(torch.from_numpy(batch_np).permute(0, 3, 1, 2)).numpy()

    for b in sorted({batch, n_tiles % batch or batch}):  # warm-up (compiles) for each batch shape
        fn(torch.zeros(b, 3, tile, tile))
        ours_fn(torch.zeros(b, 3, tile, tile))
    t_compile = time.perf_counter() - t_compile
    rss0 = peak_rss_mb()
    window = compute_importance_map((tile, tile), mode="gaussian", sigma_scale=0.125).numpy()
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32))
    image32 = image.astype(np.float32)
    # Repeats in alternating order and the best of each: which one runs first (page faults, a
    # neighbour's burst of CPU) then cannot decide the ratio. Ours runs first once, so the peak RSS
    # after that run is ours alone.
    t_ours_all, t_ref_all = [], []

    def run_ref():
        with torch.inference_mode():
            out, t = timed(
                sliding_window_inference,
                x,
                (tile, tile),
                batch,
                fn,
                overlap=overlap / tile,
                mode="gaussian",
                sigma_scale=0.125,
            )
        t_ref_all.append(t)
        return out

    def run_ours():
        out, t = timed(predict_tiled, image32, predict_np, tile, overlap, k, window=window, batch_size=batch)
        t_ours_all.append(t)
        return out

    ours = run_ours()
    rss_ours = peak_rss_mb()
    ref = run_ref()
    for i in range(1, repeats):
        if i % 2:
            ref, ours = run_ref(), run_ours()
        else:
            ours, ref = run_ours(), run_ref()
    t_ours, t_ref = min(t_ours_all), min(t_ref_all)
    ref = ref[0].numpy()
    step = int(tile * (1 - overlap / tile))
    n_ref = (-(-(size - tile) // step) + 1) ** 2
    return {
        "name": "tiling",
        "reference": "monai.inferers.sliding_window_inference (gaussian)",
        "model": card.name,
        "size": size,
        "tile": tile,
        "overlap": overlap,
        "batch": batch,
        "ours_s": round(t_ours, 2),
        "reference_s": round(t_ref, 2),
        "ratio": round(t_ours / t_ref, 3),
        "ours_all_s": [round(t, 2) for t in t_ours_all],
        "reference_all_s": [round(t, 2) for t in t_ref_all],
        "tiles_ours": n_tiles,
        "tiles_reference": n_ref,
        "max_abs_diff": float(np.abs(ours - ref).max()),
        "mean_abs_diff": float(np.abs(ours - ref).mean()),
        "gflops_achieved": round(flops_tile * n_tiles / t_ours / 1e9, 1),
        "gflops_ceiling_matmul": round(ceiling, 1),
        "fraction_of_ceiling": round(flops_tile * n_tiles / t_ours / 1e9 / ceiling, 3),
        "peak_rss_mb_before": round(rss0, 1),
        "peak_rss_mb_after_ours": round(rss_ours, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "compiled": bool(compile),
        "warmup_s": round(t_compile, 1),
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "precision_ours": precision,
        "precision_reference": "fp32",
    }


@bench("segment-zarr")
def bench_segment_zarr(
    height: int = 6144, width: int = 1536, mpp: float = 0.5, tile: int = 512, overlap: int = 64
) -> dict:
    """Ours: segmentation.segment_to_zarr over a lazy OME-Zarr slide (bands of rows streamed to an
    OME-Zarr labels store). Reference: the in-memory segmentation.segment of the same slide (whole maps
    in memory). Peak RSS is measured after ours and then after the reference (it only grows), so
    ``peak_rss_mb_after_ours`` bounds ours and the difference shows what the whole-image path needs."""
    import shutil
    import tempfile
    from pathlib import Path

    import dask.array as da
    import torch

    from .segmentation import segment, segment_to_zarr
    from .slides import open_slide, write_ome_zarr
    from .weights import load_model

    model, card = load_model(None, "segmenter", "cpu")
    block = da.from_array(_mosaic(1024), chunks=(512, 512, 3))
    row = da.concatenate([block] * -(-width // 1024), axis=1)
    big = da.concatenate([row] * -(-height // 1024), axis=0)[:height, :width]
    work = Path(tempfile.mkdtemp(prefix="pathreview-bench-"))
    try:
        write_ome_zarr(work / "slide.zarr", big, mpp, chunks=512)
        slide = open_slide(work / "slide.zarr")
        segment_to_zarr(slide, work / "warm.zarr", model, card, tile=tile, overlap=overlap, level=len(slide.levels) - 1)
        rss0 = peak_rss_mb()
        _, t_ours = timed(segment_to_zarr, slide, work / "labels.zarr", model, card, tile=tile, overlap=overlap)
        rss_ours = peak_rss_mb()
        res, t_ref = timed(segment, slide, model, card, tile=tile, overlap=overlap)
        rss_ref = peak_rss_mb()
        ours = np.asarray(open_slide(work / "labels.zarr").levels[0])
        same_fg = float(np.mean((ours > 0) == (res.labels > 0)))
        n_ours = int(ours.max())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "name": "segment-zarr",
        "reference": "segmentation.segment (in memory, same slide)",
        "model": card.name,
        "shape": [height, width],
        "mpp": mpp,
        "tile": tile,
        "overlap": overlap,
        "ours_s": round(t_ours, 2),
        "reference_s": round(t_ref, 2),
        "ratio": round(t_ours / t_ref, 3),
        "peak_rss_mb_before": round(rss0, 1),
        "peak_rss_mb_after_ours": round(rss_ours, 1),
        "peak_rss_mb_after_reference": round(rss_ref, 1),
        "full_maps_mb": round(4 * 4 * height * width / 2**20, 1),
        "foreground_agreement": same_fg,
        "instances_ours": n_ours,
        "instances_reference": len(res),
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }


def _child_target(q, fn, args):
    base = peak_rss_mb()
    out = fn(*args)
    q.put((out, peak_rss_mb() - base))


def _in_child(fn, *args):
    """Run ``fn(*args)`` in a fresh (spawned) process; returns (its result, its peak RSS growth in MB
    over the process's state after imports)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child_target, args=(q, fn, args))
    p.start()
    res = q.get()
    p.join()
    return res


def _enhancer_forward(n: int, mode: str, seed: int = 0) -> float:
    """Seconds for one forward of the shipped enhancer over n synthetic cells at CRCHisto density
    (~1 per 75 µm²); the model is loaded and warmed up before the clock and the memory baseline."""
    import torch

    from .weights import load_model

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

    from .weights import default_model

    rows = []
    for n in sizes:
        row = {"n": n}
        row["sparse_s"], row["sparse_rss_mb"] = _in_child(_enhancer_forward, n, "sparse")
        if n <= dense_max:
            row["dense_s"], row["dense_rss_mb"] = _in_child(_enhancer_forward, n, "dense")
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


GLASS = 236  # the bright grey of bare glass in bright-field scans (tissue.is_background treats it as glass)


def _sparse_slide(path, size: int, mpp: float, n_blocks: int = 16) -> int:
    """Write a ``size``² lazy OME-Zarr slide (``mpp`` µm/px) of glass holding ``n_blocks`` real H&E tissue
    blocks (MoNuSeg images, 250 µm square, resampled from their 0.25 µm/px to ``mpp``) spread on a grid;
    chunks of bare glass are not stored. Returns the tissue px."""

    import dask.array as da
    from skimage.io import imread
    from skimage.transform import resize

    from .slides import write_ome_zarr

    block = int(round(1000 * 0.25 / mpp))
    files = sorted((_data_root() / "monuseg" / "images").glob("*.png"))
    if files:
        tissue = [imread(f)[:1000, :1000, :3] for f in files[:n_blocks]]
    else:  # installed without ../shared: the bundled sample
        tissue = [_mosaic(1000)] * n_blocks
    if block != 1000:
        tissue = [
            (resize(t, (block, block), anti_aliasing=True, preserve_range=True) + 0.5).astype(np.uint8) for t in tissue
        ]
    n = size // block
    side = int(np.ceil(np.sqrt(n_blocks)))
    where = {
        (round((i + 0.5) * n / side - 0.5), round((j + 0.5) * n / side - 0.5)): k
        for k, (i, j) in enumerate((i, j) for i in range(side) for j in range(side))
        if k < n_blocks
    }
    glass = da.full((block, block, 3), GLASS, dtype=np.uint8, chunks=(block, block, 3))
    grid = [
        [
            da.from_array(tissue[where[(i, j)] % len(tissue)], chunks=(block, block, 3)) if (i, j) in where else glass
            for j in range(n)
        ]
        for i in range(n)
    ]
    image = da.concatenate([da.concatenate(row, axis=1) for row in grid], axis=0)
    write_ome_zarr(path, image, mpp, chunks=1024, fill_value=GLASS)
    return len(where) * block * block


def _segment_slide(path: str, out: str, precision: str | None = None) -> tuple:
    """(seconds, instances, peak RSS MB) of ``segment`` into an OME-Zarr, run in a child process."""
    from .pipelines import segment_file
    from .segmentation import read_table_csv

    t = time.perf_counter()
    store = segment_file(path, out, device="cpu", precision=precision)
    seconds = time.perf_counter() - t
    return seconds, int(len(read_table_csv(Path(store) / "instances.csv")["label"])), peak_rss_mb()


def _detect_slide(path: str, precision: str | None = None) -> tuple:
    """(seconds, cells (N, 2) yx, their labels, peak RSS MB) of ``detect``, run in a child process."""
    from .pipelines import detect
    from .slides import open_slide

    t = time.perf_counter()
    cells = detect(open_slide(path), device="cpu", precision=precision)
    return time.perf_counter() - t, cells.yx, cells.labels, peak_rss_mb()


@bench("slide-memory")
def bench_slide_memory(sizes=(10_000, 40_000), mpp: float = 0.5, n_blocks: int = 16) -> dict:
    """Segment (tile by tile into an OME-Zarr) and detect lazy zarr slides of ``sizes``² px holding the same
    ``n_blocks`` real tissue blocks on glass, each run in a fresh process whose peak RSS (MB, imports
    and model included) is its own. Reference: the smallest slide. ``ratio``: segmentation peak RSS at
    the largest size over the smallest (1.0 = memory does not grow with the slide);
    ``detect_rss_ratio`` likewise. At 0.5 µm/px (20x) the segmenter reads level 0 of both slides, and
    both are wider than one strip (``segment_to_zarr``'s ``strip``, 8192 px): a slide narrower than a
    strip keeps a narrower band, so it needs less."""
    import shutil
    import tempfile

    import torch

    work = Path(tempfile.mkdtemp(prefix="pathreview-slide-memory-"))
    rows = []
    try:
        for size in sizes:
            slide = work / f"slide{size}.zarr"
            t = time.perf_counter()
            tissue = _sparse_slide(slide, size, mpp, n_blocks)
            write_s = time.perf_counter() - t
            (seg_s, n_inst, seg_mb), _ = _in_child(_segment_slide, str(slide), str(work / f"seg{size}.zarr"))
            (det_s, yx, _, det_mb), _ = _in_child(_detect_slide, str(slide))
            n_cells = len(yx)
            rows.append(
                {
                    "size": size,
                    "gigapixels": round(size * size / 1e9, 3),
                    "tissue_px": tissue,
                    "write_slide_s": round(write_s, 1),
                    "segment_s": round(seg_s, 1),
                    "segment_peak_rss_mb": round(seg_mb, 1),
                    "instances": n_inst,
                    "detect_s": round(det_s, 1),
                    "detect_peak_rss_mb": round(det_mb, 1),
                    "cells": n_cells,
                }
            )
            shutil.rmtree(slide, ignore_errors=True)
            shutil.rmtree(work / f"seg{size}.zarr", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, large = rows[0], rows[-1]
    return {
        "name": "slide-memory",
        "reference": f"the same pipeline on the {small['size']}² slide",
        "rows": rows,
        "mpp": mpp,
        "ours_s": large["segment_s"],
        "reference_s": small["segment_s"],
        "ratio": round(large["segment_peak_rss_mb"] / small["segment_peak_rss_mb"], 3),
        "ratio_is": "segmentation peak RSS, largest slide / smallest",
        "detect_rss_ratio": round(large["detect_peak_rss_mb"] / small["detect_peak_rss_mb"], 3),
        "area_ratio": round((large["size"] / small["size"]) ** 2, 1),
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }


@bench("slide-throughput")
def bench_slide_throughput(size: int = 40_000, mpp: float = 0.5, n_blocks: int = 16, precision: str = "bf16") -> dict:
    """Whole-slide throughput of ``segment`` (tile by tile into an OME-Zarr) and ``detect`` on the
    ``size``² lazy zarr slide of ``bench slide-memory`` (``n_blocks`` real tissue blocks on glass, 0.5 µm/px),
    at ``precision`` against fp32 (the reference), each run in a fresh process. Reports seconds and
    megapixels of slide per second, and the equality of the outputs: segmentation Dice of the two label
    stores' foregrounds (read chunk by chunk) and instance counts; detection matched-cell F1 (6 px) and
    the share of matched cells with the same class."""
    import shutil
    import tempfile

    import dask.array as da
    import torch

    from .matching import match_points
    from .precision import resolve
    from .slides import open_slide

    precision = resolve(precision, "cpu")
    work = Path(tempfile.mkdtemp(prefix="pathreview-throughput-"))
    try:
        slide = work / "slide.zarr"
        _sparse_slide(slide, size, mpp, n_blocks)
        res = {}
        for p in ("fp32", precision):
            (seg_s, n_inst, _), _ = _in_child(_segment_slide, str(slide), str(work / f"seg-{p}.zarr"), p)
            (det_s, yx, labels, _), _ = _in_child(_detect_slide, str(slide), p)
            res[p] = {
                "segment_s": round(seg_s, 1),
                "instances": n_inst,
                "detect_s": round(det_s, 1),
                "cells": len(yx),
                "yx": yx,
                "labels": labels,
            }
        a = open_slide(work / "seg-fp32.zarr").levels[0]
        b = open_slide(work / f"seg-{precision}.zarr").levels[0]
        fa, fb = da.asarray(a) > 0, da.asarray(b) > 0
        inter, sa, sb = da.compute((fa & fb).sum(), fa.sum(), fb.sum())
        ref, low = res["fp32"], res[precision]
        m = match_points(low["yx"], ref["yx"], 6.0)
        mpx = size * size / 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in (ref, low):
        r["segment_mpx_per_s"] = round(mpx / r["segment_s"], 1)
        r["detect_mpx_per_s"] = round(mpx / r["detect_s"], 1)
    same = float((ref["labels"][m.gt_idx] == low["labels"][m.pred_idx]).mean()) if len(m.gt_idx) else 1.0
    strip = lambda r: {k: v for k, v in r.items() if k not in ("yx", "labels")}
    return {
        "name": "slide-throughput",
        "reference": "the same pipelines at fp32",
        "size": size,
        "mpp": mpp,
        "precision": precision,
        "ours": strip(low),
        "fp32": strip(ref),
        "ours_s": low["segment_s"],
        "reference_s": ref["segment_s"],
        "ratio": round(low["segment_s"] / ref["segment_s"], 3),
        "detect_ratio": round(low["detect_s"] / ref["detect_s"], 3),
        "label_dice": round(2 * int(inter) / max(1, int(sa) + int(sb)), 5),
        "matched_cell_f1": round(2 * len(m.gt_idx) / max(1, ref["cells"] + low["cells"]), 4),
        "same_class": round(same, 4),
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))


@bench("train-step")
def bench_train_step(
    widths=((16, 32, 64, 128), (32, 64, 128, 256)), batch: int = 8, tile: int = 256, repeats: int = 4, seed: int = 0
) -> dict:
    """Ours: one segmenter training step (forward, segmenter loss, backward, AdamW) under bfloat16
    autocast (``train --amp``). Reference: the same step in float32. Batch of ``batch`` random
    ``tile``² tiles; median of ``repeats`` steps after two warm-up steps, per encoder ``widths``; the
    headline ratio is the last (widest) model's."""
    import torch

    from .models.segmenter import SegmenterConfig, build_segmenter
    from .segmentation import segmenter_loss

    rows = []
    for w in widths:
        torch.manual_seed(seed)
        model = build_segmenter(SegmenterConfig(widths=tuple(w))).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.randn(batch, 3, tile, tile).contiguous(memory_format=torch.channels_last)
        fg = (torch.rand(batch, tile, tile) > 0.7).float()
        batch_t = (x, fg, torch.rand(batch, tile, tile), torch.ones(batch))
        row = {"widths": list(w), "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
        for mode in ("fp32", "bf16"):
            times = []
            for _i in range(repeats + 2):
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                    loss = segmenter_loss(model, batch_t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t)
            row[f"{mode}_s"] = round(float(np.median(times[2:])), 3)
        row["ratio"] = round(row["bf16_s"] / row["fp32_s"], 3)
        rows.append(row)
    last = rows[-1]
    return {
        "name": "train-step",
        "reference": "the same segmenter training step in float32",
        "ours_s": last["bf16_s"],
        "reference_s": last["fp32_s"],
        "ratio": last["ratio"],
        "rows": rows,
        "batch": batch,
        "tile": tile,
        "threads": torch.get_num_threads(),
        "cpu_flags": _cpu_flags(),
    }


# ---------------------------------------------------------------- reduced precision (issue 30)
PRECISION_BOUNDS = {"matched_f1": 0.99, "metric_delta": 0.005, "label_dice": 0.995, "same_class": 0.995}


def _data_root() -> Path:
    """The annotated data sets: ``$PATHREVIEW_DATA``, else ``../shared/data`` beside the repository."""
    import os

    env = os.environ.get("PATHREVIEW_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[4] / "shared" / "data"


def _outputs_agree(a, b, radius_px: float) -> dict:
    """Two CellPoints of one image: matched-cell F1 between them and the share of matched cells that keep
    their class."""
    from .matching import match_points

    m = match_points(b.yx, a.yx, radius_px)
    n = len(m.pred_idx)
    f1 = 2 * n / max(1, len(a) + len(b)) if (len(a) or len(b)) else 1.0
    same = float((a.labels[m.gt_idx] == b.labels[m.pred_idx]).mean()) if n else 1.0
    return {"n": n, "f1": f1, "same": same, "na": len(a), "nb": len(b)}


@bench("precision")
def bench_precision(precisions=("bf16",), device: str = "cpu", record: bool = False, limit: int | None = None) -> dict:
    """Each shipped detector / enhancer / segmenter run at fp32 and at each reduced precision on its
    held-out images (CRCHisto validation; the segmenters' held-out MoNuSeg images): outputs compared with
    each other (matched-cell F1 and same class; labels Dice) and the task metric with the annotations
    (weighted F1; Dice / AJI), time ratio against fp32 measured in the same run (second pass, warm).
    A precision is *verified* for a model when every bound of ``PRECISION_BOUNDS`` holds; ``record``
    writes the verified list into the shipped card (``training.precision``), which ``--precision auto`` reads.
    """
    import datetime
    import json
    import time

    import torch

    from . import pipelines
    from .datasets import load_points_dataset
    from .errors import InputError
    from .metrics import PointScores
    from .precision import native, resolve
    from .seg_metrics import dice, score_pair
    from .segmentation import load_masks_dataset
    from .weights import default_model
    from .weights import resolve as resolve_weights

    root = _data_root()
    if not (root / "crchisto").is_dir() or not (root / "monuseg").is_dir():
        raise InputError(
            f"bench precision needs the annotated data sets (crchisto/, monuseg/) at {root}; "
            "set PATHREVIEW_DATA to their folder (docs/data-formats.md)"
        )
    dev = torch.device(device)
    for p in precisions:
        resolve(p, dev)  # refuses fp16 on a CPU
    res = {
        "device": str(dev),
        "native": list(native(dev.type)),
        "cpu_flags": _cpu_flags(),
        "bounds": PRECISION_BOUNDS,
        "models": {},
    }
    samples, _ = load_points_dataset(root / "crchisto", "validation")
    samples = samples[:limit] if limit else samples

    def timed_runs(fn, p):
        fn(p)  # warm (first-call allocations, oneDNN kernels)
        t = time.perf_counter()
        out = fn(p)
        return out, time.perf_counter() - t

    # detector and enhancer on the CRCHisto validation images
    det_name, enh_name = default_model("detector"), default_model("enhancer")
    card = pipelines.get_model(det_name, "detector", device)[1]
    radius_px = 6.0

    def det_run(p):
        return [pipelines.detect(s.image, det_name, mpp=card.mpp, device=device, precision=p) for s in samples]

    def enh_run(p):
        return [
            pipelines.enhance(
                s.image, weights=enh_name, mpp=card.mpp, device=device, return_attention=False, precision=p
            ).enhanced
            for s in samples
        ]

    for name, task, run in ((det_name, "detector", det_run), (enh_name, "enhancer", enh_run)):
        ref, t_ref = timed_runs(run, "fp32")
        entry = {"task": task, "images": len(samples), "fp32_seconds": round(t_ref, 2), "by_precision": {}}
        base = PointScores(card.classes, radius_px)
        for s, c in zip(samples, ref):
            base.add(c.yx, c.labels, s.yx, s.labels)
        wf_ref = base.as_dict(radius_px * card.mpp)["weighted_f1"]
        entry["fp32_weighted_f1"] = round(wf_ref, 4)
        for p in precisions:
            out, t = timed_runs(run, p)
            sc = PointScores(card.classes, radius_px)
            agree = [_outputs_agree(a, b, radius_px) for a, b in zip(ref, out)]
            for s, c in zip(samples, out):
                sc.add(c.yx, c.labels, s.yx, s.labels)
            wf = sc.as_dict(radius_px * card.mpp)["weighted_f1"]
            n = sum(a["n"] for a in agree)
            f1 = 2 * n / max(1, sum(a["na"] + a["nb"] for a in agree))
            same = sum(a["same"] * a["n"] for a in agree) / max(1, n)
            ok = (
                f1 >= PRECISION_BOUNDS["matched_f1"]
                and abs(wf - wf_ref) <= PRECISION_BOUNDS["metric_delta"]
                and same >= PRECISION_BOUNDS["same_class"]
            )
            entry["by_precision"][p] = {
                "matched_f1": round(f1, 4),
                "same_class": round(same, 4),
                "weighted_f1": round(wf, 4),
                "delta": round(wf - wf_ref, 4),
                "seconds": round(t, 2),
                "time_ratio": round(t / t_ref, 3),
                "verified": ok,
            }
        res["models"][name] = entry

    # segmenters on their held-out MoNuSeg images
    for name in ("segmenter-monuseg-wide", "segmenter-monuseg"):
        scard = pipelines.get_model(name, "segmenter", device)[1]
        held = scard.training.get("heldout_images") or []
        segs = load_masks_dataset(root / "monuseg", names=held)
        segs = segs[:limit] if limit else segs
        data_mpp = scard.training.get("data_mpp", 0.25)

        def seg_run(p, name=name, segs=segs, data_mpp=data_mpp):
            return [pipelines.segment(s.image, name, mpp=data_mpp, device=device, precision=p).labels for s in segs]

        ref, t_ref = timed_runs(seg_run, "fp32")
        m_ref = [score_pair(r, s.labels, s.instances) for r, s in zip(ref, segs)]
        d_ref = float(np.mean([m["dice"] for m in m_ref]))
        entry = {
            "task": "segmenter",
            "images": len(segs),
            "fp32_seconds": round(t_ref, 2),
            "fp32_dice": round(d_ref, 4),
            "by_precision": {},
        }
        for p in precisions:
            out, t = timed_runs(seg_run, p)
            ld = float(np.mean([dice(a > 0, b > 0) for a, b in zip(ref, out)]))
            m = [score_pair(o, s.labels, s.instances) for o, s in zip(out, segs)]
            d = float(np.mean([x["dice"] for x in m]))
            ok = ld >= PRECISION_BOUNDS["label_dice"] and abs(d - d_ref) <= PRECISION_BOUNDS["metric_delta"]
            entry["by_precision"][p] = {
                "label_dice": round(ld, 5),
                "dice": round(d, 4),
                "delta": round(d - d_ref, 4),
                "seconds": round(t, 2),
                "time_ratio": round(t / t_ref, 3),
                "verified": ok,
            }
        res["models"][name] = entry

    if record:
        for name, entry in res["models"].items():
            path = Path(resolve_weights(name, entry["task"])[0]).with_suffix(".json")
            card_json = json.loads(path.read_text())
            card_json["training"]["precision"] = {
                "verified": [p for p, r in entry["by_precision"].items() if r["verified"]],
                "measured": entry,
                "device": res["device"],
                "bounds": PRECISION_BOUNDS,
                "command": "pathreview bench precision --record --json",
                "date": datetime.date.today().isoformat(),
            }
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(card_json, indent=2) + "\n")
            tmp.replace(path)
        res["recorded"] = sorted(res["models"])
    return res
