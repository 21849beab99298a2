"""Options of classifier training and evaluation (fields named as the keywords they replace)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .data import GLAS_MPP


@dataclass
class ClassifierTrainOptions:
    """How :func:`~.train.train_classifier` trains.

    ``epochs`` x ``steps_per_epoch`` batches of ``batch_size`` random ``crop`` x ``crop`` crops (model
    pixels); ``data_mpp``: µm/px of the images on disk (None: the base's, else GlaS's), ``model_mpp``: the model's scale; ``tune_images``:
    train images held out to pick the checkpoint and thresholds; ``lr``: None = 3e-3 (CNN) or 1e-3 (ViT);
    ``widths``, ``se``, ``head`` (``linear`` / ``arcface``), ``decoder``: the CNN (``arch="cnn"``) or a
    small ViT (``arch="vit"``); ``loss``: ``backend.losses.build_loss`` name; ``checkpoints``: save
    ``OUT.checkpoint`` after each best epoch; ``init``: a classifier or ViT (name or path) to fine-tune.
    ``stain_jitter``: HED optical-density jitter of each crop, stains scaled by ``1 ± stain_jitter`` and
    shifted by ``± 3/8 stain_jitter`` (OD units); ``stem``: the ViT's patch embedding (``patch`` or
    ``conv``); ``distill``: a classifier (name or path) whose probabilities on the same augmented crops
    are soft targets, loss = ``(1 - distill_weight) x CE + distill_weight x KL(teacher || student)``;
    ``tune_shift``: thresholds are also searched on stain-shifted copies of the tune images (three
    shifts of this strength, see ``model_input.stain_shifted``; 0: the tune images as they are).
    ``threshold_folds`` > 1: the thresholds are instead searched on out-of-fold probabilities of every
    training image (that many stratified folds, one model per fold trained as this one with nothing
    held out; plus ``tune_shift`` copies), see :mod:`.folds`.
    """

    epochs: int = 30
    seed: int = 0
    crop: int = 192
    batch_size: int = 16
    steps_per_epoch: int = 16
    data_mpp: float | None = None
    model_mpp: float = 2 * GLAS_MPP
    tune_images: int = 10
    lr: float | None = None
    widths: tuple = (16, 32, 64, 128)
    se: bool = False
    loss: str = "ce"
    head: str = "linear"
    decoder: bool = False
    arch: str = "cnn"
    checkpoints: bool = False
    init: str | Path | None = None
    stain_jitter: float = 0.08
    stem: str = "patch"
    distill: str | Path | None = None
    distill_weight: float = 0.5
    tune_shift: float = 0.0
    threshold_folds: int = 0


@dataclass
class ClassifierEvalOptions:
    """How :func:`~..classifier_eval.evaluate_classifier` scores: ``mpp`` of the images (None: the card's
    ``input_mpp``), ``faithfulness`` of the explanation ``methods`` (None: all the model supports),
    only the first ``limit`` images (None: all). ``stain_shift``: a proxy for a later scanning batch:
    each image's H, E and residual optical densities (Ruifrok-Johnston) scaled by ``1 ± stain_shift``
    and shifted by ``± stain_shift / 4`` (OD units), fixed per image (seed = image index); None/0: off."""

    mpp: float | None = None
    faithfulness: bool = True
    methods: tuple | None = None
    limit: int | None = None
    stain_shift: float | None = None
