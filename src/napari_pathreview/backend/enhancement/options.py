"""Options of the enhancer's training and evaluation.

:class:`EnhancerTrainOptions` is the learning recipe (recorded in the card as ``training.options``);
:class:`EnhancerTrainSetup` says what it is trained for and on (detector, starting weights, data scale,
seed, device); :class:`EnhancerEvalOptions` the evaluation's. Distances are µm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: largest distance (µm) between a detection and the annotation it stands for (6 px at 0.55 µm/px)
MATCH_RADIUS_UM = 3.3


@dataclass
class EnhancerTrainOptions:
    """Training options (see ``enhancement``'s docstring). Noise scales: ``feature_noise`` in units of each
    feature's standard deviation, ``position_noise_um`` in µm; ``prob_temperature`` is the largest random
    temperature applied to the base probabilities; ``prob_dropout`` the share of cells whose base
    probabilities are replaced by uniform ones."""

    epochs: int = 40
    lr: float = 1e-3
    batch_images: int = 4
    schedule: str = "cosine"  # cosine | step | cosine-restarts
    mode: str = "class"  # class | bipartite
    matching: str = "hungarian"  # hungarian | greedy
    aux_loss: bool = False
    l1_weight: float = 5.0
    feature_noise: float = 0.3
    position_noise_um: float = 1.5
    prob_temperature: float = 3.0
    prob_noise: float = 0.5
    prob_dropout: float = 0.3
    class_weight_power: float = 0.5
    tune_bias: bool = False


@dataclass
class EnhancerTrainSetup:
    """What an enhancer is trained for and on.

    ``detector``: the detector (name or path) whose cells and features it learns from (None: ``init``'s,
    else the shipped one); ``init``: an enhancer (name or path) to fine-tune from, its architecture
    included; ``config``: ``EnhancerConfig`` fields of a new enhancer (e.g. ``position``, ``radius_um``);
    ``mpp``: the data's µm per pixel (None: ``detection.CRCHISTO_MPP``); ``radius_um``: the match radius
    of targets and scores.
    """

    detector: str | Path | None = None
    init: str | Path | None = None
    config: dict | None = None
    mpp: float | None = None
    radius_um: float = MATCH_RADIUS_UM
    seed: int = 0
    device: str | None = None


@dataclass
class EnhancerEvalOptions:
    """Options of ``evaluate_enhancer``: ``detector`` (None: the one in the enhancer's card), match
    ``radius_um``, the data's ``mpp`` (None: ``detection.CRCHISTO_MPP``), ``tta`` (detect with the
    8-fold rotation / flip average), and ``ablation``: also train short variants (``ablation_epochs``)."""

    detector: str | Path | None = None
    radius_um: float = MATCH_RADIUS_UM
    mpp: float | None = None
    device: str | None = None
    tta: bool = False
    ablation: bool = False
    ablation_epochs: int = 15
