"""Heat maps of classifier decisions: CAM, Grad-CAM, LRP (epsilon, gamma, alpha-beta) and ViT attention rollout.

Every method takes one normalised input ``x`` ``(1, C, H, W)`` (model scale) and class indices
``targets`` and returns ``(maps (n_targets, H, W) float tensor at x's pixel grid, logits (K,))``:

- ``cam``: ``sum_c w_kc f_c(y, x)`` over the last feature maps (GAP head weights ``w``), upsampled
  bilinearly; units: logit per feature cell (mean over cells + bias = the logit).
- ``gradcam``: ``relu(sum_c alpha_c A_c)`` with ``alpha_c`` the spatial mean of ``d logit / d A_c`` at
  any conv layer (``layer``: a module name such as ``"features.9"``; default: the last block).
- ``lrp-*``: layer-wise relevance propagation of the target logit down to the input pixels (summed
  over channels). BatchNorm after a conv is merged into it (canonisation); each bias' share of the
  relevance is spread uniformly over its receptive field, so relevance is conserved: the input relevance
  sums to the logit (up to the epsilon stabiliser's absorption).
- ``rollout``: class-agnostic attention rollout of a ViT (same map for every target).

:func:`explain_image` runs a method over an image or slide: resampled to the model's scale, explained
tile by tile when larger than the model's input, blended with a Hann window, resized back to the input's
pixel grid. :func:`faithfulness` scores a map by deletion/insertion curves against random maps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, ProgressFn, check_cancel, report

METHODS = ("cam", "gradcam", "lrp-epsilon", "lrp-gamma", "lrp-a1b0", "lrp-a2b1", "rollout")
LRP_RULES = {"lrp-epsilon": "epsilon", "lrp-gamma": "gamma", "lrp-a1b0": "a1b0", "lrp-a2b1": "a2b1"}
MAX_PIXELS = 1 << 26  # maps larger than this many input pixels stay at the model grid (see downsample)


def methods_for(card) -> tuple:
    """Methods a model supports: rollout for a ViT; CAM, Grad-CAM and LRP for a linear-head CNN."""
    if card.task == "vit":
        return ("rollout",)
    if card.config.get("head", "linear") != "linear":
        return ("gradcam",)
    return METHODS[:-1]


# ---------------------------------------------------------------- CAM and Grad-CAM


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


# ---------------------------------------------------------------- LRP


def _canonise(seq: list) -> list:
    """Steps ``(kind, module(s), weight, bias)``: a conv followed by BatchNorm becomes one linear step
    with the BN folded into its weight and bias; standalone BN is an element-wise linear step; ReLU,
    Dropout, Flatten and squeeze-excitation gates pass relevance through; pooling uses the z-rule."""
    import torch
    from torch import nn

    from .models.classifier import SqueezeExcite

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


# ---------------------------------------------------------------- ViT attention rollout


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


# ---------------------------------------------------------------- images and slides, tile by tile


def explain_array(
    model,
    card,
    image: np.ndarray,
    method: str,
    targets,
    layer: str | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Explain a model-scale float image ``(H, W, C)`` in [0, 1] -> (maps ``(n, H, W)``, probs ``(K,)``).

    Larger than the model's input (``classification.model_tiles``): tile by tile, maps blended with a
    Hann window and tile probabilities averaged.
    """
    from .classification import model_tiles, normalise, pad_for_model, probabilities
    from .tiling import Stitcher

    fn = method_fn(method, card)
    dev = next(model.parameters()).device
    tiles = model_tiles(image.shape[:2], card)
    st = Stitcher((len(targets), *image.shape[:2]), "hann")
    probs = 0.0
    for i, t in enumerate(tiles):
        check_cancel(cancel)
        crop = image[t.y0 : t.y1, t.x0 : t.x1]
        x = normalise(pad_for_model(crop, card)[None], card).to(dev)
        maps, logits = fn(model, x, list(targets), layer=layer)
        st.add(t, maps[:, : crop.shape[0], : crop.shape[1]].float().cpu().numpy())
        probs = probs + probabilities(logits[None].detach(), card)[0].float().cpu().numpy()
        report(progress, i + 1, len(tiles), f"{method}: tile {i + 1} of {len(tiles)}")
    return st.result(), probs / len(tiles)


