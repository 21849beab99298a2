"""Cell-relationship enhancement: correct detected cells' classes from their neighbours.

Training (:func:`train_enhancer`), the default "class-only" mode of the original work:

1. run the detector once on every training image and cache its points, base class probabilities and
   feature vectors (on disk, keyed by the detector weights and the data);
2. match the detected points to the annotations **once** (Hungarian or greedy, within 3.3 µm = 6 px);
3. train the enhancer to predict the matched annotation's class (cross-entropy; unmatched detections and
   detections matched to class-less nuclei are ignored), with Gaussian noise on features and positions.

Second mode (``mode="bipartite"``): the model also predicts a position offset and the loss matches
predictions to annotations inside the loop, ``L = Σ CE + λ·‖y − ŷ‖₁`` on coordinates normalised by the
image size, as in DETR / the original work.

The detector was trained on the same training images, so its probabilities there are more confident
than on new images. Two counter-measures: (a) the enhancer is **selected** on the detector's held-out
``tune_images`` (listed in its card; the detector never trained on them), never on the validation
split; (b) during training the base probabilities are softened with a random temperature, noised, and
per cell replaced by uniform probabilities (``prob_dropout``), so the model cannot simply copy them.

Evaluation (:func:`evaluate_enhancer`) scores the base classes and the enhanced classes of the *same*
detected points against the annotations, with the detector's metric (see ``metrics.PointScores``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import InputError, ProgressFn, check_cancel, report
from .points import CellPoints

MATCH_RADIUS_UM = 3.3


# ---------------------------------------------------------------- inference


@dataclass
class EnhanceResult:
    """Base and enhanced cells (same points, same order), which changed class, and the attention
    (:class:`~.models.enhancer.Attention` edges, or None)."""

    base: CellPoints
    enhanced: CellPoints
    changed: np.ndarray
    attention: object = None


def _positions_um(points: CellPoints, card) -> np.ndarray:
    mpp = points.mpp or card.mpp
    if not mpp:
        raise InputError("points have no microns per pixel; give --mpp / set the layer's mpp")
    return np.asarray(points.yx, np.float64) * float(mpp)


def enhance_points(points: CellPoints, model, card, return_attention: bool = False, chunk: int = 2048) -> EnhanceResult:
    """Run the enhancer on detected cells (with feature vectors) -> :class:`EnhanceResult`."""
    import torch

    if points.features is None:
        raise InputError(
            "these cells carry no detector feature vectors; detect them with the detector "
            f"'{card.params.get('detector', '?')}' (or give the image so they can be sampled)"
        )
    if list(points.classes) != list(card.classes):
        raise InputError(f"cells have classes {list(points.classes)}, the enhancer expects {list(card.classes)}")
    if points.features.shape[1] != model.cfg.feature_dim:
        raise InputError(
            f"cells carry {points.features.shape[1]}-d features, the enhancer expects "
            f"{model.cfg.feature_dim}-d (features of detector '{card.params.get('detector')}')"
        )
    if len(points) == 0:
        return EnhanceResult(points, points.select(np.zeros(0, bool)), np.zeros(0, bool), None)
    from .memory import enhance_bytes, require_memory

    cfg = model.cfg
    require_memory(
        enhance_bytes(len(points), cfg.width, cfg.heads, cfg.layers, cfg.max_neighbours, return_attention),
        f"enhancing {len(points)} cells" + (" with attention" if return_attention else ""),
        "enhance a region at a time (fewer cells)" + (", or without attention lines" if return_attention else ""),
    )
    from .precision import autocast

    with torch.inference_mode(), autocast(next(model.parameters()).device):
        out = model(
            points.features, points.probs, _positions_um(points, card), chunk=chunk, return_attention=return_attention
        )
        logits = out["logits"].float().cpu() + torch.tensor(card.params.get("class_bias") or [0.0] * len(card.classes))
        probs = torch.softmax(logits, 1).numpy().astype(np.float32)
    enhanced = replace(
        points,
        labels=probs.argmax(1).astype(np.int64),
        probs=probs,
        source=f"{points.source}+{card.name}" if points.source else card.name,
    )
    return EnhanceResult(points, enhanced, enhanced.labels != points.labels, out.get("attention"))


def features_at_points(
    image, yx: np.ndarray, model, card, mpp: float | None, progress=None, cancel=None, max_pixels: float = 64e6
) -> tuple[np.ndarray, np.ndarray]:
    """Detector feature vectors (N, F) and class probabilities (N, K) sampled at given points.

    For Points layers that do not carry the features (hand-made or edited): runs the detector's maps
    over the (H, W, 3) image in tiles at the model's scale and samples them at ``yx`` (input pixels).
    """
    from skimage.transform import resize

    from .detection import _check_mpp, normalise, predict_maps, stain_normalised
    from .points import sample_bilinear
    from .slides import Slide, check_model_scale, to_rgb_uint8
    from .tiling import TileSpec, predict_tiled

    if isinstance(image, Slide):
        mpp = image.mpp if mpp is None else mpp
        image = image.levels[0]
    mpp = _check_mpp(mpp if mpp is not None else card.mpp, "image")
    scale = check_model_scale(mpp, card.mpp, "image")
    h, w = image.shape[:2]
    if h * w * scale * scale > max_pixels:
        raise InputError(
            f"image of {h}x{w} px is too large to sample features at arbitrary points; "
            "run 'Detect cells' first (its points keep their feature vectors)"
        )
    img = stain_normalised(to_rgb_uint8(np.asarray(image)), card)
    if abs(scale - 1) > 0.02:
        img = resize(
            img,
            (max(1, round(h * scale)), max(1, round(w * scale))),
            order=1,
            anti_aliasing=scale < 1,
            preserve_range=True,
        ).astype(np.uint8)
    nf, nk = model.cfg.feature_dim, len(card.classes)

    def predict(batch):
        outs = []
        for b in batch:
            m = predict_maps(model, normalise(b.astype(np.uint8), card))
            outs.append(np.concatenate([m["features"], m["probs"]]))
        return np.stack(outs)

    maps = predict_tiled(img, predict, TileSpec(512, 64), nf + nk, progress=progress, cancel=cancel)
    at = (np.asarray(yx, np.float32) + 0.5) * np.array([img.shape[0] / h, img.shape[1] / w], np.float32) - 0.5
    s = sample_bilinear(maps, at)
    probs = s[:, nf:] / np.maximum(s[:, nf:].sum(1, keepdims=True), 1e-6)
    return s[:, :nf].astype(np.float32), probs.astype(np.float32)


# ---------------------------------------------------------------- cached detections


@dataclass
class CachedImage:
    """Detections on one annotated image: points (pixels), base probs, features, and the annotations.
    ``target``: (N,) class of the matched annotation, -1 when unmatched or class-less."""

    name: str
    yx: np.ndarray
    probs: np.ndarray
    features: np.ndarray
    scores: np.ndarray
    gt_yx: np.ndarray
    gt_labels: np.ndarray
    shape: tuple
    target: np.ndarray = field(default=None)


def _cache_file(det_card, data, split) -> Path:
    w = Path(det_card.path).with_suffix(".safetensors")
    st = w.stat() if w.exists() else None
    key = json.dumps(
        [
            str(w.resolve()),
            st.st_size if st else 0,
            st.st_mtime_ns if st else 0,
            det_card.params,
            str(Path(data).resolve()),
            split,
        ],
        sort_keys=True,
        default=str,
    )
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-pathreview" / "enhancer"
    return root / f"{det_card.name}-{split}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"


def cache_detections(
    data,
    split,
    det_model,
    det_card,
    mpp: float | None = None,
    use_disk: bool = True,
    progress: ProgressFn | None = None,
    cancel=None,
) -> tuple[list[CachedImage], list[str]]:
    """Detect on every image of a points dataset split (disk-cached) -> ([CachedImage], classes).

    ``data``: a points dataset folder, or a list of ``PointsSample`` at ``mpp`` whose labels index the
    detector's classes (annotations from the viewer; ``split`` is ignored and nothing is cached on disk).
    """
    from .datasets import load_points_dataset
    from .detection import CRCHISTO_MPP, detect

    if isinstance(data, (str, Path)):
        samples, classes = load_points_dataset(data, split, classes=list(det_card.classes))
    else:
        samples, classes, use_disk = list(data), list(det_card.classes), False
    mpp = mpp or CRCHISTO_MPP
    path = _cache_file(det_card, data, split) if use_disk else None
    if use_disk and path.exists():
        z = np.load(path)
        names = list(z["names"])
        if names == [s.name for s in samples]:
            return [
                CachedImage(
                    s.name,
                    z[f"{i}_yx"],
                    z[f"{i}_probs"],
                    z[f"{i}_features"],
                    z[f"{i}_scores"],
                    s.yx,
                    s.labels,
                    s.image.shape[:2],
                )
                for i, s in enumerate(samples)
            ], classes
    out = []
    for i, s in enumerate(samples):
        check_cancel(cancel)
        p = detect(s.image, det_model, det_card, mpp=mpp, name=s.name)
        out.append(CachedImage(s.name, p.yx, p.probs, p.features, p.scores, s.yx, s.labels, s.image.shape[:2]))
        report(progress, i + 1, len(samples), f"detect {s.name}: {len(p)} cells")
    if use_disk:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"names": np.array([c.name for c in out])}
        for i, c in enumerate(out):
            arrays.update(
                {f"{i}_yx": c.yx, f"{i}_probs": c.probs, f"{i}_features": c.features, f"{i}_scores": c.scores}
            )
        tmp = path.with_name(path.name + ".partial.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    return out, classes


def assign_targets(cache: list[CachedImage], radius_px: float, method: str = "hungarian") -> None:
    """Match detections to annotations once; set each image's ``target`` (class or -1)."""
    from .matching import match_points

    for c in cache:
        m = match_points(c.yx, c.gt_yx, radius_px, method)
        t = np.full(len(c.yx), -1, np.int64)
        t[m.pred_idx] = c.gt_labels[m.gt_idx]
        c.target = t


