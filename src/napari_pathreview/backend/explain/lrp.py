"""Layer-wise relevance propagation (epsilon, gamma, alpha-beta rules) of a CNN classifier's logit.

The relevance of the target logit is propagated down to the input pixels (summed over channels).
BatchNorm after a conv is merged into it (canonisation); each bias' share of the relevance is spread
uniformly over its receptive field, so relevance is conserved: the input relevance sums to the logit
(up to the epsilon stabiliser's absorption).
"""

from __future__ import annotations

from ..errors import InputError


def _canonise(seq: list) -> list:
    """Steps ``(kind, module(s), weight, bias)``: a conv followed by BatchNorm becomes one linear step
    with the BN folded into its weight and bias; standalone BN is an element-wise linear step; ReLU,
    Dropout, Flatten and squeeze-excitation gates pass relevance through; pooling uses the z-rule."""
    import torch
    from torch import nn

    from ..models.classifier import SqueezeExcite

    def bn_affine(bn):
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return s, bn.bias - bn.running_mean * s

    steps, i = [], 0
    while i < len(seq):
        m = seq[i]
        nxt = seq[i + 1] if i + 1 < len(seq) else None
        if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            s, t = bn_affine(nxt)
            b = t if m.bias is None else m.bias * s + t
            steps.append(("linear", [m, nxt], m.weight * s.view(-1, 1, 1, 1), b))
            i += 2
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            b = m.bias if m.bias is not None else torch.zeros(m.weight.shape[0])
            steps.append(("linear", [m], m.weight, b))
        elif isinstance(m, nn.BatchNorm2d):
            steps.append(("linear", [m], *bn_affine(m)))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            steps.append(("pool", [m], None, None))
        elif isinstance(m, (nn.ReLU, nn.Dropout, nn.Flatten, nn.Identity, SqueezeExcite)):
            steps.append(("pass", [m], None, None))
        else:
            raise InputError(f"LRP has no rule for a {type(m).__name__} layer")
        i += 1
    return steps


def _apply(mod, a, w, b=None):
    """The linear map of ``mod`` with weight ``w`` (and bias ``b`` when given)."""
    import torch.nn.functional as F
    from torch import nn

    if isinstance(mod, nn.Conv2d):
        return F.conv2d(a, w, b, mod.stride, mod.padding, mod.dilation, mod.groups)
    if isinstance(mod, nn.Linear):
        return F.linear(a, w, b)
    shape = (1, -1, *([1] * (a.dim() - 2)))
    return a * w.view(shape) + (0 if b is None else b.view(shape))  # BatchNorm affine


def _stab(z, eps: float):
    return z + eps * ((z >= 0).to(z.dtype) * 2 - 1)


def _bias_map(mod, b, z):
    """The bias ``b`` broadcast to the output ``z`` of ``mod``."""
    return b.view(1, -1, *([1] * (z.dim() - 2))).expand_as(z)


