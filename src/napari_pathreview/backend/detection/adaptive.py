"""Per-image adaptation of the detector to images unlike its training data (issue 27, "Zero-shot
robustness"): a threshold of the image's own and, for images far from it, batch-norm statistics of its own.

On another lab's slides the detector is unsure of many nuclei it would call at once on CRCHisto: their
peaks score between the floor and the card's threshold instead of above it. The share of such
half-confident peaks measures that; where it is larger than on CRCHisto, the image's threshold comes
down in proportion (:class:`AdaptiveThreshold`), and where it is larger than on any CRCHisto image the
network's batch-norm statistics are recomputed from the image (:class:`BatchNormAdaptation`, AdaBN, Li et
al. 2016) and the image is detected again. Fitted by ``scripts/adaptive_threshold.py`` and
``scripts/test_time_bn.py`` on CRCHisto's training images and MoNuSeg's binary-mask images; measured on
CRCHisto validation, MoNuSeg's instance-mask images and a synthetic scanner (docs/model-cards/detector.md).
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

    floor: float = 0.5
    free_share: float = 0.2
    slope: float = 1.0
    lowest: float = 0.35
    min_peaks: int = 50

    def unsure(self, scores: np.ndarray, t0: float) -> float:
        """The share ``u`` of the peaks scoring at least ``floor`` that score below ``t0`` (0 with fewer
        than ``min_peaks`` such peaks)."""
        above = np.asarray(scores)[np.asarray(scores) >= self.floor]
        return float(np.mean(above < t0)) if len(above) >= self.min_peaks else 0.0

    def threshold(self, scores: np.ndarray, t0: float) -> float:
        """(N,) peak scores decoded at ``lowest`` or below -> the threshold in [min(lowest, t0), t0]."""
        excess = max(0.0, self.unsure(scores, t0) - self.free_share)
        return float(np.clip(t0 - self.slope * excess, min(self.lowest, t0), t0))


@dataclass(frozen=True)
class BatchNormAdaptation:
    """Test-time batch-norm statistics for an image the detector is unsure of.

    When the unsure share ``u`` (:meth:`AdaptiveThreshold.unsure`) of the first pass is above ``above``,
    every batch-norm layer's running mean and variance become ``mix`` x the image's (averaged over at most
    ``max_tiles`` of the tiles holding first-pass cells, spread over them) + (1 - mix) x the trained ones,
    in a copy of the model; the image is then detected again with the copy's objectness map and the trained
    model's class probabilities and features (the copy's cell types were worse wherever they could be
    measured: forced on CRCHisto validation, weighted F1 0.598 -> 0.506). Costs one pass over at most
    ``max_tiles`` tiles and a pass of both models over every tile.
    """

    above: float = 0.3
    mix: float = 1.0
    max_tiles: int = 64


def _build(cls, spec):
    """A card's rule (a dict of ``cls``'s fields, or None / {} / False: off) -> ``cls`` or None."""
    if not spec:
        return None
    return spec if isinstance(spec, cls) else cls(**spec)


def build_adaptive(spec) -> AdaptiveThreshold | None:
    """A card's ``params["adaptive"]`` -> the threshold rule, or None (off)."""
    return _build(AdaptiveThreshold, spec)


def build_bn_adaptation(spec) -> BatchNormAdaptation | None:
    """A card's ``params["adapt_bn"]`` -> the batch-norm rule, or None (off)."""
    return _build(BatchNormAdaptation, spec)


def bn_adapted(model, run, mix: float):
    """A copy of ``model`` with batch-norm statistics from ``run(copy)`` (forward passes over an image's
    tiles, in any number of calls), mixed ``mix`` : 1 - mix with the trained ones; in eval mode. None when
    ``run`` made no forward pass (every tile it was given was glass)."""
    import copy

    import torch

    m = copy.deepcopy(model)
    bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    trained = [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # a cumulative average over the tiles' batches
        b.train()
    run(m)
    if bns and int(bns[0].num_batches_tracked) == 0:
        return None
    for b, (mean, var) in zip(bns, trained):
        b.running_mean.mul_(mix).add_((1 - mix) * mean)
        b.running_var.mul_(mix).add_((1 - mix) * var)
    return m.eval()
