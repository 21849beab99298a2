"""The one pixel normalisation of the models: ``(x - mean) / std`` per channel with the card's numbers.

Every model card carries ``normalisation = {"mean": [...], "std": [...]}`` (one value per input
channel, on pixels scaled to [0, 1]); the shipped cards use mean 0.5, std 0.25.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np


def default_normalisation() -> dict:
    """The normalisation a new :class:`~.weights.ModelCard` gets (what training uses before a card exists)."""
    from .weights import ModelCard

    return next(f for f in fields(ModelCard) if f.name == "normalisation").default_factory()


def normalise_pixels(img: np.ndarray, normalisation: dict) -> np.ndarray:
    """Channel-last pixels ``(..., C)`` -> float32 ``(x - mean) / std``, same shape.

    uint8 pixels are scaled to [0, 1] first (/ 255); other dtypes are taken as already in [0, 1].
    """
    mean = np.asarray(normalisation["mean"], np.float32)
    std = np.asarray(normalisation["std"], np.float32)
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else np.asarray(img, np.float32)
    return (x - mean) / std