def _spread(mod, a, w, share):
    """Each output's bias relevance ``share`` (shaped like the output) spread uniformly over the non-zero
    inputs of its receptive field (inputs at zero carry no signal; a window of zeros keeps nothing, as
    the z-rule would). Convolutions use a one-channel box filter: every output sees all input channels."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    active = (a != 0).to(a.dtype)
    if isinstance(mod, nn.Linear):
        n = active.sum(-1, keepdim=True)
        return active * torch.where(n > 0, share.sum(-1, keepdim=True) / n.clamp(min=1), 0.0)
    if not isinstance(mod, nn.Conv2d):  # element-wise (BatchNorm): each output has one input
        return active * share
    if mod.groups != 1:
        raise InputError("LRP bias spreading supports ungrouped convolutions only")
    box = torch.ones(1, 1, *mod.kernel_size, dtype=a.dtype, device=a.device)
    conv = lambda t: F.conv2d(t, box, None, mod.stride, mod.padding, mod.dilation)
    with torch.no_grad():
        n = conv(active.sum(1, keepdim=True))
    c = torch.where(n > 0, share.sum(1, keepdim=True) / n.clamp(min=1), 0.0)
    x = torch.zeros_like(a[:, :1]).requires_grad_(True)
    (g,) = torch.autograd.grad(conv(x), x, c)
    return active * g


def _lrp_linear(mod, w, b, a, r, rule: str, eps: float, gamma: float):
    """Relevance ``r`` at a linear layer's output -> relevance at its input ``a`` (same shape as ``a``).

    Denominators include the bias (the real pre-activation, stable); the bias' share of each output's
    relevance is spread uniformly over its receptive field, so the layer conserves relevance (up to the
    epsilon stabiliser)."""
    import torch

    a = a.detach()
    if rule in ("epsilon", "gamma"):
        if rule == "gamma":
            w, b = w + gamma * w.clamp(min=0), b + gamma * b.clamp(min=0)
        eps = eps if rule == "epsilon" else 1e-9
        x = a.clone().requires_grad_(True)
        z = _apply(mod, x, w, b)
        s = r / _stab(z.detach(), eps)
        (g,) = torch.autograd.grad(z, x, s)
        return a * g + _spread(mod, a, w, s * _bias_map(mod, b, z))
    alpha, beta = {"a1b0": (1.0, 0.0), "a2b1": (2.0, 1.0)}[rule]
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    bp, bn = b.clamp(min=0), b.clamp(max=0)
    ap = a.clamp(min=0).requires_grad_(True)
    an = a.clamp(max=0).requires_grad_(True)
    zero = torch.zeros_like(b)
    zp = _apply(mod, ap, wp, bp) + _apply(mod, an, wn, zero)  # positive contributions, >= 0
    zn = _apply(mod, ap, wn, bn) + _apply(mod, an, wp, zero)  # negative contributions, <= 0
    has_p, has_n = (zp > 1e-9).detach(), (zn < -1e-9).detach()
    # both parts: (alpha, beta); only positive: (1, 0); only negative: (0, -1) -> conserves relevance
    a_eff = torch.where(has_p, torch.where(has_n, alpha, 1.0), 0.0)
    b_eff = torch.where(has_n, torch.where(has_p, beta, -1.0), 0.0)
    sp = r * a_eff / zp.detach().clamp(min=1e-9)
    sn = -r * b_eff / zn.detach().clamp(max=-1e-9)
    gp, gn = torch.autograd.grad((zp * sp).sum() + (zn * sn).sum(), (ap, an))
    bias_share = sp * _bias_map(mod, bp, zp) + sn * _bias_map(mod, bn, zn)
    return ap.detach() * gp + an.detach() * gn + _spread(mod, a, w, bias_share)


def lrp_relevance(model, x, target: int, rule: str = "epsilon", eps: float = 1e-2, gamma: float = 0.25):
    """Input relevance ``(C, H, W)`` of logit ``target`` and the logits ``(K,)``.

    rule: ``epsilon`` (z + eps sign z in the denominators), ``gamma`` (positive weights and bias boosted
    by ``gamma``), ``a1b0`` / ``a2b1`` (positive and negative contributions split, alpha - beta = 1).
    The model must expose ``lrp_sequence()`` (or be an ``nn.Sequential``) and be in eval mode.
    """
    import torch

    seq = model.lrp_sequence() if hasattr(model, "lrp_sequence") else list(model)
    steps = _canonise(seq)
    acts = []
    with torch.no_grad():
        a = x
        for _, mods, _w, _b in steps:
            acts.append(a)
            for m in mods:
                a = m(a)
    logits = a[0]
    r = torch.zeros_like(a)
    r[0, target] = a[0, target]
    for (kind, mods, w, b), a_in in zip(reversed(steps), reversed(acts)):
        if kind == "pass":
            r = r.reshape(a_in.shape)
        elif kind == "pool":
            x_in = a_in.detach().requires_grad_(True)
            z = mods[0](x_in)
            (g,) = torch.autograd.grad(z, x_in, r / _stab(z.detach(), 1e-9))
            r = a_in * g
        else:
            r = _lrp_linear(mods[0], w.detach(), b.detach(), a_in, r, rule, eps, gamma)
    return r[0], logits


def lrp(model, x, targets, rule: str = "epsilon", **_):
    """LRP heat maps ``(n, H, W)`` (relevance summed over input channels) and logits ``(K,)``."""
    import torch

    maps, logits = [], None
    for t in targets:
        r, logits = lrp_relevance(model, x, int(t), rule)
        maps.append(r.sum(0))
    return torch.stack(maps), logits
