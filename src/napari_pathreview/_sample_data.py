"""Sample data: one real H&E tile from MoNuSeg (CC BY-NC-SA 4.0; see sample_data/ATTRIBUTION.md).

The files ship inside the package (``napari_pathreview/sample_data``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backend.slides import open_slide

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
SAMPLE_TILE = SAMPLE_DIR / "monuseg_tile.png"
SAMPLE_PYRAMID = SAMPLE_DIR / "monuseg_pyramid.ome.tif"
SAMPLE_MPP = 0.25  # MoNuSeg is scanned at 40x
ATTRIBUTION = "MoNuSeg (Kumar et al., IEEE TMI 2017; TCGA), CC BY-NC-SA 4.0"


def sample_path(name: str) -> Path:
    """Path of a shipped sample file (``"tile"`` or ``"pyramid"``)."""
    return {"tile": SAMPLE_TILE, "pyramid": SAMPLE_PYRAMID}[name]


def make_sample_tile() -> list[tuple]:
    """A 512 x 512 H&E tile (breast carcinoma, 0.25 µm/px) as one RGB image layer."""
    slide = open_slide(SAMPLE_TILE, mpp=SAMPLE_MPP)
    data = np.asarray(slide.levels[0])
    meta = {
        "name": "MoNuSeg tile",
        "scale": (SAMPLE_MPP, SAMPLE_MPP),
        "units": ("um", "um"),
        "rgb": True,
        "metadata": {"mpp": SAMPLE_MPP, "path": str(SAMPLE_TILE), "attribution": ATTRIBUTION},
    }
    return [(data, meta, "image")]


def make_sample_pyramid() -> list[tuple]:
    """The same tile as a 3-level pyramidal OME-TIFF, opened lazily as a multiscale image layer."""
    slide = open_slide(SAMPLE_PYRAMID)
    mpp = slide.mpp if slide.mpp is not None else SAMPLE_MPP
    meta = {
        "name": "MoNuSeg pyramid",
        "scale": (mpp, mpp),
        "units": ("um", "um"),
        "rgb": True,
        "multiscale": True,
        "metadata": {"mpp": mpp, "path": str(SAMPLE_PYRAMID), "attribution": ATTRIBUTION},
    }
    return [(list(slide.levels), meta, "image")]