def _tune_names(det_card, train_names: list[str]) -> list[str]:
    """The detector's held-out tune images (card), else its documented rule (seeded permutation)."""
    names = (det_card.training or {}).get("tune_images")
    if names:
        return [n for n in names if n in train_names]
    seed = int((det_card.training or {}).get("seed", 0))
    n = len(train_names)
    n_tune = min(8, max(1, n // 5)) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    return [train_names[i] for i in order[:n_tune]]


# ---------------------------------------------------------------- training


@dataclass
class EnhancerTrainOptions:
    """Training options (see the module docstring). Noise scales: ``feature_noise`` in units of each
    feature's standard deviation, ``position_noise_um`` in µm; ``prob_temperature`` is the largest random
    temperature applied to the base probabilities; ``prob_dropout`` the share of cells whose base
    probabilities are replaced by uniform ones."""

    epochs: int = 40
    lr: float = 1e-3
    batch_images: int = 4
    schedule: str = "cosine"  # cosine | step | cosine-restarts
    mode: str = "class"  # class | bipartite
    matching: str = "hungarian"  # hungarian | greedy
    aux_loss: bool = False
    l1_weight: float = 5.0
    feature_noise: float = 0.3
    position_noise_um: float = 1.5
    prob_temperature: float = 3.0
    prob_noise: float = 0.5
    prob_dropout: float = 0.3
    class_weight_power: float = 0.5
    tune_bias: bool = False


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
    """CE + λ·L1 with Hungarian/greedy matching of predicted to annotated points inside the loop."""
    import torch
    import torch.nn.functional as F
    from scipy.optimize import linear_sum_assignment

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
        far = (
            (
                torch.cdist(pred[sel].detach(), torch.as_tensor(c.gt_yx * mpp, dtype=torch.float32, device=dev))
                > radius_um
            )
            .cpu()
            .numpy()
        )
        cost[far] = 1e6
        if opt.matching == "greedy":
            order = np.argsort(cost, axis=None)
            used_r, used_c, r, cc = set(), set(), [], []
            for flat in order:
                i, j = divmod(int(flat), cost.shape[1])
                if cost[i, j] >= 1e6:
                    break
                if i not in used_r and j not in used_c:
                    used_r.add(i), used_c.add(j), r.append(i), cc.append(j)
            r, cc = np.array(r, int), np.array(cc, int)
        else:
            r, cc = linear_sum_assignment(cost)
            ok = cost[r, cc] < 1e6
            r, cc = r[ok], cc[ok]
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


def predict_cached(model, cache: list[CachedImage], mpp: float, class_bias=None) -> list[np.ndarray]:
    """Enhanced labels for each cached image (no noise)."""
    import torch

    out = []
    with torch.inference_mode():
        for c in cache:
            if len(c.yx) == 0:
                out.append(np.zeros(0, np.int64))
                continue
            lg = model(c.features, c.probs, c.yx * mpp)["logits"].float().cpu().numpy()
            if class_bias is not None:
                lg = lg + np.asarray(class_bias)
            out.append(lg.argmax(1))
    return out


def score_cached(
    cache: list[CachedImage], labels: list[np.ndarray] | None, classes, radius_px: float, radius_um: float
) -> dict:
    """PointScores dict of the cached detections with ``labels`` (base classes when None)."""
    from .metrics import PointScores

    s = PointScores(classes, radius_px)
    for i, c in enumerate(cache):
        s.add(c.yx, c.probs.argmax(1) if labels is None else labels[i], c.gt_yx, c.gt_labels)
    return s.as_dict(radius_um)


def _logits_cached(model, cache, mpp):
    import torch

    with torch.inference_mode():
        return [
            model(c.features, c.probs, c.yx * mpp)["logits"].float().cpu().numpy()
            if len(c.yx)
            else np.zeros((0, c.probs.shape[1]), np.float32)
            for c in cache
        ]


def search_class_bias(
    logits: list[np.ndarray],
    cache,
    classes,
    radius_px,
    radius_um,
    steps=(-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0),
    rounds: int = 2,
) -> np.ndarray:
    """Per-class logit offsets that maximise mF1 on held-out images (coordinate ascent)."""
    k = len(classes)
    bias = np.zeros(k)
    best = score_cached(cache, [lg.argmax(1) for lg in logits], classes, radius_px, radius_um)["mF1"]
    for _ in range(rounds):
        for j in range(k):
            for s in steps:
                b = bias.copy()
                b[j] += s
                if s == 0:
                    continue
                m = score_cached(cache, [(lg + b).argmax(1) for lg in logits], classes, radius_px, radius_um)["mF1"]
                if m > best + 1e-9:
                    best, bias = m, b
    return bias


def fit_enhancer(
    train_cache,
    tune_cache,
    classes,
    cfg,
    opt: EnhancerTrainOptions,
    mpp,
    seed=0,
    device=None,
    radius_um=MATCH_RADIUS_UM,
    progress=None,
    cancel=None,
    on_epoch=None,
    init_state=None,
):
    """Train one enhancer on cached detections; select the epoch on ``tune_cache`` (mF1).
    ``init_state``: a state dict of ``cfg``'s architecture to fine-tune from (else from scratch).
    -> (model, FitResult, {"base": tune dict, "enhanced": tune dict})."""
    import torch

    from .models.enhancer import build_enhancer
    from .train import TrainConfig, fit, seed_everything
    from .weights import choose_device

    rng = seed_everything(seed)
    dev = choose_device(device)
    model = build_enhancer(cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(dev)
    radius_px = radius_um / mpp
    cw = torch.tensor(
        _class_weights(train_cache, len(classes), opt.class_weight_power), dtype=torch.float32, device=dev
    )
    feat_std = np.concatenate([c.features for c in train_cache]).std(0).astype(np.float32) + 1e-6
    bs = max(1, opt.batch_images)
    steps = max(1, int(np.ceil(len(train_cache) / bs)))
    tcfg = TrainConfig(epochs=opt.epochs, lr=opt.lr, schedule=opt.schedule, seed=seed, batch_size=bs, device=str(dev))

    def batches(epoch):
        order = rng.permutation(len(train_cache))
        for s in range(0, len(order), bs):
            yield _batch([train_cache[i] for i in order[s : s + bs]], rng, opt, feat_std, mpp)

    def validate(m):
        r = score_cached(tune_cache, predict_cached(m, tune_cache, mpp), classes, radius_px, radius_um)
        return {"score": r["mF1"], "mF1": r["mF1"], "weighted_f1": r["weighted_f1"]}

    res = fit(
        model,
        lambda m, b: _loss(m, b, cw, opt, mpp, radius_um, cfg),
        batches,
        validate,
        tcfg,
        steps,
        progress,
        cancel,
        on_epoch,
    )
    model.load_state_dict(res.best_state)
    model.eval()
    tune = {
        "base": score_cached(tune_cache, None, classes, radius_px, radius_um),
        "enhanced": score_cached(tune_cache, predict_cached(model, tune_cache, mpp), classes, radius_px, radius_um),
    }
    return model, res, tune


def _split_cache(data, det_model, det_card, mpp, progress, cancel, matching, radius_um):
    cache, classes = cache_detections(data, "train", det_model, det_card, mpp, progress=progress, cancel=cancel)
    assign_targets(cache, radius_um / mpp, matching)
    tune_names = set(_tune_names(det_card, [c.name for c in cache]))
    train_cache = [c for c in cache if c.name not in tune_names]
    tune_cache = [c for c in cache if c.name in tune_names]
    if not tune_cache and not isinstance(data, (str, Path)):  # a few viewer annotations: select on them
        tune_cache = train_cache
    if not tune_cache:
        raise InputError(f"{data}: no held-out training images to select the enhancer on")
    return train_cache, tune_cache, classes


def train_enhancer(
    data,
    out: str | Path,
    detector: str | None = None,
    seed: int = 0,
    device=None,
    options: EnhancerTrainOptions | None = None,
    config: dict | None = None,
    mpp: float | None = None,
    radius_um: float = MATCH_RADIUS_UM,
    progress: ProgressFn | None = None,
    cancel=None,
    command: str = "",
    on_epoch=None,
    init: str | Path | None = None,
):
    """Train the enhancer on a points dataset for a given detector and save weights + card to ``out``.

    Training images: the ``train`` split minus the detector's tune images; selection: those tune images
    (mF1 of the enhanced classes); the ``validation`` split is never used here.
    ``data``: a points dataset folder, or a list of ``PointsSample`` at ``mpp`` (annotations from the
    viewer, labels indexing the detector's classes); when none of them is a detector tune image, the
    epoch is selected on the training images themselves. ``init``: an enhancer (name or path) to
    fine-tune from: its architecture, and its detector unless ``detector`` is given.
    """
    from .detection import CRCHISTO_MPP
    from .models.enhancer import EnhancerConfig
    from .weights import ModelCard, load_model, reference, save_model

    opt = options or EnhancerTrainOptions()
    base = None
    if init is not None:
        base_model, base = load_model(init, "enhancer", "cpu")
        detector = detector or base.params.get("detector")
    det_model, det_card = load_model(detector, "detector", device)
    mpp = mpp or CRCHISTO_MPP
    t0 = time.time()
    train_cache, tune_cache, classes = _split_cache(
        data, det_model, det_card, mpp, progress, cancel, opt.matching, radius_um
    )
    t_cache = time.time() - t0
    cfg = EnhancerConfig.from_dict(
        {
            "classes": tuple(classes),
            "feature_dim": train_cache[0].features.shape[1],
            "position_head": opt.mode == "bipartite",
            **(config or {}),
        }
    )
    if base is not None:
        cfg = EnhancerConfig.from_dict(base.config)
        if list(base.classes) != list(classes) or cfg.feature_dim != train_cache[0].features.shape[1]:
            raise InputError(
                f"enhancer '{base.name}' does not fit detector '{det_card.name}' (classes "
                f"{base.classes} vs {classes}, or another feature size)"
            )
    model, res, tune = fit_enhancer(
        train_cache,
        tune_cache,
        classes,
        cfg,
        opt,
        mpp,
        seed,
        device,
        radius_um,
        progress,
        cancel,
        on_epoch,
        None if base is None else base_model.state_dict(),
    )
    bias = None
    if opt.tune_bias:
        bias = search_class_bias(
            _logits_cached(model, tune_cache, mpp), tune_cache, classes, radius_um / mpp, radius_um
        )
        tune["enhanced_bias"] = score_cached(
            tune_cache, predict_cached(model, tune_cache, mpp, bias), classes, radius_um / mpp, radius_um
        )
    card = ModelCard(
        name=Path(out).stem,
        task="enhancer",
        config=cfg.to_dict(),
        classes=list(classes),
        mpp=det_card.mpp,
        colors=dict(det_card.colors),
        params={
            "detector": reference(detector or det_card.name, "detector"),
            "match_radius_um": radius_um,
            "class_bias": None if bias is None else [float(b) for b in bias],
        },
        licence="research use only (trained on CRCHisto)",
    )
    data_desc = str(data) if isinstance(data, (str, Path)) else "in-memory: " + ", ".join(s.name for s in data)[:300]
    card.training = {
        "command": command,
        "data": data_desc,
        "seed": seed,
        "detector": card.params["detector"],
        "init": None if init is None else str(init),
        "options": opt.__dict__.copy(),
        "fit_images": len(train_cache),
        "tune_images": [c.name for c in tune_cache],
        "best_epoch": res.best_epoch,
        "seconds": round(time.time() - t0, 1),
        "cache_seconds": round(t_cache, 1),
        "device": str(device or "cpu"),
        "history": res.history,
    }
    card.metrics = {"tune": {k: {"mF1": v["mF1"], "weighted_f1": v["weighted_f1"]} for k, v in tune.items()}}
    save_model(model, card, out)
    return model, card


# ---------------------------------------------------------------- evaluation

ABLATION = [
    {"variant": "relative, 70 µm mask (default)", "position": "relative", "radius_um": 70.0},
    {"variant": "sinusoidal, 70 µm mask", "position": "sinusoidal", "radius_um": 70.0},
    {"variant": "both, 70 µm mask", "position": "both", "radius_um": 70.0},
    {"variant": "none, 70 µm mask", "position": "none", "radius_um": 70.0},
    {"variant": "relative, 35 µm mask", "position": "relative", "radius_um": 35.0},
    {"variant": "relative, no mask (64 nearest)", "position": "relative", "radius_um": None},
]


def evaluate_enhancer(
    data,
    split: str | None = "validation",
    weights=None,
    detector=None,
    radius_um: float = MATCH_RADIUS_UM,
    mpp: float | None = None,
    device=None,
    ablation: bool = False,
    ablation_epochs: int = 15,
    tta: bool = False,
    progress=None,
    cancel=None,
) -> dict:
    """Score base vs enhanced classes of the same detected points on a split (detected with the 8-fold
    rotation / flip test-time augmentation when ``tta``).

    -> {"base": {...}, "enhanced": {...}, ...}, each with the keys of ``evaluate detector``. With
    ``ablation``, also trains short variants (``ablation_epochs``; position encodings and masks) on the
    train split (selected on the detector's tune images) and adds their scores on ``split``.
    """
    from .detection import CRCHISTO_MPP
    from .models.enhancer import EnhancerConfig
    from .weights import load_model

    model, card = load_model(weights, "enhancer", device)
    det_model, det_card = load_model(detector or card.params.get("detector"), "detector", device)
    if tta:  # part of the card's params, so also of the detections' cache key
        det_card = replace(det_card, params={**(det_card.params or {}), "tta": True})
    mpp = mpp or CRCHISTO_MPP
    cache, classes = cache_detections(data, split, det_model, det_card, mpp, progress=progress, cancel=cancel)
    if list(classes) != list(card.classes):
        raise InputError(f"{data}: classes {classes} differ from the enhancer's {card.classes}")
    rp = radius_um / mpp
    bias = card.params.get("class_bias")
    res = {
        "base": score_cached(cache, None, classes, rp, radius_um),
        "enhanced": score_cached(cache, predict_cached(model, cache, mpp, bias), classes, rp, radius_um),
        "enhancer": card.name,
        "detector": det_card.name,
        "split": split,
    }
    if ablation:
        t0 = time.time()
        train_cache, tune_cache, _ = _split_cache(data, det_model, det_card, mpp, None, cancel, "hungarian", radius_um)
        base_cfg = EnhancerConfig.from_dict(card.config).to_dict()
        opts = EnhancerTrainOptions(
            **{
                k: v
                for k, v in (card.training or {}).get("options", {}).items()
                if k in EnhancerTrainOptions.__dataclass_fields__
            }
        )
        opts = replace(opts, epochs=ablation_epochs, tune_bias=False)
        rows = []
        for i, v in enumerate(ABLATION):
            check_cancel(cancel)
            t1 = time.time()
            cfg = EnhancerConfig.from_dict({**base_cfg, "position": v["position"], "radius_um": v["radius_um"]})
            m, fr, tune = fit_enhancer(
                train_cache, tune_cache, classes, cfg, opts, mpp, 0, device, radius_um, cancel=cancel
            )
            r = score_cached(cache, predict_cached(m, cache, mpp), classes, rp, radius_um)
            rows.append(
                {
                    **v,
                    "epochs": ablation_epochs,
                    "best_epoch": fr.best_epoch,
                    "tune_mF1": tune["enhanced"]["mF1"],
                    "mF1": r["mF1"],
                    "weighted_f1": r["weighted_f1"],
                    "classes": {k: c["f1"] for k, c in r["classes"].items()},
                    "seconds": round(time.time() - t1, 1),
                }
            )
            report(progress, i + 1, len(ABLATION), f"ablation {v['variant']}: mF1 {r['mF1']:.4f}")
        res["ablation"] = {"base_mF1": res["base"]["mF1"], "variants": rows, "seconds": round(time.time() - t0, 1)}
    return res
