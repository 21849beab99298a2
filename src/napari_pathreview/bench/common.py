"""What every benchmark shares: the registry (``BENCHES``, ``@bench``), clocks, peak memory, child
processes, the bundled H&E mosaic and the annotated data's folder."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage.io import imread

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


def mosaic(size: int) -> np.ndarray:
    """A size x size RGB mosaic of the bundled real H&E sample (mirrored copies, so no hard seams)."""
    tile = imread(Path(__file__).resolve().parents[1] / "sample_data" / "monuseg_tile.png")[..., :3]
    row = np.concatenate([tile, tile[:, ::-1]], 1)
    block = np.concatenate([row, row[::-1]], 0)
    reps = -(-size // block.shape[0])
    return np.ascontiguousarray(np.tile(block, (reps, reps, 1))[:size, :size])


def _child_target(q, fn, args):
    base = peak_rss_mb()
    out = fn(*args)
    q.put((out, peak_rss_mb() - base))


def in_child(fn, *args):
    """Run ``fn(*args)`` in a fresh (spawned) process; returns (its result, its peak RSS growth in MB
    over the process's state after imports)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child_target, args=(q, fn, args))
    p.start()
    res = q.get()
    p.join()
    return res


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))


def data_root() -> Path:
    """The annotated data sets: ``$PATHREVIEW_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("PATHREVIEW_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[4] / "shared" / "data"
