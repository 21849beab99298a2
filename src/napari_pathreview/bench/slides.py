"""``bench slide-memory`` and ``bench slide-throughput``: whole lazy slides segmented and detected in
fresh processes (peak memory, megapixels per second, outputs at reduced precision against fp32)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
from skimage.io import imread
from skimage.transform import resize

from ..backend.matching import match_points
from ..backend.pipelines import DetectOptions, SegmentOptions, detect, segment_file
from ..backend.precision import resolve
from ..backend.segmentation import read_table_csv
from ..backend.slides import ZarrLayout, open_slide, write_ome_zarr
from .common import bench, data_root, in_child, mosaic, peak_rss_mb

GLASS = 236  # the bright grey of bare glass in bright-field scans (tissue.is_background treats it as glass)


def _sparse_slide(path, size: int, mpp: float, n_blocks: int = 16) -> int:
    """Write a ``size``² lazy OME-Zarr slide (``mpp`` µm/px) of glass holding ``n_blocks`` real H&E tissue
    blocks (MoNuSeg images, 250 µm square, resampled from their 0.25 µm/px to ``mpp``) spread on a grid;
    chunks of bare glass are not stored. Returns the tissue px."""

    block = int(round(1000 * 0.25 / mpp))
    files = sorted((data_root() / "monuseg" / "images").glob("*.png"))
    if files:
        tissue = [imread(f)[:1000, :1000, :3] for f in files[:n_blocks]]
    else:  # installed without ../shared: the bundled sample
        tissue = [mosaic(1000)] * n_blocks
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
    write_ome_zarr(path, image, mpp, ZarrLayout(chunks=1024, fill_value=GLASS))
    return len(where) * block * block


def _segment_slide(path: str, out: str, precision: str | None = None) -> tuple:
    """(seconds, instances, peak RSS MB) of ``segment`` into an OME-Zarr, run in a child process."""
    t = time.perf_counter()
    store = segment_file(path, out, SegmentOptions(device="cpu", precision=precision))
    seconds = time.perf_counter() - t
    return seconds, int(len(read_table_csv(Path(store) / "instances.csv")["label"])), peak_rss_mb()


def _detect_slide(path: str, precision: str | None = None) -> tuple:
    """(seconds, cells (N, 2) yx, their labels, peak RSS MB) of ``detect``, run in a child process."""
    t = time.perf_counter()
    cells = detect(open_slide(path), DetectOptions(device="cpu", precision=precision))
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
    import torch

    work = Path(tempfile.mkdtemp(prefix="pathreview-slide-memory-"))
    rows = []
    try:
        for size in sizes:
            slide = work / f"slide{size}.zarr"
            t = time.perf_counter()
            tissue = _sparse_slide(slide, size, mpp, n_blocks)
            write_s = time.perf_counter() - t
            (seg_s, n_inst, seg_mb), _ = in_child(_segment_slide, str(slide), str(work / f"seg{size}.zarr"))
            (det_s, yx, _, det_mb), _ = in_child(_detect_slide, str(slide))
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
    import torch

    precision = resolve(precision, "cpu")
    work = Path(tempfile.mkdtemp(prefix="pathreview-throughput-"))
    try:
        slide = work / "slide.zarr"
        _sparse_slide(slide, size, mpp, n_blocks)
        res = {}
        for p in ("fp32", precision):
            (seg_s, n_inst, _), _ = in_child(_segment_slide, str(slide), str(work / f"seg-{p}.zarr"), p)
            (det_s, yx, labels, _), _ = in_child(_detect_slide, str(slide), p)
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
