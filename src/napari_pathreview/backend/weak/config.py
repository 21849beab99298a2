"""Settings of the weak-cells recipe and its stage-1 variants."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VARIANTS = ("cam", "puzzle", "sc")
ROW_KEYS = {"cam": "cam", "puzzle": "puzzle_cam", "sc": "sc_cam"}


@dataclass
class WeakConfig:
    """Settings of the whole weak-cells recipe (stored in the cards). Sizes in model pixels at ``mpp``."""

    mpp: float = 0.55
    crop: int = 64
    widths: tuple = (32, 64, 128)
    n_sub: int = 3
    cam_epochs: int = 30
    cam_steps: int = 60
    cam_batch: int = 64
    puzzle_alpha: float = 1.0
    seg_epochs: int = 30
    seg_steps: int = 30
    seg_batch: int = 8
    seg_crop: int = 192
    tta_scales: tuple = (1.0, 1.25)
    tta_flips: bool = True
    cell_radius: int = 3
    min_px: int = 12
    thresholds: tuple = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))
    tune_every: int = 7
    seed: int = 0
    lr: float = 2e-3
    seg_select: str = "agreement"  # stage-2 checkpoint rule: "agreement" or "tile_f1" (see train_stage2)
