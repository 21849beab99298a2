"""What every model's inputs share, read from its card: the data's microns per pixel checked, the
level of an image or slide a model reads at its card's scale (as 8-bit RGB), and a task's parameter
dataclass filled from ``card.params``.

The model-input contract of the tiled tasks (detection, segmentation): :func:`resolve_input` picks the
level and the scale (``LevelInput.scale``: model pixels per input pixel, each tile is resampled by it),
and stretches non-8-bit data once for the whole image; the task then tiles the level
(``tiling.map_tiles``), scales each tile's hematoxylin to the card's stain reference and normalises it
with the card's mean / std.

No torch here: the checks run before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError
from .slides import Slide, check_model_scale, lazy_rgb_uint8, to_rgb_uint8, validate_mpp


def check_mpp(mpp, what: str) -> float:
    """``mpp`` (µm per pixel) as a validated float; InputError naming ``what`` when it is unknown (None)
    or not a plausible pixel size (``slides.validate_mpp``)."""
    if mpp is None:
        raise InputError(f"{what}: microns per pixel unknown; give --mpp (e.g. 0.5 for 20x, 0.25 for 40x)")
    return validate_mpp(mpp, what)


def from_card(cls, card, **override):
    """An instance of the dataclass ``cls`` from the card's ``params`` (keys ``cls`` does not have are
    ignored), then the ``override`` values that are not None."""
    p = {k: v for k, v in (card.params or {}).items() if k in cls.__dataclass_fields__}
    p.update({k: v for k, v in override.items() if v is not None})
    return cls(**p)


@dataclass
class LevelInput:
    """The array a model reads: ``array`` (H, W[, 3]) uint8 numpy or lazy dask, pyramid level ``level``
    of ``image`` (a Slide, or the array given), ``downsample`` level-0 pixels per pixel, ``mpp`` level-0
    µm per pixel, ``level_mpp`` µm per pixel of the level, ``name`` for messages, ``model_mpp`` the
    card's µm per pixel."""

    image: Any
    array: Any
    level: int
    downsample: float
    mpp: float
    level_mpp: float
    name: str
    model_mpp: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the level, pixels."""
        return int(self.array.shape[0]), int(self.array.shape[1])

    @property
    def scale(self) -> float:
        """Model pixels per pixel of the level (``level_mpp / model_mpp``; 1 without a model mpp)."""
        return self.level_mpp / self.model_mpp if self.model_mpp else 1.0


def _slide_level(image: Slide, mpp: float, card, level: int | None, name: str) -> int:
    """``level``, checked; None: the coarsest level at least as fine as the model's (within 10 %)."""
    if level is None:
        level = 0
        for i in range(len(image.levels)):
            if mpp * image.downsamples[i] <= card.mpp * 1.1:
                level = i
    if not 0 <= level < len(image.levels):
        raise InputError(f"{name}: level {level} does not exist (the slide has {len(image.levels)})")
    return level


def _as_uint8(arr, small, name: str):
    """``arr`` as uint8 RGB: numpy whole, lazy (dask) tile by tile with one stretch from ``small``."""
    if isinstance(arr, np.ndarray):
        return to_rgb_uint8(arr, name)
    if arr.dtype == np.uint8:  # read as it is, tile by tile (grey is made RGB per tile by the task)
        return arr
    return lazy_rgb_uint8(arr, small() if callable(small) else small, name)


def resolve_input(image, card, mpp, level, name) -> LevelInput:
    """The level of ``image`` (a Slide, or a numpy / dask array) to read for ``card``'s model.

    ``mpp``: the input's µm per pixel (a Slide's own when None; for arrays the model's is assumed);
    ``level`` None: the coarsest level at least as fine as the model's. Non-8-bit data are stretched to
    uint8 once for the whole image: a numpy array whole, a slide or dask array lazily with limits from
    its coarsest level (or a ~512 px subsample). InputError on an unknown or implausible scale, a missing
    level, or an image that is not 2-D grey / RGB / RGBA."""
    if isinstance(image, Slide):
        mpp = image.mpp if mpp is None else mpp
        name = image.path or image.name or name
        mpp = check_mpp(mpp, name)
        level = _slide_level(image, mpp, card, level, name)
        arr, down, small = image.levels[level], image.downsamples[level], image.levels[-1]
    else:
        arr, down, level = image, 1.0, 0
        mpp = check_mpp(mpp if mpp is not None else card.mpp, name)
        small = lambda: np.asarray(arr[:: max(1, arr.shape[0] // 512), :: max(1, arr.shape[1] // 512)])
    check_model_scale(mpp, card.mpp, name)
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 1:
        raise InputError(f"{name}: expected a 2-D RGB image, got shape {tuple(arr.shape)}")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise InputError(f"{name}: has {arr.shape[2]} channels; the model needs grey, RGB or RGBA")
    return LevelInput(image, _as_uint8(arr, small, name), level, down, mpp, mpp * down, name, card.mpp)
