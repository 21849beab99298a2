"""Classification data: a labels.csv folder's split (``backend.datasets``) and its label matrix."""

from __future__ import annotations

import numpy as np

from ..datasets import LabelledImage, load_labels_split, read_labels_csv

GLAS_MPP = 0.62  # µm/px of the GlaS images (20x, rescaled from 0.465 µm by the challenge organisers)

__all__ = ["GLAS_MPP", "LabelledImage", "load_split", "read_labels_csv", "targets_of"]

load_split = load_labels_split


def targets_of(images: list[LabelledImage], classes: list[str]) -> np.ndarray:
    """``(N, K)`` 0/1 float32 label matrix."""
    t = np.zeros((len(images), len(classes)), np.float32)
    for i, s in enumerate(images):
        for c in s.labels:
            t[i, classes.index(c)] = 1
    return t
