"""Pyramid arithmetic shared by the writers: 2x downsampling, level count and shapes, input as a dask array."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import dask.array as da
import numpy as np

from ..errors import InputError


def _down2(block: np.ndarray, labels: bool) -> np.ndarray:
    """2x downsample over the first two axes: mean of 2x2 (edges replicated) or stride for labels."""
    if labels:
        return block[::2, ::2]
    h, w = block.shape[:2]
    if h % 2:
        block = np.concatenate([block, block[-1:]], axis=0)
    if w % 2:
        block = np.concatenate([block, block[:, -1:]], axis=1)
    work = np.float64 if block.dtype == np.float64 else np.float32
    b = block.astype(work)
    m = (b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]) * 0.25
    if block.dtype.kind in "ui":
        info = np.iinfo(block.dtype)
        return np.clip(np.rint(m), info.min, info.max).astype(block.dtype)
    if block.dtype == bool:
        return m >= 0.5
    return m.astype(block.dtype)


def _default_levels(shape: Sequence[int], chunks: int) -> int:
    n = 1
    y, x = int(shape[0]), int(shape[1])
    while max(y, x) > chunks and min(y, x) > 1:
        y, x = (y + 1) // 2, (x + 1) // 2
        n += 1
    return n


def _level_shapes(shape: Sequence[int], n_levels: int) -> list:
    y, x = int(shape[0]), int(shape[1])
    out = [(y, x)]
    for _ in range(n_levels - 1):
        y, x = (y + 1) // 2, (x + 1) // 2
        out.append((y, x))
    return out


def _as_yxc(image, source: str, chunks: int | None = None):
    """(arr, channels) with arr a dask array (Y, X) or (Y, X, C); a non-dask input is wrapped with
    ``chunks``-sized blocks (reading one tile then reads one block, not dask's ~128 MB default)."""
    if isinstance(image, da.Array):
        arr = image
    elif chunks is not None and getattr(image, "ndim", 0) in (2, 3):
        arr = da.from_array(image, chunks=(chunks, chunks) + tuple(image.shape[2:]))
    else:
        arr = da.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) == 0:
        raise InputError(f"{source}: expected a 2-D image (Y, X[, C]) but got shape {arr.shape}")
    return arr, (1 if arr.ndim == 2 else int(arr.shape[2]))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
