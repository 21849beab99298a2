"""``bench tiling`` and ``bench segment-zarr``: tiled inference against MONAI's sliding window, and
streaming segmentation into OME-Zarr against the in-memory path."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np

from ..backend.compiled import compile_for_inference
from ..backend.precision import autocast, resolve
from ..backend.segmentation import SegmentSettings, segment, segment_to_zarr
from ..backend.slides import ZarrLayout, open_slide, write_ome_zarr
from ..backend.tiling import TileSpec, plan_tiles, predict_tiled
from ..backend.weights import list_models, load_model
from .common import bench, mosaic, peak_rss_mb, timed


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


def _at_precision(fn, precision: str):
    """``fn`` run under CPU autocast at ``precision``; ``fn`` itself at fp32."""
    if precision == "fp32":
        return fn

    def ours_fn(x):
        with autocast("cpu", precision):
            return fn(x)

    return ours_fn


def _flops_per_tile(fn, tile: int) -> int:
    """Floating-point operations of one eager forward of a ``tile``² tile (torch's flop counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn.eager(torch.zeros(1, 3, tile, tile))
    return fc.get_total_flops()


def _time_both(image: np.ndarray, fn, ours_fn, tile: int, overlap: int, batch: int, k: int, repeats: int) -> dict:
    """Ours (``predict_tiled``) and MONAI's ``sliding_window_inference`` over ``image`` (H, W, 3) uint8,
    ``repeats`` times each in alternating order, the best of each: which one runs first (page faults, a
    neighbour's burst of CPU) then cannot decide the ratio. Ours runs first once, so the peak RSS after
    that run is ours alone. Returns the last outputs (K, H, W), every time (s) and the peak RSS values (MB)."""
    import torch
    from monai.data.utils import compute_importance_map
    from monai.inferers import sliding_window_inference

    def predict_np(batch_np):
        # (B, H, W, C) numpy viewed as (B, C, H, W): already channels_last in memory, no copy
        return ours_fn(torch.from_numpy(batch_np).permute(0, 3, 1, 2)).numpy()

    rss0 = peak_rss_mb()
    window = compute_importance_map((tile, tile), mode="gaussian", sigma_scale=0.125).numpy()
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32))
    image32 = image.astype(np.float32)
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
        out, t = timed(predict_tiled, image32, predict_np, TileSpec(tile, overlap, window, batch_size=batch), k)
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
    return {
        "ours": ours,
        "ref": ref[0].numpy(),
        "t_ours_all": t_ours_all,
        "t_ref_all": t_ref_all,
        "rss0": rss0,
        "rss_ours": rss_ours,
    }


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
    for both batch shapes before the clock; the project's ``segment --compile``.
    ``precision``: ours at reduced precision (autocast), the reference stays MONAI in float32."""
    import torch

    torch.set_grad_enabled(False)
    fn, card = _dense_model(task, compile)
    image = mosaic(size)
    k = fn.eager(torch.zeros(1, 3, tile, tile)).shape[1]
    ceiling = matmul_ceiling_gflops()
    flops_tile = _flops_per_tile(fn, tile)
    n_tiles = len(plan_tiles((size, size), tile, overlap))
    t_compile = time.perf_counter()
    precision = resolve(precision, "cpu")
    ours_fn = _at_precision(fn, precision)
    for b in sorted({batch, n_tiles % batch or batch}):  # warm-up (compiles) for each batch shape
        fn(torch.zeros(b, 3, tile, tile))
        ours_fn(torch.zeros(b, 3, tile, tile))
    t_compile = time.perf_counter() - t_compile
    m = _time_both(image, fn, ours_fn, tile, overlap, batch, k, repeats)
    ours, ref, t_ours_all, t_ref_all = m["ours"], m["ref"], m["t_ours_all"], m["t_ref_all"]
    t_ours, t_ref = min(t_ours_all), min(t_ref_all)
    step = int(tile * (1 - overlap / tile))
    n_ref = (-(-(size - tile) // step) + 1) ** 2
    gflops = flops_tile * n_tiles / t_ours / 1e9
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
        "gflops_achieved": round(gflops, 1),
        "gflops_ceiling_matmul": round(ceiling, 1),
        "fraction_of_ceiling": round(gflops / ceiling, 3),
        "peak_rss_mb_before": round(m["rss0"], 1),
        "peak_rss_mb_after_ours": round(m["rss_ours"], 1),
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
    import torch

    model, card = load_model(None, "segmenter", "cpu")
    block = da.from_array(mosaic(1024), chunks=(512, 512, 3))
    row = da.concatenate([block] * -(-width // 1024), axis=1)
    big = da.concatenate([row] * -(-height // 1024), axis=0)[:height, :width]
    work = Path(tempfile.mkdtemp(prefix="pathreview-bench-"))
    try:
        write_ome_zarr(work / "slide.zarr", big, mpp, ZarrLayout(chunks=512))
        slide = open_slide(work / "slide.zarr")
        opts = SegmentSettings(tile=tile, overlap=overlap)
        warm = SegmentSettings(tile=tile, overlap=overlap, level=len(slide.levels) - 1)
        segment_to_zarr(slide, work / "warm.zarr", model, card, options=warm)
        rss0 = peak_rss_mb()
        _, t_ours = timed(segment_to_zarr, slide, work / "labels.zarr", model, card, options=opts)
        rss_ours = peak_rss_mb()
        res, t_ref = timed(segment, slide, model, card, options=opts)
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
