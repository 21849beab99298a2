"""Options of classifier training and evaluation (fields named as the keywords they replace)."""

from __future__ import annotations

from dataclasses import dataclass, replace
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


@dataclass
class ClassifierEvalOptions:
    """How :func:`~..classifier_eval.evaluate_classifier` scores: ``mpp`` of the images (None: the card's
    ``input_mpp``), ``faithfulness`` of the explanation ``methods`` (None: all the model supports),
    only the first ``limit`` images (None: all)."""

    mpp: float | None = None
    faithfulness: bool = True
    methods: tuple | None = None
    limit: int | None = None


def with_fields(options, cls, fields: dict):
    """``options`` (an instance of ``cls``; None: its defaults) with ``fields`` (keyword shorthand) set."""
    return replace(options if options is not None else cls(), **fields)
