"""The Slide (a lazy pyramid with its microns per pixel), mpp checks, and the file kinds pathreview opens."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_EXTENSIONS = (".tif", ".tiff", ".svs", ".btf", ".tf8")
ZARR_EXTENSIONS = (".zarr", ".ome.zarr")
SLIDE_EXTENSIONS = IMAGE_EXTENSIONS + TIFF_EXTENSIONS + ZARR_EXTENSIONS

MPP_MIN = 0.01  # exclusive
MPP_MAX = 100.0  # inclusive

_UNIT_TO_UM = {
    # OME-XML symbols
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "nm": 1e-3,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "Å": 1e-4,
    "pm": 1e-6,
    # NGFF (UDUNITS-2) names
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "meter": 1e6,
    "metre": 1e6,
    "angstrom": 1e-4,
    "picometer": 1e-6,
}


@dataclass
class Slide:
    """A lazily read image pyramid.

    Attributes:
        levels: dask arrays, level 0 (full resolution) first; each ``(Y, X)`` or ``(Y, X, C)``.
        mpp: microns per pixel at level 0, or ``None`` when unknown.
        path: where it was read from ("" for in-memory slides).
        name: a short display name (the file name without its extensions).
        is_labels: True for a label image (an OME-Zarr with ``image-label`` metadata).
    """

    levels: list
    mpp: float | None
    path: str
    name: str
    is_labels: bool = False

    @property
    def shape(self) -> tuple:
        """Level-0 ``(Y, X)``."""
        return tuple(int(s) for s in self.levels[0].shape[:2])

    @property
    def channels(self) -> int:
        """Number of channels (1 for a 2-D grey or label image)."""
        a = self.levels[0]
        return 1 if a.ndim == 2 else int(a.shape[2])

    @property
    def dtype(self) -> np.dtype:
        return self.levels[0].dtype

    @property
    def downsamples(self) -> list:
        """Downsample factor of each level relative to level 0 (mean of the Y and X ratios)."""
        y0, x0 = self.shape
        out = []
        for lev in self.levels:
            out.append(float((y0 / lev.shape[0] + x0 / lev.shape[1]) / 2.0))
        return out

    def level_mpp(self, i: int) -> float | None:
        """Microns per pixel at level ``i`` (``None`` when the slide's mpp is unknown)."""
        if self.mpp is None:
            return None
        return float(self.mpp * self.downsamples[i])

    def read_region(self, level: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Read ``h`` x ``w`` pixels at ``(y0, x0)`` of ``level`` as numpy, clipped to the image.

        The result can be smaller than asked (or empty) where the window runs off the image.
        """
        arr = self.levels[level]
        ny, nx = arr.shape[:2]
        ya, xa = max(0, int(y0)), max(0, int(x0))
        yb, xb = min(ny, int(y0) + int(h)), min(nx, int(x0) + int(w))
        yb, xb = max(ya, yb), max(xa, xb)
        return np.asarray(arr[ya:yb, xa:xb])

    def with_mpp(self, mpp: float | None) -> Slide:
        """A copy of this slide with ``mpp`` set (validated; ``None`` makes it unknown)."""
        new = None if mpp is None else validate_mpp(mpp, self.path or self.name)
        return replace(self, mpp=new, levels=list(self.levels))


def validate_mpp(mpp: Any, source: str | None = None) -> float:
    """Return ``mpp`` as a float if it is a plausible microns-per-pixel value, else raise InputError."""
    where = f"{source}: " if source else ""
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise InputError(
            f"{where}mpp {mpp!r} is not a number; give --mpp as microns per pixel above {MPP_MIN:g} and up "
            f"to {MPP_MAX:g} (e.g. 0.25 for 40x, 0.5 for 20x)"
        ) from None
    if not math.isfinite(value) or not (MPP_MIN < value <= MPP_MAX):
        raise InputError(
            f"{where}mpp {mpp!r} is not a plausible microns-per-pixel value; give --mpp above {MPP_MIN:g} "
            f"and up to {MPP_MAX:g} (e.g. 0.25 for 40x, 0.5 for 20x)"
        )
    return value


MAX_MODEL_SCALE = 16.0


def check_model_scale(mpp: float, model_mpp: float | None, source: str = "image") -> float:
    """``mpp / model_mpp`` (model pixels per input pixel) when it lies within 1/16…16, else an InputError:
    a pixel size that far from the model's would leave a nucleus (~8 µm) a pixel or two across, or
    hundreds, and is almost always a wrong ``--mpp``. A model without an mpp gives 1.0."""
    if not model_mpp:
        return 1.0
    scale = float(mpp) / float(model_mpp)
    if not 1.0 / MAX_MODEL_SCALE <= scale <= MAX_MODEL_SCALE:
        raise InputError(
            f"{source}: {mpp:g} µm/px is {max(scale, 1 / scale):.0f}x {'coarser' if scale > 1 else 'finer'} than "
            f"the model's {model_mpp:g} µm/px (a nucleus would be ~{8.0 / mpp:.1f} px across); check --mpp "
            "(e.g. 0.25 for 40x, 0.5 for 20x)"
        )
    return scale


def _plausible(value: float | None) -> float | None:
    """Metadata values outside the plausible range are treated as unknown (None)."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if math.isfinite(v) and MPP_MIN < v <= MPP_MAX:
        return v
    return None


def _display_name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    low = base.lower()
    for ext in (".ome.zarr", ".ome.tiff", ".ome.tif") + SLIDE_EXTENSIONS:
        if low.endswith(ext):
            return base[: -len(ext)] or base
    return os.path.splitext(base)[0] or base


def is_zarr_path(path: str) -> bool:
    """True if ``path`` names a zarr store (``*.zarr`` or a folder holding zarr metadata)."""
    p = Path(path)
    if p.name.lower().endswith(".zarr"):
        return True
    return p.is_dir() and any((p / m).exists() for m in (".zgroup", ".zarray", "zarr.json"))
