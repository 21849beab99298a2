"""Few-shot adaptation of the detector: what ``train_detector`` does differently when it fine-tunes
``init`` on a few images (one annotated field of a new lab), and the anchor that keeps the class head
near ``init``'s without ``init``'s training data (self-distillation).

Why each choice, with the numbers: docs/model-cards/detector.md, "Few-shot adaptation";
``pathreview bench few-shot`` reproduces them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

# ``train_detector`` holds out max(1, n // 5) of n training images to tune on: up to 14 images leave fewer
# than 3, too few to re-tune the decoding on, so such a fine-tune is few-shot
FEW_SHOT_IMAGES = 14


@dataclass
class FewShotRecipe:
    """Defaults of a few-shot fine-tune (each applies only where the option was left None).

    ``epochs`` x ``steps_per_epoch``: optimiser steps (the crops per image follow from the image count:
    one 455² field at 0.55 µm/px gets 64 crops of 256² per epoch); ``lr``: learning rate; ``amp``:
    bfloat16 autocast in training (half the seconds per step on a CPU with AVX512-BF16); ``freeze_bn``:
    keep ``init``'s batch-norm running statistics (re-estimated on one field they cost the class head
    most of its accuracy on ``init``'s data); ``distill``: weight of the KL divergence of the class
    probabilities from ``init``'s, near the annotated centres of the training crops (0: off). A few-shot
    fine-tune also keeps ``init``'s threshold, min distance (µm) and smoothing (µm) instead of re-tuning
    them on the training field.
    """

    epochs: int = 4
    steps_per_epoch: int = 8
    lr: float = 2e-5
    amp: bool = True
    freeze_bn: bool = True
    distill: float = 1.0


def is_few_shot(init, n_images: int, few_shot: bool | None) -> bool:
    """``few_shot`` when given, else: a fine-tune (``init``) on at most ``FEW_SHOT_IMAGES`` images."""
    if few_shot is not None:
        return bool(few_shot) and init is not None
    return init is not None and n_images <= FEW_SHOT_IMAGES


def few_shot_options(o, n_fit: int, recipe: FewShotRecipe | None = None):
    """``o`` (``DetectorTrainOptions``) with its None knobs set to the few-shot ``recipe``'s; crops per
    image so that ``n_fit`` fitted images give ``recipe.steps_per_epoch`` batches per epoch."""
    r = recipe or FewShotRecipe()
    crops = math.ceil(r.steps_per_epoch * o.batch_size / max(1, n_fit))
    return replace(
        o,
        epochs=o.epochs if o.epochs is not None else r.epochs,
        crops_per_image=o.crops_per_image if o.crops_per_image is not None else crops,
        lr=o.lr if o.lr is not None else r.lr,
        amp=o.amp if o.amp is not None else r.amp,
        freeze_bn=o.freeze_bn if o.freeze_bn is not None else r.freeze_bn,
        distill=o.distill if o.distill is not None else r.distill,
    )


class ClassAnchor:
    """A frozen copy of ``init`` whose class probabilities the fine-tuned model is kept close to.

    ``loss(x, logits, obj)``: ``weight`` x the KL divergence KL(init's || the model's) of the per-pixel
    class distributions, averaged with the Gaussian centre target ``obj`` (B, 1, H, W) as weights, so
    only pixels at nuclei count. It needs no labels: the field's crops carry what ``init`` knew.
    """

    def __init__(self, init_model, weight: float):
        self.weight = float(weight)
        self.teacher = copy.deepcopy(init_model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def loss(self, x, logits, obj):
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            t = F.log_softmax(self.teacher(x)["class_logits"].float(), 1)
        s = F.log_softmax(logits.float(), 1)
        kl = (t.exp() * (t - s)).sum(1, keepdim=True)
        return self.weight * (kl * obj).sum() / obj.sum().clamp(min=1e-6)
