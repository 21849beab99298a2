"""What a segmentation is asked for and what it returns: the card's tuned :class:`SegmentParams`, the
run's :class:`SegmentSettings` (overrides, pyramid level, ensemble, speed switches) and the
:class:`SegmentationResult`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..modelio import from_card


@dataclass
class SegmentParams:
    """Post-processing and tiling. threshold: foreground probability; marker_threshold: normalised
    distance above which a pixel seeds an instance; min_area_um2: smaller instances are dropped;
    tile / overlap: model-scale pixels per tile and between tiles; tta: average the 4 flips;
    stain_reference: the hematoxylin level (``stain.hematoxylin_level``) each input is scaled to before
    the network (one factor per image, ``stain.hematoxylin_factor``); None: inputs as they are."""

    threshold: float = 0.5
    marker_threshold: float = 0.5
    min_area_um2: float = 4.0
    tile: int = 512
    overlap: int = 64
    tta: bool = False
    majority_class: bool = False
    stain_reference: float | None = None

    @classmethod
    def from_card(cls, card, **override) -> SegmentParams:
        return from_card(cls, card, **override)


@dataclass
class SegmentSettings:
    """How one segmentation runs, beside the card's :class:`SegmentParams`.

    ``tile`` (model pixels), ``overlap`` (model pixels, or a fraction of the tile when < 1) and ``tta``
    override the params; ``stain_norm`` False ignores the card's hematoxylin reference
    (``SegmentParams.stain_reference``). ``level``: pyramid level of a Slide (None: the coarsest level at
    least as fine as the model's). ``ensemble``: several models' probabilities combined by ``"mean"`` or
    ``"union"`` (max). ``skip_background``: tiles of bare glass skip the network. ``compile``:
    ``torch.compile`` the network(s) (pays on large slides). ``name``: the input's name in messages.
    """

    tile: int | None = None
    overlap: float | None = None
    tta: bool | None = None
    stain_norm: bool | None = None
    level: int | None = None
    ensemble: str = "mean"
    skip_background: bool = True
    compile: bool = False
    name: str = "image"


def apply_options(params: SegmentParams, options: SegmentSettings) -> SegmentParams:
    """``params`` with the tile / overlap / tta / stain_norm overrides of ``options`` applied."""
    kw = {} if options.stain_norm is None or options.stain_norm else {"stain_reference": None}
    if options.tile is not None:
        kw["tile"] = int(options.tile)
    if options.overlap is not None:
        t, overlap = kw.get("tile", params.tile), options.overlap
        kw["overlap"] = int(round(overlap * t)) if 0 < overlap < 1 else int(overlap)
    if options.tta is not None:
        kw["tta"] = bool(options.tta)
    return replace(params, **kw)


@dataclass
class SegmentationResult:
    """Segmentation of one image, at the pixels of the array read (pyramid level ``level``).

    labels: (H, W) int32 instances (0 background); prob: (H, W) float32 foreground probability;
    distance: (H, W) float32 normalised distance map; semantic: (H, W) int32 class map (0 background,
    k = classes[k - 1]) or None for one class; table: per instance ``label, area_px, area_um2,
    centroid_y, centroid_x, mean_intensity`` (centroids in level-0 pixels); mpp: level-0 µm per pixel
    (None when unknown); downsample: level-0 pixels per result pixel.
    """

    labels: np.ndarray
    prob: np.ndarray
    distance: np.ndarray
    classes: list
    mpp: float | None
    table: dict
    semantic: np.ndarray | None = None
    level: int = 0
    downsample: float = 1.0
    source: str = ""
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.table["label"]))
