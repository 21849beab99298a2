"""The explanation methods: which apply to a model, and the function of each.

Every method takes one normalised input ``x`` ``(1, C, H, W)`` (model scale) and class indices
``targets`` and returns ``(maps (n_targets, H, W) float tensor at x's pixel grid, logits (K,))``.
"""

from __future__ import annotations

from ..errors import InputError
from .cam import cam, gradcam
from .lrp import lrp
from .rollout import rollout

METHODS = ("cam", "gradcam", "lrp-epsilon", "lrp-gamma", "lrp-a1b0", "lrp-a2b1", "rollout")
LRP_RULES = {"lrp-epsilon": "epsilon", "lrp-gamma": "gamma", "lrp-a1b0": "a1b0", "lrp-a2b1": "a2b1"}


def methods_for(card) -> tuple:
    """Methods a model supports: rollout for a ViT; CAM, Grad-CAM and LRP for a linear-head CNN."""
    if card.task == "vit":
        return ("rollout",)
    if card.config.get("head", "linear") != "linear":
        return ("gradcam",)
    return METHODS[:-1]


def method_fn(name: str, card):
    """The explanation function for a method name, checked against the model's kind."""
    if name not in METHODS:
        raise InputError(f"unknown method '{name}'; choose from {', '.join(METHODS)}")
    if name not in methods_for(card):
        raise InputError(
            f"{card.name}: method '{name}' does not apply to this {card.task} model; use {', '.join(methods_for(card))}"
        )
    if name in LRP_RULES:
        return lambda model, x, t, **kw: lrp(model, x, t, LRP_RULES[name])
    return {"cam": cam, "gradcam": gradcam, "rollout": rollout}[name]