@dataclass
class ExplainResult:
    """Heat maps of one image.

    maps: ``(n, H, W)`` float32, one per explained class, on the input's level-0 pixel grid divided by
    ``downsample`` (1 unless the input exceeds ``MAX_PIXELS``); probs ``(K,)`` for all ``classes``;
    targets: names of the explained classes; mpp: µm per input pixel used; units per method (see module).
    """

    maps: np.ndarray
    probs: np.ndarray
    classes: list
    targets: list
    method: str
    model: str
    mpp: float | None
    downsample: float = 1.0
    name: str = "image"
    extra: dict = field(default_factory=dict)


def _targets(classes, card) -> list[int]:
    names = list(card.classes)
    if classes is None or classes == "all" or (isinstance(classes, (list, tuple)) and not classes):
        return list(range(len(names)))
    out = []
    for c in [classes] if isinstance(classes, (str, int)) else classes:
        if isinstance(c, (int, np.integer)) and 0 <= c < len(names):
            out.append(int(c))
        elif c in names:
            out.append(names.index(c))
        else:
            raise InputError(f"unknown class '{c}' for {card.name}; classes: {', '.join(names)}")
    return out


def explain_image(
    image,
    model,
    card,
    method: str = "gradcam",
    classes=None,
    mpp: float | None = None,
    layer: str | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
) -> ExplainResult:
    """Probabilities + heat maps of an ``(H, W, C)`` array or a Slide, maps at the input's pixel grid."""
    from skimage.transform import resize

    from .classification import input_mpp, to_model_scale
    from .slides import Slide

    targets = _targets(classes, card)
    method_fn(method, card)
    if isinstance(image, Slide):
        mpp = mpp or image.mpp
        shape = image.shape
    else:
        shape = np.shape(image)[:2]
    img = to_model_scale(image, card, mpp)
    maps, probs = explain_array(model, card, img, method, targets, layer, progress, cancel)
    down = 1.0
    if shape[0] * shape[1] > MAX_PIXELS:
        down = shape[0] / img.shape[0]
    else:
        maps = resize(maps, (len(targets), *shape), order=1, preserve_range=True, anti_aliasing=False)
    return ExplainResult(
        np.asarray(maps, np.float32),
        probs.astype(np.float32),
        list(card.classes),
        [card.classes[t] for t in targets],
        method,
        card.name,
        input_mpp(card, mpp),
        down,
        name,
    )


# ---------------------------------------------------------------- faithfulness


