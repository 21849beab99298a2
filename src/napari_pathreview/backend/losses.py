"""Classification losses: weighted BCE, focal, macro soft-F1, Lovász (hinge, softmax), ArcFace, dual loss.

Shapes: ``logits`` ``(B, K)``; ``target`` ``(B, K)`` float 0/1 for multi-label losses, ``(B,)`` class
indices for single-label ones. Every function returns a scalar tensor (mean over the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_bce(logits, target, pos_weight=None):
    """Binary cross-entropy per class; ``pos_weight`` ``(K,)`` up-weights positives of rare classes."""
    return F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=pos_weight)


def focal_loss(logits, target, gamma: float = 2.0, multilabel: bool = True):
    """Focal loss ``(1 - p_t) ** gamma * CE`` (Lin et al. 2017): sigmoid per class, or softmax."""
    if multilabel:
        t = target.float()
        ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        p_t = torch.exp(-ce)
        return ((1 - p_t) ** gamma * ce).mean()
    logp = F.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    return (-((1 - logp.exp()) ** gamma) * logp).mean()


def soft_f1_loss(logits, target, eps: float = 1e-6):
    """``1 - macro soft-F1`` with sigmoid probabilities as soft counts (differentiable F1 surrogate)."""
    p, t = torch.sigmoid(logits), target.float()
    tp, fp, fn = (p * t).sum(0), (p * (1 - t)).sum(0), ((1 - p) * t).sum(0)
    return 1 - (2 * tp / (2 * tp + fp + fn + eps)).mean()


def _lovasz_grad(gt_sorted):
    gts = gt_sorted.sum()
    inter = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jac = 1.0 - inter / union
    if len(gt_sorted) > 1:
        jac[1:] = jac[1:] - jac[:-1]
    return jac


def lovasz_hinge(logits, target):
    """Lovász hinge (Berman et al. 2018) per class over the batch, averaged; multi-label 0/1 ``target``."""
    losses = []
    for k in range(logits.shape[1]):
        s, t = logits[:, k], target[:, k].float()
        errors = 1.0 - s * (2 * t - 1)
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(F.relu(errors_sorted), _lovasz_grad(t[perm])))
    return torch.stack(losses).mean()


def lovasz_softmax(logits, target):
    """Lovász-softmax over the batch for single-label ``target`` ``(B,)``; classes present only."""
    p = F.softmax(logits, 1)
    losses = []
    for k in range(logits.shape[1]):
        fg = (target == k).float()
        if fg.sum() == 0:
            continue
        err = (fg - p[:, k]).abs()
        err_sorted, perm = torch.sort(err, descending=True)
        losses.append(torch.dot(err_sorted, _lovasz_grad(fg[perm])))
    return torch.stack(losses).mean() if losses else logits.sum() * 0


def arcface_logits(cosine, target, s: float = 16.0, m: float = 0.5):
    """Additive angular margin: ``s * cos(theta + m)`` for the target class, ``s * cos(theta)`` else.

    cosine ``(B, K)`` in [-1, 1]; target ``(B,)``. Returns scaled logits ``(B, K)`` for cross-entropy.
    """
    theta = torch.acos(cosine.clamp(-1 + 1e-6, 1 - 1e-6))
    onehot = F.one_hot(target, cosine.shape[1]).bool()
    return s * torch.where(onehot, torch.cos(theta + m), cosine)


def arcface_loss(cosine, target, s: float = 16.0, m: float = 0.5):
    """Cross-entropy on ArcFace margin logits (Deng et al. 2019)."""
    return F.cross_entropy(arcface_logits(cosine, target, s, m), target)


def dual_loss(cls_loss, reconstruction, image, weight: float = 10.0):
    """Classification loss + ``weight`` x MSE(reconstruction, image) (auto-encoder regulariser)."""
    return cls_loss + weight * F.mse_loss(reconstruction, image)


def build_loss(name: str, multilabel: bool, pos_weight=None):
    """``fn(logits, target)`` for a loss name: ``ce`` (softmax CE / BCE), ``focal``, ``bce+f1``,
    ``focal+lovasz``; ``+`` sums losses with weight 1."""
    parts = []
    for part in name.split("+"):
        if part in ("ce", "bce"):
            parts.append(
                (lambda lo, t: weighted_bce(lo, t, pos_weight))
                if multilabel
                else (lambda lo, t: F.cross_entropy(lo, t))
            )
        elif part == "focal":
            parts.append(lambda lo, t: focal_loss(lo, t, multilabel=multilabel))
        elif part == "f1":
            if not multilabel:
                raise ValueError("soft-F1 needs multi-label (0/1) targets")
            parts.append(soft_f1_loss)
        elif part == "lovasz":
            parts.append(lovasz_hinge if multilabel else lovasz_softmax)
        else:
            raise ValueError(f"unknown loss {part!r}: use ce, focal, f1, lovasz joined by '+'")
    return lambda lo, t: sum(f(lo, t) for f in parts)
