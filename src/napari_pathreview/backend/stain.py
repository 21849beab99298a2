"""Hematoxylin level of an H&E image and its normalisation (Ruifrok & Johnston colour deconvolution).

A slide's nuclear stain strength varies with the lab and the scanner: the 97th percentile of the
hematoxylin optical density over tissue pixels ranges 0.61-2.87 across MoNuSeg's 30 images, and a segmenter
under-segments the palest ones. :func:`hematoxylin_factor` gives one factor per image that brings that
percentile to a model's reference; :func:`scale_hematoxylin` applies it pixel by pixel, so the same factor
gives the same result tile by tile as on the whole image.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .errors import InputError
from .slides import Slide
from .tissue import CoarseTissue, coarse_tissue, tissue_mask

# Ruifrok & Johnston H&E-DAB stain vectors as scikit-image has them (skimage.color.rgb_from_hed, rows H, E,
# DAB); densities are natural-log optical densities (skimage's rgb2hed divides them by -log(1e-6) and clips
# at 0; here they stay unclipped so a factor of 1 returns the input).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)

PERCENTILE = 97.0
FACTOR_RANGE = (0.5, 3.0)
_WHOLE_MAX = 2048  # images up to this side are measured whole; larger ones on windows of it
_WINDOW, _N_WINDOWS = 256, 64


def stain_density(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB, values 0..255 -> ``(..., 3)`` H, E, DAB optical densities (natural log units)."""
    od = -np.log(np.clip(np.asarray(rgb, np.float32)[..., :3] / 255.0, 1e-6, 1.0))
    return od @ HED_FROM_RGB.astype(np.float32)


def scale_hematoxylin(rgb: np.ndarray, factor: float) -> np.ndarray:
    """``(..., 3)`` RGB 0..255 with its hematoxylin density multiplied by ``factor`` (eosin and DAB kept).

    Returns float32 0..255 (the input unchanged, as float32, when ``factor`` is 1)."""
    rgb = np.asarray(rgb, np.float32)[..., :3]
    if factor == 1.0:
        return rgb
    hed = stain_density(rgb)
    hed[..., 0] *= np.float32(factor)
    return np.clip(np.exp(-(hed @ RGB_FROM_HED.astype(np.float32))) * 255.0, 0.0, 255.0)


def _window_origins(h: int, w: int, tissue=None) -> list[tuple[int, int]]:
    """Top-left corners of up to ``_N_WINDOWS`` windows of ``_WINDOW``² px: centred on tissue when a
    ``tissue.CoarseTissue`` is given (evenly through its tissue pixels, raster order), else on a grid."""
    if tissue is not None and tissue.mask.any():
        cy, cx = np.nonzero(tissue.mask)
        pick = np.unique(np.linspace(0, len(cy) - 1, min(_N_WINDOWS, len(cy))).round().astype(int))
        centres = [((cy[i] + 0.5) * tissue.factor, (cx[i] + 0.5) * tissue.factor) for i in pick]
    else:
        g = int(np.sqrt(_N_WINDOWS))
        centres = [(fy * h, fx * w) for fy in (np.arange(g) + 0.5) / g for fx in (np.arange(g) + 0.5) / g]
    half = _WINDOW / 2
    return [
        (int(np.clip(y - half, 0, max(0, h - _WINDOW))), int(np.clip(x - half, 0, max(0, w - _WINDOW))))
        for y, x in centres
    ]


def _samples(arr, tissue=None) -> np.ndarray:
    """Pixels ``(N, 3)`` to measure: the whole image up to ``_WHOLE_MAX`` px a side, else windows of it
    (:func:`_window_origins`; a lazy slide is read only there). An in-memory array without ``tissue``
    finds its own from every 32nd pixel."""
    h, w = (int(s) for s in arr.shape[:2])
    if max(h, w) <= _WHOLE_MAX:
        return np.asarray(arr[0:h, 0:w])[..., :3].reshape(-1, 3)
    if tissue is None and isinstance(arr, np.ndarray):
        tissue = CoarseTissue(tissue_mask(arr[::32, ::32]), 32.0)
    return np.concatenate(
        [
            np.asarray(arr[y0 : y0 + _WINDOW, x0 : x0 + _WINDOW])[..., :3].reshape(-1, 3)
            for y0, x0 in _window_origins(h, w, tissue)
        ]
    )


def hematoxylin_level(arr, percentile: float = PERCENTILE, tissue=None) -> float | None:
    """The ``percentile`` of the hematoxylin density over the tissue pixels of an ``(H, W, 3)`` RGB
    uint8 image (numpy, or lazy: dask / zarr). None when it holds no tissue (bare glass) or is grey.
    ``tissue``: a ``tissue.CoarseTissue`` for ``arr`` (a slide's coarse level), which places the
    measured windows of a large image on tissue."""
    if len(arr.shape) != 3 or arr.shape[2] < 3:
        return None  # grey: no stain to separate
    px = _samples(arr, tissue)
    px = px[tissue_mask(px[None])[0]]
    if len(px) < 100:
        return None
    return float(np.percentile(stain_density(px)[:, 0], percentile))


def hematoxylin_factor(
    arr,
    reference: float | None,
    percentile: float = PERCENTILE,
    limits: tuple[float, float] = FACTOR_RANGE,
    tissue=None,
) -> float:
    """Factor for :func:`scale_hematoxylin` that brings ``arr``'s hematoxylin level to ``reference``,
    clipped to ``limits``; 1.0 when ``reference`` is None or the image holds no tissue."""
    if reference is None:
        return 1.0
    level = hematoxylin_level(arr, percentile, tissue)
    if level is None or level <= 0:
        return 1.0
    return float(np.clip(reference / level, *limits))


def image_factor(arr, reference: float | None, image=None, level: int = 0) -> float:
    """:func:`hematoxylin_factor` of the array a pipeline reads (``arr``: level ``level`` of ``image``);
    when ``image`` is a Slide its coarse level places the measured windows on tissue."""
    if reference is None:
        return 1.0

    tissue = coarse_tissue(image, level) if isinstance(image, Slide) else None
    return hematoxylin_factor(arr, reference, tissue=tissue)


def normalised_image(img: np.ndarray, reference: float | None) -> np.ndarray:
    """An in-memory ``(H, W, 3)`` uint8 image scaled to ``reference`` (one factor), as uint8; unchanged
    when ``reference`` is None."""
    if reference is None:
        return img
    return scale_hematoxylin(img, hematoxylin_factor(img, reference)).round().astype(np.uint8)


def reference_level(images) -> float:
    """Median hematoxylin level of RGB uint8 ``images`` (those holding tissue): a training set's reference."""
    levels = [v for v in (hematoxylin_level(im) for im in images) if v is not None]
    if not levels:
        raise InputError(
            "no tissue in any training image: no hematoxylin level to normalise to; train without --stain-norm"
        )
    return float(np.median(levels))


def normalised_samples(samples, reference: float) -> list:
    """Copies of dataclass ``samples`` (with an ``image`` field, RGB uint8) whose images are scaled to
    ``reference`` (:func:`normalised_image`)."""
    return [replace(s, image=normalised_image(s.image, reference)) for s in samples]


def normalised_training_sets(fit_set, *held_out, reference: float | None = None):
    """A training run's sample lists scaled to ``reference`` (default: the fitted images' median level,
    :func:`reference_level`) -> ``(reference, fit_set, *held_out)``; held-out images are scaled as
    inference will scale them."""
    reference = reference if reference is not None else reference_level([s.image for s in fit_set])
    return (reference, normalised_samples(fit_set, reference), *(normalised_samples(h, reference) for h in held_out))