def _blocks(heat: np.ndarray, block: int) -> np.ndarray:
    from .tiling import pad_to

    h, w = heat.shape
    p = pad_to(heat, -(-h // block) * block, -(-w // block) * block, mode="edge")[0]
    return p.reshape(p.shape[0] // block, block, p.shape[1] // block, block).mean((1, 3))


def deletion_curves(
    model, card, image: np.ndarray, heat: np.ndarray, target: int, steps: int = 10, block: int = 8, blur: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Probability of ``target`` as the most relevant ``block`` x ``block`` cells of a model-scale image
    ``(H, W, C)`` are replaced by a blurred copy (deletion) or revealed on it (insertion).

    heat ``(H, W)``: any map (higher = more relevant). Returns (deletion, insertion), each ``(steps + 1,)``
    at fractions ``0, 1/steps, ... 1`` of the cells.
    """
    from scipy.ndimage import gaussian_filter

    from .classification import predict_probs

    h, w = heat.shape
    cells = _blocks(np.asarray(heat, np.float64), block)
    order = np.argsort(-cells.ravel(), kind="stable")
    base = gaussian_filter(image, (blur, blur, 0))
    masks = []
    for i in range(steps + 1):
        m = np.zeros(cells.size, np.float32)
        m[order[: round(i / steps * cells.size)]] = 1
        masks.append(np.kron(m.reshape(cells.shape), np.ones((block, block), np.float32))[:h, :w, None])
    masks = np.stack(masks)
    dele = predict_probs(model, card, image * (1 - masks) + base * masks)[:, target]
    ins = predict_probs(model, card, base * (1 - masks) + image * masks)[:, target]
    return dele, ins


def curve_auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoid rule)."""
    c = np.asarray(curve, np.float64)
    return float(((c[1:] + c[:-1]) / 2).mean())


def faithfulness(
    model,
    card,
    image: np.ndarray,
    target: int,
    methods,
    seed: int = 0,
    n_random: int = 2,
    block: int = 8,
    steps: int = 10,
) -> dict:
    """Deletion / insertion AUCs of each method's map for class ``target`` on a model-scale image, and of
    ``n_random`` random maps (same cells): ``{method: {deletion_auc, random_deletion_auc, insertion_auc,
    random_insertion_auc}}``. A faithful map has a lower deletion and a higher insertion AUC than random.
    """
    rng = np.random.default_rng(seed)
    rd, ri = [], []
    for _ in range(n_random):
        d, i = deletion_curves(model, card, image, rng.random(image.shape[:2]), target, steps, block)
        rd.append(curve_auc(d))
        ri.append(curve_auc(i))
    out = {}
    for m in methods:
        heat = explain_array(model, card, image, m, [target])[0][0]
        d, i = deletion_curves(model, card, image, heat, target, steps, block)
        out[m] = {
            "deletion_auc": curve_auc(d),
            "random_deletion_auc": float(np.mean(rd)),
            "insertion_auc": curve_auc(i),
            "random_insertion_auc": float(np.mean(ri)),
        }
    return out


# ---------------------------------------------------------------- files


def display_range(heat: np.ndarray) -> float:
    """Upper display limit of a map: the 99th percentile of its positive values (1 when none).

    Pixel-level LRP maps are heavy-tailed, so a lower percentile and a gamma of 0.5 (see
    :func:`heat_rgb`; the widget sets the layer's gamma) keep the weaker evidence visible."""
    pos = heat[heat > 0]
    hi = float(np.percentile(pos, 99)) if pos.size else 1.0
    return hi if hi > 0 else 1.0


def heat_rgb(heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A map ``(H, W)`` -> (RGB uint8 ``(H, W, 3)`` inferno-like colours, alpha float ``(H, W)`` in [0, 1]).

    Scaled from 0 to :func:`display_range` with gamma 0.5 (negative evidence is not shown).
    """
    anchors = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)
    v = np.sqrt(np.clip(heat / display_range(heat), 0, 1))
    idx = v * (len(anchors) - 1)
    lo = np.floor(idx).astype(int).clip(0, len(anchors) - 2)
    f = (idx - lo)[..., None]
    rgb = anchors[lo] * (1 - f) + anchors[lo + 1] * f
    return rgb.astype(np.uint8), v


def write_explanation(result: ExplainResult, slide, out) -> list[Path]:
    """Write ``OUT/<name>.<method>.<class>.tif`` (float32 map), ``.png`` (overlay on the image) and
    ``OUT/<name>.<method>.json`` (probabilities, classes, mpp, downsample, files)."""
    import imageio.v3 as iio
    import tifffile
    from skimage.transform import resize

    from .atomic import atomic_path
    from .slides import to_rgb_uint8

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(slide.name if hasattr(slide, "name") else result.name).stem.replace(".ome", "")
    rgb = to_rgb_uint8(np.asarray(slide.levels[0]) if hasattr(slide, "levels") else slide, stem)
    written = []
    for k, cls in enumerate(result.targets):
        heat = result.maps[k]
        base = rgb if rgb.shape[:2] == heat.shape else resize(rgb, heat.shape, preserve_range=True).astype(np.uint8)
        colour, alpha = heat_rgb(heat)
        a = 0.6 * alpha[..., None]
        overlay = (base * (1 - a) + colour * a).astype(np.uint8)
        tif, png = (out / f"{stem}.{result.method}.{cls}{ext}" for ext in (".tif", ".png"))
        with atomic_path(tif) as tmp:
            tifffile.imwrite(tmp, heat.astype(np.float32))
        with atomic_path(png) as tmp:
            iio.imwrite(tmp, overlay, extension=".png")
        written += [tif, png]
    meta = {
        "image": result.name,
        "model": result.model,
        "method": result.method,
        "mpp": result.mpp,
        "downsample": result.downsample,
        "classes": result.classes,
        "probabilities": {c: float(p) for c, p in zip(result.classes, result.probs)},
        "explained": result.targets,
        "files": [w.name for w in written],
    }
    j = out / f"{stem}.{result.method}.json"
    with atomic_path(j) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))
    return written + [j]
