"""A per-image decoding threshold for images unlike the training data (issue 27, "Zero-shot robustness").

On another lab's slides the detector is unsure of many nuclei it would call at once on CRCHisto: their
peaks score between the floor and the card's threshold instead of above it. The share of such
half-confident peaks measures that; where it is larger than on CRCHisto, the image's threshold comes
down in proportion. Fitted by ``scripts/adaptive_threshold.py`` on CRCHisto's tune and training images
and MoNuSeg's binary-mask images; measured on CRCHisto validation, MoNuSeg's instance-mask images and a
synthetic scanner (docs/model-cards/detector.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AdaptiveThreshold:
    """One image's (or region's) threshold from the scores of its peaks.

    Among the peaks scoring at least ``floor``, ``u`` is the share below the card's threshold ``t0``;
    the image's threshold is ``clip(t0 - slope * max(0, u - free_share), lowest, t0)``. It never rises
    above ``t0``; with fewer than ``min_peaks`` peaks above ``floor`` (a small region, few cells) it is
    ``t0``. Scores are objectness in [0, 1] (smoothed, at the peaks); ``lowest`` is also the level the
    image is decoded at before the rule picks.
    """

    floor: float = 0.4
    free_share: float = 0.2
    slope: float = 1.0
    lowest: float = 0.3
    min_peaks: int = 50

    def threshold(self, scores: np.ndarray, t0: float) -> float:
        """(N,) peak scores decoded at ``lowest`` or below -> the threshold in [min(lowest, t0), t0]."""
        above = np.asarray(scores)[np.asarray(scores) >= self.floor]
        if len(above) < self.min_peaks:
            return float(t0)
        unsure = float(np.mean(above < t0))
        return float(np.clip(t0 - self.slope * max(0.0, unsure - self.free_share), min(self.lowest, t0), t0))


def build_adaptive(spec) -> AdaptiveThreshold | None:
    """A card's ``params["adaptive"]`` (a dict of the fields above, or None / {} / False: off) -> the rule."""
    if not spec:
        return None
    return spec if isinstance(spec, AdaptiveThreshold) else AdaptiveThreshold(**spec)
