"""Weakly supervised cell types (CAM pseudo-labels -> stage-2 map) of an image."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..errors import InputError, ProgressFn, check_cancel
from ..points import CellPoints
from ..weak import infer, load_weak_cells
from .detect import DetectOptions, detect


@dataclass
class WeakOptions:
    """``weights``: weak-cells model name/path (None: shipped); ``detector``: detects the cells when none
    are given (None: shipped); ``mpp``: the input's microns per pixel when it does not say."""

    weights: str | None = None
    detector: str | None = None
    mpp: float | None = None
    device: str | None = None


def weak_cells(
    image,
    points: CellPoints | None = None,
    options: WeakOptions | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
):
    """Weakly supervised cell types of an (H, W, 3) array or a Slide (level 0) -> ``weak.WeakCellsResult``
    (per-class CAMs, pseudo-labels, stage-2 map, typed cells), all at the input's pixel grid.

    ``points``: the cells to type (input pixels); None: detect them with ``options.detector``.
    """
    import numpy as np

    o = options or WeakOptions()
    arr = np.asarray(image.levels[0] if hasattr(image, "levels") else image)
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise InputError(f"{name}: weak-cells needs an RGB image (H, W, 3), got shape {arr.shape}")
    arr = arr[..., :3].astype(np.uint8) if arr.dtype != np.uint8 else arr[..., :3]
    if points is None:
        points = detect(arr, DetectOptions(weights=o.detector, mpp=o.mpp, device=o.device), cancel=cancel, name=name)
    check_cancel(cancel)
    seg, card, cams = _cached_weak(str(o.weights or "weak-cells"), o.device or None)
    return infer(arr, points.yx, seg, card, cams, mpp=o.mpp, progress=progress, cancel=cancel, name=name)


@lru_cache(maxsize=2)
def _cached_weak(ref, device):

    return load_weak_cells(ref, device)
