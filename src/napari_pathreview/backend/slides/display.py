"""Pixels for display and for the models: any slide tile or level as uint8 RGB."""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..errors import InputError


def to_rgb_uint8(
    array,
    source: str = "image",
    lo: float | None = None,
    hi: float | None = None,
) -> np.ndarray:
    """Convert a tile to ``(Y, X, 3)`` uint8 RGB.

    - ``(Y, X)`` / ``(Y, X, 1)`` grey is repeated to RGB; RGBA drops alpha; 2 or more than 4
      channels raise :class:`InputError`.
    - uint8 is kept; bool becomes 0/255; floats within [0, 1] are multiplied by 255; other data
      (uint16, ints, floats beyond [0, 1]) are stretched from the 0.5th to the 99.5th percentile of
      this array, or from ``lo`` to ``hi`` when given (pass slide-wide values to avoid tile seams).
    - NaN or infinite values raise :class:`InputError` (``source`` names the data in the message).
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[..., None]
    elif a.ndim != 3:
        raise InputError(f"{source}: expected a 2-D grey or RGB image (Y, X[, C]) but got shape {a.shape}")
    c = a.shape[2]
    if c == 2 or c > 4:
        raise InputError(
            f"{source}: has {c} channels; pathreview needs grey, RGB or RGBA (H&E brightfield) - export an RGB image"
        )
    if c == 4:
        a = a[..., :3]
    if a.dtype == np.uint8:
        out = a
    elif a.dtype == bool:
        out = a.astype(np.uint8) * 255
    else:
        if a.dtype.kind not in "uif":
            raise InputError(f"{source}: unsupported pixel type {a.dtype}; export uint8 RGB")
        af = a.astype(np.float64) if a.dtype.kind == "f" else a
        if a.dtype.kind == "f" and not np.all(np.isfinite(af)):
            raise InputError(f"{source}: contains NaN or infinite pixel values; fix or mask them before analysis")
        if lo is None and hi is None and a.dtype.kind == "f" and a.size and af.min() >= 0 and af.max() <= 1:
            out = np.clip(np.rint(af * 255.0), 0, 255).astype(np.uint8)
        else:
            if a.size == 0:
                return np.zeros(a.shape[:2] + (3,), np.uint8)
            l = float(np.percentile(af, 0.5)) if lo is None else float(lo)
            h = float(np.percentile(af, 99.5)) if hi is None else float(hi)
            if h <= l:
                h = float(af.max())
                l = min(l, float(af.min()))
            if h <= l:
                out = np.zeros(a.shape, np.uint8)
            else:
                scaled = (af.astype(np.float64) - l) * (255.0 / (h - l))
                out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def lazy_rgb_uint8(level, small, source: str = "image"):
    """A slide level (dask ``(Y, X[, C])``, any dtype) as a lazy uint8 RGB dask array ``(Y, X, 3)``.

    uint8 levels are only reshaped per block; other data get one slide-wide stretch whose limits come
    from ``small`` (a coarse level, read whole: 0..1 floats map to 0..255, else the 0.5th..99.5th
    percentiles), so tiles have no seams and the level is never read whole. NaN/Inf in ``small`` raise
    :class:`InputError` at once; elsewhere, when the tile holding them is read.
    """
    arr = level if isinstance(level, da.Array) else da.asarray(level)
    lo = hi = None
    if arr.dtype != np.uint8 and arr.dtype != bool:
        s = np.asarray(small, np.float64)
        if not np.isfinite(s).all():
            raise InputError(f"{source}: contains NaN or infinite pixel values; fix or mask them before analysis")
        if arr.dtype.kind == "f" and s.size and s.min() >= 0 and s.max() <= 1:
            lo, hi = 0.0, 1.0
        elif s.size:
            lo, hi = (float(v) for v in np.percentile(s, [0.5, 99.5]))
    if arr.ndim == 3:
        arr = arr.rechunk({2: -1})
    chunks = (arr.chunks[0], arr.chunks[1], (3,))
    return arr.map_blocks(
        to_rgb_uint8, source, lo, hi, dtype=np.uint8, chunks=chunks, **({"new_axis": 2} if arr.ndim == 2 else {})
    )
