"""The enhancer's training batches and losses.

Batches: cached images with a random dihedral transform and noise on features, positions (µm) and base
probabilities. Losses: class mode, cross-entropy against the targets matched once; bipartite mode,
``L = Σ CE + λ·‖y − ŷ‖₁`` with predictions matched to annotations inside the loop (``matching.match_cost``).
"""

from __future__ import annotations

import numpy as np

from ..matching import match_cost
from .data import CachedImage
from .options import EnhancerTrainOptions


def _class_weights(cache, k, power):
    t = np.concatenate([c.target for c in cache])
    freq = np.bincount(t[t >= 0], minlength=k).astype(np.float64)
    return (freq.sum() / np.maximum(freq, 1) / k) ** power


def _perturb(c: CachedImage, rng, opt: EnhancerTrainOptions, feat_std, mpp):
    """One augmented copy of a cached image: dihedral transform + noise. -> features, probs, pos_um."""
    h, w = c.shape
    yx = c.yx.astype(np.float64).copy()
    if rng.random() < 0.5:
        yx[:, 0] = h - 1 - yx[:, 0]
    if rng.random() < 0.5:
        yx[:, 1] = w - 1 - yx[:, 1]
    if rng.random() < 0.5:
        yx = yx[:, ::-1].copy()
    pos = yx * mpp + rng.normal(0, opt.position_noise_um, yx.shape)
    f = c.features + rng.normal(0, 1, c.features.shape).astype(np.float32) * feat_std * opt.feature_noise
    logp = np.log(np.clip(c.probs, 1e-4, 1))
    t = rng.uniform(1.0, max(1.0, opt.prob_temperature), (len(logp), 1))
    logp = logp / t + rng.normal(0, opt.prob_noise, logp.shape)
    p = np.exp(logp - logp.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    drop = rng.random(len(p)) < opt.prob_dropout
    p[drop] = 1.0 / p.shape[1]
    return f.astype(np.float32), p.astype(np.float32), pos


def _batch(cache_part, rng, opt, feat_std, mpp, noise=True):
    feats, probs, pos, targets, groups, gts = [], [], [], [], [], []
    for g, c in enumerate(cache_part):
        if noise:
            f, p, q = _perturb(c, rng, opt, feat_std, mpp)
        else:
            f, p, q = c.features, c.probs, c.yx * mpp
        feats.append(f), probs.append(p), pos.append(q), targets.append(c.target)
        groups.append(np.full(len(f), g))
        gts.append(c)
    return (
        np.concatenate(feats),
        np.concatenate(probs),
        np.concatenate(pos),
        np.concatenate(targets),
        np.concatenate(groups),
        gts,
    )


def _bipartite_loss(out, batch, cw, opt, mpp, radius_um):
    """CE + λ·L1 with Hungarian/greedy matching (``matching.match_cost``) of predicted to annotated points
    inside the loop: per image, cost = −p(annotated class) + λ·L1 of coordinates normalised by the image
    size, pairs further apart than ``radius_um`` forbidden."""
    import torch
    import torch.nn.functional as F

    feats, probs, pos, targets, groups, gts = batch
    logp = torch.log_softmax(out["logits"], 1)
    dev = logp.device
    pred = torch.as_tensor(pos, dtype=torch.float32, device=dev) + out["offset_um"]
    total, n = out["logits"].sum() * 0.0, 0  # a tensor even when nothing matches
    for g, c in enumerate(gts):
        sel = np.flatnonzero(groups == g)
        if len(sel) == 0 or len(c.gt_yx) == 0:
            continue
        size = np.array(c.shape, np.float64) * mpp
        py = pred[sel] / torch.as_tensor(size, dtype=torch.float32, device=dev)  # normalised coordinates
        gy = torch.as_tensor(c.gt_yx * mpp / size, dtype=torch.float32, device=dev)
        l1 = torch.cdist(py, gy, p=1)
        gl = torch.as_tensor(c.gt_labels, device=dev)
        cls_cost = -logp[sel][:, gl.clamp_min(0)].exp() * (gl >= 0)
        cost = (cls_cost + opt.l1_weight * l1).detach().cpu().numpy()
        gt_um = torch.as_tensor(c.gt_yx * mpp, dtype=torch.float32, device=dev)
        far = (torch.cdist(pred[sel].detach(), gt_um) > radius_um).cpu().numpy()
        r, cc = match_cost(cost, ~far, opt.matching)
        if len(r) == 0:
            continue
        r, cc = torch.as_tensor(r, device=dev), torch.as_tensor(cc, device=dev)
        lab = gl[cc]
        has = lab >= 0
        if has.any():
            total = total + F.nll_loss(
                logp[torch.as_tensor(sel, device=dev)[r]][has], lab[has], weight=cw, reduction="sum"
            )
        total = total + opt.l1_weight * l1[r, cc].sum()
        n += len(r)
    return total / max(n, 1)


def _loss(model, batch, cw, opt, mpp, radius_um, cfg):
    import torch
    import torch.nn.functional as F

    feats, probs, pos, targets, groups, _ = batch
    out = model(feats, probs, pos, groups=groups, aux=opt.aux_loss)
    if opt.mode == "bipartite":
        return _bipartite_loss(out, batch, cw, opt, mpp, radius_um)
    t = torch.as_tensor(targets, device=out["logits"].device)
    keep = t >= 0
    loss = F.cross_entropy(out["logits"][keep], t[keep], weight=cw)
    for a in out["aux_logits"][:-1]:
        loss = loss + 0.5 * F.cross_entropy(a[keep], t[keep], weight=cw)
    return loss
