"""Attention rollout of a ViT (Abnar & Zuidema 2020): one class-agnostic map for every target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cam import _up

if TYPE_CHECKING:
    import torch


def attention_rollout(attentions) -> torch.Tensor:
    """Rollout (Abnar & Zuidema 2020): per layer, mean over heads, + identity (residual), rows
    normalised, multiplied through the layers; returns the class token's row over the patches ``(B, N)``."""
    import torch

    result = None
    for a in attentions:
        a = a.mean(1)
        a = a + torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    return result[:, 0, 1:]


def rollout(model, x, targets, **_):
    """Attention-rollout map ``(n, H, W)`` (the same for every target) and logits ``(K,)``."""
    import torch

    with torch.no_grad():
        logits, attns = model(x, return_attention=True)
        g = model.grid
        m = attention_rollout(attns)[0].reshape(1, g, g)
    return _up(m, x.shape[-2:]).expand(len(targets), -1, -1), logits[0]
