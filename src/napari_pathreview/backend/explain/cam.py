"""CAM and Grad-CAM heat maps of a CNN classifier.

- ``cam``: ``sum_c w_kc f_c(y, x)`` over the last feature maps (GAP head weights ``w``), upsampled
  bilinearly; units: logit per feature cell (mean over cells + bias = the logit).
- ``gradcam``: ``relu(sum_c alpha_c A_c)`` with ``alpha_c`` the spatial mean of ``d logit / d A_c`` at
  any conv layer (``layer``: a module name such as ``"features.9"``; default: the last block).
"""

from __future__ import annotations

from ..errors import InputError


def _up(maps, size):
    import torch.nn.functional as F

    return F.interpolate(maps[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def cam_lowres(model, x, targets):
    """CAM at the feature grid: ``(n, h, w)`` = ``W[targets] @ features``; also logits ``(K,)``."""
    import torch

    with torch.no_grad():
        f = model.forward_features(x)
        w, _ = model.cam_weights()
        logits = model.logits_from_features(f)[0]
        return torch.einsum("kc,chw->khw", w[list(targets)], f[0]), logits


def cam(model, x, targets, **_):
    """Class activation maps ``(n, H, W)`` at x's grid, and logits ``(K,)``."""
    maps, logits = cam_lowres(model, x, targets)
    return _up(maps, x.shape[-2:]), logits


def default_gradcam_layer(model) -> str:
    """Name of the last feature module that is not a pooling (the last conv block's output)."""
    from torch import nn

    names = [
        n
        for n, m in model.named_modules()
        if n.startswith("features.") and n.count(".") == 1 and not isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))
    ]
    if not names:
        raise InputError("Grad-CAM: the model has no feature layers; name one with layer=")
    return names[-1]


def gradcam(model, x, targets, layer: str | None = None, **_):
    """Grad-CAM ``(n, H, W)`` (>= 0) at x's grid for a conv layer named ``layer``; logits ``(K,)``."""
    import torch

    modules = dict(model.named_modules())
    name = layer or default_gradcam_layer(model)
    if name not in modules:
        raise InputError(f"Grad-CAM: no layer '{name}' in the model; layers: {', '.join(list(modules)[1:12])}…")
    store = {}
    handle = modules[name].register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            logits = model(x)[0]
            a = store["a"]
            maps = []
            for t in targets:
                (g,) = torch.autograd.grad(logits[t], a, retain_graph=True)
                maps.append(torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1))[0])
    finally:
        handle.remove()
    return _up(torch.stack(maps).detach(), x.shape[-2:]), logits.detach()
