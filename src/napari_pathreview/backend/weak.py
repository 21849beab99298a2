"""Weakly supervised cell types: tile-level labels -> CAM -> pseudo-labels -> U-Net -> a type per cell.

MISSION §4 (the protein-atlas single-cell problem) on CRCHisto H&E. Training sees only *tile labels*:
for a crop, the set of cell types present (derived from the point annotations, which are otherwise not
used). Everything runs at the models' scale, ``WeakConfig.mpp`` (0.55 µm/px, CRCHisto's native grid).

Stage 1, a multi-label CNN on ``crop`` x ``crop`` px crops (:class:`WeakCAMNet`; CAM stride 8):

- ``cam``: plain CAM, BCE on the tile labels;
- ``puzzle``: Puzzle-CAM, the crop also goes through as 2 x 2 tiles; the merged tile CAMs must match
  the full CAM (:func:`puzzle_loss`, L1) and classify the crop as well;
- ``sc``: SC-CAM, k-means on the ``cam`` model's pooled features splits each class into ``n_sub``
  sub-categories; one retraining round (initialised from ``cam``) with parent + sub-category BCE.

CAMs (:func:`cam_probs`) are local logits ``w_k . f(x) + b_k`` (their spatial mean is the crop's logit)
through a sigmoid: per-pixel presence probabilities ``(K, H, W)`` in [0, 1], averaged over TTA (flips,
scales) and over models (ensemble). Pseudo-labels (:func:`pseudo_labels`): 0 = background where every
class is below the threshold ``t``, else ``1 + argmax``; ``t`` is chosen on held-out *train* images by
the tile-level F1 of the classes present in each crop's pseudo-label map (tile labels only).

Stage 2: the segmenter's U-Net (softmax over background + K types) trained on the pseudo-label maps.
A cell's type is the class with the highest mean probability in a ``cell_radius`` px box around it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, ProgressFn, check_cancel, report

VARIANTS = ("cam", "puzzle", "sc")
ROW_KEYS = {"cam": "cam", "puzzle": "puzzle_cam", "sc": "sc_cam"}


@dataclass
class WeakConfig:
    """Settings of the whole weak-cells recipe (stored in the cards). Sizes in model pixels at ``mpp``."""

    mpp: float = 0.55
    crop: int = 64
    widths: tuple = (32, 64, 128)
    n_sub: int = 3
    cam_epochs: int = 30
    cam_steps: int = 60
    cam_batch: int = 64
    puzzle_alpha: float = 1.0
    seg_epochs: int = 30
    seg_steps: int = 30
    seg_batch: int = 8
    seg_crop: int = 192
    tta_scales: tuple = (1.0, 1.25)
    tta_flips: bool = True
    cell_radius: int = 3
    min_px: int = 12
    thresholds: tuple = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))
    tune_every: int = 7
    seed: int = 0
    lr: float = 2e-3
    seg_select: str = "agreement"  # stage-2 checkpoint rule: "agreement" or "tile_f1" (see train_stage2)


# ---------------------------------------------------------------- tile labels and crops


def tile_labels(
    yx: np.ndarray, labels: np.ndarray, y0: int, x0: int, size: int, n_classes: int, margin: float = 2.0
) -> np.ndarray:
    """Types present in the crop ``[y0, y0+size) x [x0, x0+size)`` -> ``(K,)`` float32 0/1.

    yx ``(N, 2)`` pixels, labels ``(N,)`` (-1 = unlabelled, ignored). Points closer than ``margin`` px
    to the crop's border do not count (their nucleus is mostly outside).
    """
    out = np.zeros(n_classes, np.float32)
    if len(yx) == 0:
        return out
    inside = (
        (yx[:, 0] >= y0 + margin)
        & (yx[:, 0] < y0 + size - margin)
        & (yx[:, 1] >= x0 + margin)
        & (yx[:, 1] < x0 + size - margin)
        & (labels >= 0)
    )
    out[np.unique(labels[inside])] = 1.0
    return out


def normalise(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 (or float in [0, 1]) -> (3, H, W) float32, mean 0.5 / std 0.25 per channel (the
    cards' normalisation)."""
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    return ((x - 0.5) / 0.25).transpose(2, 0, 1)


def random_crops(samples, n: int, size: int, n_classes: int, rng: np.random.Generator):
    """``n`` random crops with dihedral + colour jitter -> x ``(n, 3, size, size)``, y ``(n, K)``."""
    from .augment import brightness_contrast, hed_jitter

    xs, ys = [], []
    for _ in range(n):
        s = samples[rng.integers(len(samples))]
        h, w = s.image.shape[:2]
        y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        img = s.image[y0 : y0 + size, x0 : x0 + size]
        img = brightness_contrast(hed_jitter(img / 255.0, rng), rng)
        k = int(rng.integers(4))
        img = np.rot90(img, k)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        xs.append(normalise(np.ascontiguousarray(img)))
        ys.append(tile_labels(s.yx, s.labels, y0, x0, size, n_classes))
    return np.stack(xs), np.stack(ys)


def grid_crops(samples, size: int, n_classes: int):
    """Non-overlapping crops of every sample -> list of (sample index, y0, x0, size, tile label ``(K,)``)."""
    out = []
    for i, s in enumerate(samples):
        h, w = s.image.shape[:2]
        for y0 in range(0, h - size + 1, size):
            for x0 in range(0, w - size + 1, size):
                out.append((i, y0, x0, size, tile_labels(s.yx, s.labels, y0, x0, size, n_classes)))
    return out


# ---------------------------------------------------------------- stage-1 model and losses


def build_weak_cam(cfg: dict | None = None):
    """A :class:`WeakCAMNet` from a card config (``classes``, ``widths``, ``n_sub``)."""
    import torch
    from torch import nn

    from .models.classifier import ClassifierConfig, build_classifier

    cfg = dict(cfg or {})
    n_sub = int(cfg.pop("n_sub", 0))

    class WeakCAMNet(nn.Module):
        """Multi-label GAP CNN. forward ``(B, 3, H, W)`` -> logits ``(B, K)``; :meth:`cams` -> ``(B, K, H/8, W/8)``
        local logits; optional sub-category head ``(B, K * n_sub)`` (SC-CAM)."""

        def __init__(self):
            super().__init__()
            self.net = build_classifier(ClassifierConfig.from_dict({**cfg, "multilabel": True}))
            self.n_sub = n_sub
            k = len(self.net.cfg.classes)
            self.sub = nn.Linear(self.net.out_channels, k * n_sub) if n_sub else None
            self.stride = self.net.stride

        def features(self, x):
            return self.net.forward_features(x)

        def cams_from_features(self, f):
            w, b = self.net.cam_weights()
            return torch.einsum("kc,bchw->bkhw", w, f) + b[None, :, None, None]

        def cams(self, x):
            return self.cams_from_features(self.features(x))

        def forward(self, x):
            return self.net(x)

    return WeakCAMNet()


def puzzle_loss(full_cam, tile_cams):
    """Puzzle-CAM reconstruction loss: mean ``|relu(full) - relu(merge(tiles))|``.

    full_cam ``(B, K, h, w)``; tile_cams ``(4, B, K, h/2, w/2)`` in order top-left, top-right,
    bottom-left, bottom-right. Zero when the merged tile CAMs equal the full CAM.
    """
    import torch

    top = torch.cat([tile_cams[0], tile_cams[1]], -1)
    bottom = torch.cat([tile_cams[2], tile_cams[3]], -1)
    merged = torch.cat([top, bottom], -2)
    return (torch.relu(full_cam) - torch.relu(merged)).abs().mean()


def split_tiles(x):
    """``(B, C, H, W)`` -> ``(4, B, C, H/2, W/2)``: the 2 x 2 tiles, row-major."""
    import torch

    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    return torch.stack([x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]])


def stage1_loss(model, x, y, variant: str, sub_y=None, alpha: float = 1.0):
    """Loss of one batch. x ``(B, 3, S, S)``, y ``(B, K)`` tile labels, sub_y ``(B, K * n_sub)`` (SC)."""
    import torch
    import torch.nn.functional as F

    f = model.features(x)
    logits = model.net.logits_from_features(f)
    loss = F.binary_cross_entropy_with_logits(logits, y)
    if variant == "puzzle":
        tiles = split_tiles(x)
        tf = model.features(tiles.flatten(0, 1))
        tcam = model.cams_from_features(tf).unflatten(0, (4, x.shape[0]))
        full = model.cams_from_features(f)
        merged_logits = torch.cat([torch.cat([tcam[0], tcam[1]], -1), torch.cat([tcam[2], tcam[3]], -1)], -2)
        loss = loss + F.binary_cross_entropy_with_logits(merged_logits.mean((2, 3)), y)
        loss = loss + alpha * puzzle_loss(full, tcam)
    if variant == "sc" and sub_y is not None:
        pooled = f.mean((2, 3))
        loss = loss + F.binary_cross_entropy_with_logits(model.sub(pooled), sub_y)
    return loss


def sub_categories(model, samples, cfg: WeakConfig, n_classes: int, rng, device, n: int = 2048):
    """SC-CAM clustering: k-means (``n_sub`` clusters) per class on pooled features of positive crops.

    Returns the per-class ``KMeans`` objects (None where too few crops) for :func:`sub_labels`.
    """
    import torch

    x, y = random_crops(samples, n, cfg.crop, n_classes, rng)
    feats = []
    with torch.no_grad():
        for i in range(0, n, 256):
            feats.append(model.features(torch.from_numpy(x[i : i + 256]).to(device)).mean((2, 3)).cpu().numpy())
    feats = np.concatenate(feats)
    kms = []
    for k in range(n_classes):
        pos = feats[y[:, k] > 0]
        kms.append(kmeans(pos, cfg.n_sub, seed=cfg.seed) if len(pos) >= 4 * cfg.n_sub else None)
    return kms


class kmeans:
    """Lloyd's k-means with k-means++ seeding (numpy). ``kmeans(x (N, D), k)``; ``.centres`` ``(k, D)``;
    ``.predict(x)`` -> ``(N,)`` nearest centre."""

    def __init__(self, x: np.ndarray, k: int, iters: int = 30, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = np.asarray(x, np.float64)
        c = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d = np.min(((x[:, None] - np.array(c)[None]) ** 2).sum(-1), 1)
            c.append(x[rng.choice(len(x), p=d / d.sum()) if d.sum() > 0 else rng.integers(len(x))])
        self.centres = np.array(c)
        for _ in range(iters):
            a = self.predict(x)
            new = np.array([x[a == j].mean(0) if np.any(a == j) else self.centres[j] for j in range(k)])
            if np.allclose(new, self.centres):
                break
            self.centres = new

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64)[:, None] - self.centres[None]) ** 2).sum(-1).argmin(1)


def sub_labels(model, x, y, kms, n_sub: int):
    """``(B, K * n_sub)`` sub-category targets: 1 at the cluster of each present class."""
    import torch

    with torch.no_grad():
        pooled = model.features(x).mean((2, 3)).cpu().numpy()
    out = np.zeros((len(y), len(kms) * n_sub), np.float32)
    yn = y.cpu().numpy()
    for k, km in enumerate(kms):
        rows = np.nonzero(yn[:, k] > 0)[0]
        if km is None or not len(rows):
            continue
        out[rows, k * n_sub + km.predict(pooled[rows])] = 1.0
    return torch.from_numpy(out).to(x.device)


# ---------------------------------------------------------------- CAM inference, pseudo-labels, cell types


def cam_probs(models, img: np.ndarray, scales=(1.0,), flips: bool = False, device=None):
    """Per-pixel class presence probabilities ``(K, H, W)`` float32 of an (H, W, 3) uint8 image at the
    models' scale: sigmoid of the bilinearly upsampled local logits, averaged over models and TTA."""
    import torch
    import torch.nn.functional as F

    models = models if isinstance(models, (list, tuple)) else [models]
    device = device or next(models[0].parameters()).device
    h, w = img.shape[:2]
    x0 = torch.from_numpy(normalise(img))[None].to(device)
    acc, n = None, 0
    flip_sets = [(), (-1,), (-2,), (-2, -1)] if flips else [()]
    with torch.inference_mode():
        for m in models:
            s8 = m.stride
            for sc in scales:
                hs, ws = int(round(h * sc / s8)) * s8, int(round(w * sc / s8)) * s8
                x = F.interpolate(x0, size=(hs, ws), mode="bilinear", align_corners=False) if (hs, ws) != (h, w) else x0
                for fl in flip_sets:
                    xi = x.flip(fl) if fl else x
                    c = m.cams(xi)
                    c = c.flip(fl) if fl else c
                    p = torch.sigmoid(F.interpolate(c, size=(h, w), mode="bilinear", align_corners=False))[0]
                    acc = p if acc is None else acc + p
                    n += 1
    return (acc / n).float().cpu().numpy()


def pseudo_labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    """``(K, H, W)`` probabilities -> ``(H, W)`` int32: 0 background (all < threshold), else 1 + argmax."""
    lab = probs.argmax(0).astype(np.int32) + 1
    lab[probs.max(0) < threshold] = 0
    return lab


def crop_presence_f1(maps: list[np.ndarray], crops, n_classes: int, min_px: int) -> float:
    """Tile-level macro F1 of "class k has >= min_px pixels in the crop's label map" vs the tile labels.

    maps: label maps ``(H, W)`` (0 background, 1..K) per sample; crops from :func:`grid_crops`.
    """
    tp = np.zeros(n_classes)
    fp = np.zeros(n_classes)
    fn = np.zeros(n_classes)
    for i, y0, x0, size, lab in crops:
        sub = maps[i][y0 : y0 + size, x0 : x0 + size]
        counts = np.bincount(sub.ravel(), minlength=n_classes + 1)[1:]
        pred = counts >= min_px
        tp += pred & (lab > 0)
        fp += pred & (lab == 0)
        fn += ~pred & (lab > 0)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(f1.mean())


def threshold_sweep(prob_maps: list[np.ndarray], crops, n_classes: int, thresholds, min_px: int) -> list[dict]:
    """Per threshold: tile-level F1 of the pseudo-labels and their foreground fraction (non-increasing
    in the threshold). prob_maps ``(K, H, W)`` per held-out image."""
    rows = []
    for t in thresholds:
        maps = [pseudo_labels(p, t) for p in prob_maps]
        fg = float(np.mean([np.mean(m > 0) for m in maps]))
        rows.append(
            {
                "threshold": float(t),
                "tile_f1": round(crop_presence_f1(maps, crops, n_classes, min_px), 4),
                "foreground": round(fg, 4),
            }
        )
    return rows


def cell_types(probs: np.ndarray, yx: np.ndarray, radius: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Type per cell from class maps. probs ``(K, H, W)`` (per-class maps, background excluded),
    yx ``(N, 2)`` pixels -> labels ``(N,)`` and per-class scores ``(N, K)`` (mean in a
    ``(2 radius + 1)`` px box, renormalised to sum 1)."""
    from scipy.ndimage import uniform_filter

    k, h, w = probs.shape
    if len(yx) == 0:
        return np.zeros(0, np.int64), np.zeros((0, k), np.float32)
    sm = uniform_filter(probs, size=(1, 2 * radius + 1, 2 * radius + 1), mode="nearest") if radius else probs
    iy = np.clip(np.round(yx[:, 0]).astype(int), 0, h - 1)
    ix = np.clip(np.round(yx[:, 1]).astype(int), 0, w - 1)
    sc = sm[:, iy, ix].T.astype(np.float32)
    sc = sc / np.maximum(sc.sum(1, keepdims=True), 1e-8)
    return sc.argmax(1).astype(np.int64), sc


def seg_probs(model, img: np.ndarray, device=None, flips: bool = True) -> np.ndarray:
    """Stage-2 U-Net softmax ``(1 + K, H, W)`` of an (H, W, 3) uint8 image (padded to the stride)."""
    import torch
    import torch.nn.functional as F

    device = device or next(model.parameters()).device
    h, w = img.shape[:2]
    s = model.stride
    x = torch.from_numpy(normalise(img))[None].to(device)
    x = F.pad(x, (0, (-w) % s, 0, (-h) % s), mode="reflect")
    acc, n = 0, 0
    with torch.inference_mode():
        for fl in [(), (-1,), (-2,), (-2, -1)] if flips else [()]:
            xi = x.flip(fl) if fl else x
            p = torch.softmax(model(xi)["logits"], 1)
            acc = acc + (p.flip(fl) if fl else p)
            n += 1
    return (acc / n)[0, :, :h, :w].float().cpu().numpy()


def class_f1(pred: np.ndarray, true: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K,)`` F1 of each class index 0..K-1 between two equally long label arrays (0 where a class is
    absent from both)."""
    return np.array(
        [
            2 * np.sum((pred == k) & (true == k)) / max(np.sum(pred == k) + np.sum(true == k), 1)
            for k in range(n_classes)
        ],
        np.float64,
    )


def type_scores(pred: np.ndarray, gt: np.ndarray, classes) -> dict:
    """Per-class F1, ``mF1`` and ``accuracy`` of predicted vs annotated types (labelled cells only)."""
    keep = gt >= 0
    pred, gt = pred[keep], gt[keep]
    out = {c: round(float(f), 4) for c, f in zip(classes, class_f1(pred, gt, len(classes)))}
    out["mF1"] = round(float(np.mean([out[c] for c in classes])), 4)
    out["accuracy"] = round(float(np.mean(pred == gt)) if len(gt) else 0.0, 4)
    out["n_cells"] = int(len(gt))
    return out


# ---------------------------------------------------------------- training


def _split(samples, every: int):
    """(train, tune): every ``every``-th training image is held out (stopping, threshold choice)."""
    tune = samples[::every]
    return [s for i, s in enumerate(samples) if i % every], tune


def _crop_tensor(samples, crops):
    x = np.stack([normalise(samples[i].image[y0 : y0 + s, x0 : x0 + s]) for i, y0, x0, s, _ in crops])
    return x, np.stack([c[-1] for c in crops])


def pseudo_agreement(pred_maps: list[np.ndarray], pseudo_maps: list[np.ndarray], n_classes: int) -> float:
    """Macro F1 over the K classes of predicted types against pseudo-labels, on the pixels the
    pseudo-labels call foreground.

    pred_maps: ``(H, W)`` class index 0..K-1 (the U-Net's argmax over classes, background excluded);
    pseudo_maps: ``(H, W)`` 0 = background, 1..K (, -1 = ignored). Uses no point labels.
    """
    fg = [m > 0 for m in pseudo_maps]
    pred = np.concatenate([p[f] for p, f in zip(pred_maps, fg)]) if fg else np.zeros(0, np.int64)
    true = np.concatenate([m[f] - 1 for m, f in zip(pseudo_maps, fg)]) if fg else np.zeros(0, np.int64)
    return float(class_f1(pred, true, n_classes).mean())


def _tile_f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = (pred & (y > 0)).sum(0)
    fp = (pred & (y == 0)).sum(0)
    fn = (~pred & (y > 0)).sum(0)
    return float(np.mean(2 * tp / np.maximum(2 * tp + fp + fn, 1)))


def train_stage1(
    variant: str,
    train_s,
    tune_s,
    classes,
    cfg: WeakConfig,
    device,
    init=None,
    kms=None,
    ref=None,
    progress: ProgressFn | None = None,
    cancel=None,
    on_epoch=None,
):
    """Train one CAM variant ('cam', 'puzzle', 'sc') on random crops -> (model, FitResult).

    ``init``: weights to start from (SC-CAM starts from the CAM model); ``kms``/``ref``: the SC-CAM
    k-means per class and the frozen model whose features they cluster.
    """
    import torch

    from .train import TrainConfig, fit, seed_everything

    k = len(classes)
    seed_everything(cfg.seed + VARIANTS.index(variant))
    rng = np.random.default_rng(cfg.seed + 10 * VARIANTS.index(variant))
    model = build_weak_cam(
        {"classes": list(classes), "widths": list(cfg.widths), "n_sub": cfg.n_sub if variant == "sc" else 0}
    ).to(device)
    if init is not None:
        model.load_state_dict(init.state_dict(), strict=False)
    xt, yt = _crop_tensor(tune_s, grid_crops(tune_s, cfg.crop, k))
    xt = torch.from_numpy(xt).to(device)

    def batches(epoch):
        for _ in range(cfg.cam_steps):
            x, y = random_crops(train_s, cfg.cam_batch, cfg.crop, k, rng)
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            yield x, y, (sub_labels(ref, x, y, kms, cfg.n_sub) if variant == "sc" else None)

    def validate(m):
        logits = torch.cat([m(xt[i : i + 512]) for i in range(0, len(xt), 512)]).cpu().numpy()
        return {"score": _tile_f1(logits > 0, yt)}

    tc = TrainConfig(epochs=cfg.cam_epochs, batch_size=cfg.cam_batch, lr=cfg.lr, seed=cfg.seed)
    res = fit(
        model,
        lambda m, b: stage1_loss(m, b[0], b[1], variant, b[2], cfg.puzzle_alpha),
        batches,
        validate,
        tc,
        cfg.cam_steps,
        progress=progress,
        cancel=cancel,
        on_epoch=on_epoch,
    )
    model.load_state_dict(res.best_state)
    return model.eval(), res


def train_stage2(
    train_s,
    tune_s,
    train_maps,
    classes,
    cfg: WeakConfig,
    device,
    tune_maps=None,
    progress: ProgressFn | None = None,
    cancel=None,
    on_epoch=None,
):
    """U-Net on the pseudo-label maps (``(H, W)`` int, 0 = background, -1 = ignored) -> (segmenter, FitResult).

    Validation on the held-out train images, both recorded each epoch: ``tile_f1`` (crop-level presence F1
    of the U-Net's label maps against the tile labels) and, given ``tune_maps`` (their pseudo-labels),
    ``agreement`` (:func:`pseudo_agreement`). ``cfg.seg_select`` names the one that picks the checkpoint;
    "agreement" tracks per-cell types, tile F1 does not (docs/model-cards/weak-cells.md).
    """
    import torch
    import torch.nn.functional as F

    from .augment import brightness_contrast, hed_jitter
    from .models.segmenter import SegmenterConfig, build_segmenter
    from .train import TrainConfig, fit, seed_everything

    k = len(classes)
    seed_everything(cfg.seed + 5)
    rng = np.random.default_rng(cfg.seed + 50)
    seg = build_segmenter(SegmenterConfig(classes=tuple(classes))).to(device)
    freq = np.bincount(np.concatenate([m[m >= 0] for m in train_maps]), minlength=k + 1).astype(np.float64)
    weight = torch.tensor((freq.sum() / np.maximum(freq, 1)) ** 0.5, dtype=torch.float32)
    weight = (weight / weight.mean()).to(device)
    crops = grid_crops(tune_s, cfg.crop, k)
    c = cfg.seg_crop

    def batches(epoch):
        for _ in range(cfg.seg_steps):
            xs, ys = [], []
            for _ in range(cfg.seg_batch):
                j = int(rng.integers(len(train_s)))
                img, lab = train_s[j].image, train_maps[j]
                y0, x0 = int(rng.integers(0, img.shape[0] - c + 1)), int(rng.integers(0, img.shape[1] - c + 1))
                im = brightness_contrast(hed_jitter(img[y0 : y0 + c, x0 : x0 + c] / 255.0, rng), rng)
                lb = lab[y0 : y0 + c, x0 : x0 + c]
                r = int(rng.integers(4))
                im, lb = np.rot90(im, r), np.rot90(lb, r)
                if rng.random() < 0.5:
                    im, lb = im[:, ::-1], lb[:, ::-1]
                xs.append(normalise(np.ascontiguousarray(im)))
                ys.append(np.ascontiguousarray(lb))
            yield torch.from_numpy(np.stack(xs)).to(device), torch.from_numpy(np.stack(ys).astype(np.int64)).to(device)

    def loss_fn(m, b):
        return F.cross_entropy(m(b[0])["logits"], b[1], weight=weight, ignore_index=-1)

    if cfg.seg_select not in ("agreement", "tile_f1"):
        raise InputError(f"seg_select '{cfg.seg_select}': use 'agreement' or 'tile_f1'")
    if cfg.seg_select == "agreement" and tune_maps is None:
        raise InputError("seg_select 'agreement' needs the held-out images' pseudo-labels (tune_maps)")

    def validate(m):
        probs = [seg_probs(m, s.image, flips=False) for s in tune_s]
        row = {"tile_f1": crop_presence_f1([p.argmax(0) for p in probs], crops, k, cfg.min_px)}
        if tune_maps is not None:
            row["agreement"] = pseudo_agreement([p[1:].argmax(0) for p in probs], tune_maps, k)
        return {"score": row[cfg.seg_select], **row}

    tc = TrainConfig(epochs=cfg.seg_epochs, batch_size=cfg.seg_batch, lr=cfg.lr, seed=cfg.seed)
    res = fit(seg, loss_fn, batches, validate, tc, cfg.seg_steps, progress=progress, cancel=cancel, on_epoch=on_epoch)
    seg.load_state_dict(res.best_state)
    return seg.eval(), res


def _stage(progress, name: str, i: int, n: int):
    if progress is None:
        return None
    return lambda a, b, m: progress(i, n, f"{name}: {m}")


def train_weak_cells(
    data,
    out,
    cfg: WeakConfig | None = None,
    device=None,
    command: str = "",
    cams=None,
    progress: ProgressFn | None = None,
    cancel=None,
    on_epoch=None,
) -> dict:
    """The whole recipe on a points dataset's ``train`` split; writes ``OUT-{cam,puzzle,sc}`` (stage 1,
    task ``weak-cam``) and ``OUT`` (stage-2 U-Net, task ``weak-cells``) as safetensors + cards.

    ``cams``: a weak-cells model (name or path) whose stage-1 CAM models are reused as they are; only the
    threshold sweep, the pseudo-labels and the stage-2 U-Net are redone, and ``OUT``'s card points at
    those CAM models. Returns ``{"files", "threshold", "curve", "seconds"}``. Point labels are used only
    through :func:`tile_labels`.
    """
    import torch

    from .datasets import load_points_dataset
    from .weights import ModelCard, choose_device, class_colors, load_model, save_model

    cfg = cfg or WeakConfig()
    dev = choose_device(device)
    t0 = time.time()
    samples, classes = load_points_dataset(data, "train")
    train_s, tune_s = _split(samples, cfg.tune_every)
    out = Path(out).with_suffix("") if Path(out).suffix in (".safetensors", ".json") else Path(out)
    n_steps = 5
    models, fits, cam_refs = {}, {}, None
    if cams is not None:
        cam_refs = cam_references(cams)
        models = {v: load_model(r, "weak-cam", dev)[0] for v, r in cam_refs.items()}
        report(progress, 3, n_steps, f"stage 1 reused from {cams}")
    for i, v in enumerate(VARIANTS if cams is None else ()):
        check_cancel(cancel)
        kw = {}
        if v == "sc":
            ref = models["cam"]
            kw = {
                "init": ref,
                "ref": ref,
                "kms": sub_categories(ref, train_s, cfg, len(classes), np.random.default_rng(cfg.seed), dev),
            }
        models[v], fits[v] = train_stage1(
            v,
            train_s,
            tune_s,
            classes,
            cfg,
            dev,
            progress=_stage(progress, v, i, n_steps),
            cancel=cancel,
            on_epoch=on_epoch,
            **kw,
        )
        report(progress, i + 1, n_steps, f"{v}: tile F1 {fits[v].best_val['score']:.3f}")
    ens = [models[v] for v in VARIANTS]
    probs_tune = [cam_probs(ens, s.image, cfg.tta_scales, cfg.tta_flips) for s in tune_s]
    curve = threshold_sweep(
        probs_tune, grid_crops(tune_s, cfg.crop, len(classes)), len(classes), cfg.thresholds, cfg.min_px
    )
    threshold = max(curve, key=lambda r: r["tile_f1"])["threshold"]
    train_maps = []
    for s in train_s:
        check_cancel(cancel)
        train_maps.append(pseudo_labels(cam_probs(ens, s.image, cfg.tta_scales, cfg.tta_flips), threshold))
    report(progress, 4, n_steps, f"pseudo-labels at threshold {threshold}")
    tune_maps = [pseudo_labels(p, threshold) for p in probs_tune]
    seg, seg_fit = train_stage2(
        train_s,
        tune_s,
        train_maps,
        classes,
        cfg,
        dev,
        tune_maps=tune_maps,
        progress=_stage(progress, "u-net", 4, n_steps),
        cancel=cancel,
        on_epoch=on_epoch,
    )
    seconds = round(time.time() - t0, 1)
    licence = "research use only (trained on CRCHisto; the weights inherit its licence)"
    common = {"mpp": cfg.mpp, "classes": list(classes), "licence": licence, "colors": class_colors(classes)}
    training = {
        "command": command,
        "seed": cfg.seed,
        "data": str(data),
        "device": str(dev),
        "torch": torch.__version__,
        "crop_px": cfg.crop,
        "crop_um": round(cfg.crop * cfg.mpp, 1),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "train_images": len(train_s),
        "tune_images": [s.name for s in tune_s],
        "labels": "tile level only: the set of types present in each crop",
    }
    files = []
    for v in VARIANTS if cams is None else ():
        card = ModelCard(
            name=f"{out.name}-{v}",
            task="weak-cam",
            in_channels=3,
            config={"classes": list(classes), "widths": list(cfg.widths), "n_sub": cfg.n_sub if v == "sc" else 0},
            params={"variant": v, "crop": cfg.crop, "stride": 8},
            training={
                **training,
                "best_epoch": fits[v].best_epoch,
                "seconds": round(fits[v].seconds, 1),
                "history": fits[v].history,
            },
            metrics={"tune_tile_f1": round(fits[v].best_val["score"], 4)},
            **common,
        )
        files.append(str(save_model(models[v], card, out.with_name(f"{out.name}-{v}"))))
    card = ModelCard(
        name=out.name,
        task="weak-cells",
        config=seg.cfg.to_dict(),
        in_channels=3,
        params={
            "cams": cam_refs or {v: f"{out.name}-{v}" for v in VARIANTS},
            "threshold": threshold,
            "tta_scales": list(cfg.tta_scales),
            "tta_flips": cfg.tta_flips,
            "cell_radius_px": cfg.cell_radius,
            "crop": cfg.crop,
        },
        training={
            **training,
            "threshold_curve": curve,
            "best_epoch": seg_fit.best_epoch,
            "seconds": seconds,
            "seg_seconds": round(seg_fit.seconds, 1),
            "history": seg_fit.history,
        },
        metrics={"tune_" + k: round(v, 4) for k, v in seg_fit.best_val.items() if k != "score"},
        **common,
    )
    if cams is not None:
        card.training["stage1_from"] = str(cams)
    files.append(str(save_model(seg, card, out)))
    report(progress, n_steps, n_steps, f"done in {seconds} s")
    return {"files": files, "threshold": threshold, "curve": curve, "seconds": seconds}


# ---------------------------------------------------------------- loading, inference, evaluation


def load_weak_cells(weights=None, device=None):
    """(segmenter, its card, {variant: CAM model}) for a name/path (shipped ``weak-cells`` when None).

    The CAM models named in the card are looked up beside the segmenter's file first, then by name.
    """
    from .weights import load_model, resolve

    path, card = resolve(weights or "weak-cells", "weak-cells")
    seg, card = load_model(path, "weak-cells", device)
    cams = {v: load_model(r, "weak-cam", device)[0] for v, r in cam_references(path).items()}
    return seg, card, cams


def cam_references(weights) -> dict:
    """``{variant: name or absolute path}`` of the stage-1 CAM models a weak-cells model uses: a card's
    name is looked up beside the segmenter's file first, then among the registered models."""
    from .weights import reference, resolve

    path, card = resolve(weights, "weak-cells")
    refs = {}
    for v, name in card.params["cams"].items():
        beside = Path(name) if Path(name).is_absolute() else path.with_name(f"{name}.safetensors")
        refs[v] = reference(beside if beside.exists() else name, "weak-cam")
    return refs


@dataclass
class WeakCellsResult:
    """Output of :func:`infer`, all at the input's pixel grid.

    cams ``(K, H, W)`` float32 presence probabilities (CAM ensemble + TTA); pseudo ``(H, W)`` int32
    (0 background, 1..K); segmentation ``(H, W)`` int32 (stage-2 argmax, same coding); points: cells with
    their weakly supervised types (CellPoints, input pixels).
    """

    cams: np.ndarray
    pseudo: np.ndarray
    segmentation: np.ndarray
    points: object
    classes: list
    threshold: float
    params: dict = field(default_factory=dict)


def infer(
    img: np.ndarray,
    yx: np.ndarray,
    seg,
    card,
    cams: dict,
    mpp: float | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
) -> WeakCellsResult:
    """Run the weak-cells models on an (H, W, 3) uint8 image at ``mpp`` µm/px (None: the models')
    and type the cells at ``yx`` ``(N, 2)`` (input pixels)."""
    import torch
    import torch.nn.functional as F
    from skimage.transform import resize

    from .points import CellPoints
    from .slides import check_model_scale

    h, w = img.shape[:2]
    f = check_model_scale(mpp, card.mpp, name) if mpp else 1.0
    small = (
        img
        if abs(f - 1) < 1e-3
        else (
            resize(
                img, (max(8, round(h * f)), max(8, round(w * f))), order=1, preserve_range=True, anti_aliasing=f < 1
            ).astype(np.uint8)
        )
    )
    p = card.params
    report(progress, 0, 3, "CAMs")
    probs = cam_probs(list(cams.values()), small, tuple(p.get("tta_scales", (1.0,))), bool(p.get("tta_flips")))
    check_cancel(cancel)
    report(progress, 1, 3, "U-Net")
    sp = seg_probs(seg, small)
    check_cancel(cancel)
    labels, scores = cell_types(sp[1:], np.asarray(yx, np.float32).reshape(-1, 2) * f, int(p.get("cell_radius_px", 3)))

    def up(a):
        if a.shape[-2:] == (h, w):
            return a
        return F.interpolate(torch.from_numpy(a)[None], size=(h, w), mode="bilinear", align_corners=False)[0].numpy()

    probs_in, sp_in = up(probs), up(sp)
    pts = CellPoints(
        np.asarray(yx, np.float32).reshape(-1, 2),
        labels,
        scores.max(1) if len(labels) else np.zeros(0, np.float32),
        scores,
        list(card.classes),
        mpp=mpp,
        source=card.name,
        colors=dict(card.colors),
    )
    report(progress, 2, 3, f"{len(pts)} cells typed")
    return WeakCellsResult(
        probs_in.astype(np.float32),
        pseudo_labels(probs_in, float(p["threshold"])),
        sp_in.argmax(0).astype(np.int32),
        pts,
        list(card.classes),
        float(p["threshold"]),
        {"mpp": mpp, "model_mpp": card.mpp, "name": name},
    )


def evaluate_weak_cells(
    data,
    split: str = "validation",
    weights=None,
    device=None,
    detector=None,
    limit: int | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
) -> dict:
    """Cell types at the annotated (labelled) positions of ``split``, per variant.

    Rows: ``cam``, ``puzzle_cam``, ``sc_cam`` (each its own CAM with TTA, argmax in a box of
    ``cell_radius_px``), ``cam_ensemble`` (the three), ``two_stage`` (the U-Net on the pseudo-labels) and
    ``supervised``: the shipped detector's class-probability map *sampled at the annotated position*
    (no detection/matching, so every row types exactly the same cells).
    """
    from .datasets import load_points_dataset
    from .detection import normalise as det_normalise
    from .detection import predict_maps, stain_normalised
    from .weights import load_model

    seg, card, cams = load_weak_cells(weights, device)
    det, dcard = load_model(detector, "detector", device)
    samples, classes = load_points_dataset(data, split, classes=list(card.classes))
    samples = samples[:limit] if limit else samples
    p = card.params
    scales, flips, r = tuple(p.get("tta_scales", (1.0,))), bool(p.get("tta_flips")), int(p.get("cell_radius_px", 3))
    rows = {k: [] for k in ("cam", "puzzle_cam", "sc_cam", "cam_ensemble", "two_stage", "supervised")}
    gts = []
    didx = [dcard.classes.index(c) for c in classes]
    for i, s in enumerate(samples):
        check_cancel(cancel)
        gts.append(s.labels)
        per_model = {v: cam_probs(m, s.image, scales, flips) for v, m in cams.items()}
        for v, pr in per_model.items():
            rows[ROW_KEYS[v]].append(cell_types(pr, s.yx, r)[0])
        ens = np.mean(list(per_model.values()), 0)  # = cam_probs of the list: same TTA count per model
        rows["cam_ensemble"].append(cell_types(ens, s.yx, r)[0])
        rows["two_stage"].append(cell_types(seg_probs(seg, s.image)[1:], s.yx, r)[0])
        dp = predict_maps(det, det_normalise(stain_normalised(s.image, dcard), dcard))["probs"][didx]
        rows["supervised"].append(cell_types(dp, s.yx, 0)[0])
        report(progress, i + 1, len(samples), s.name)
    gt = np.concatenate(gts)
    res = {k: type_scores(np.concatenate(v), gt, classes) for k, v in rows.items()}
    sup = res["supervised"]["mF1"]
    res["ratio_two_stage_to_supervised"] = round(res["two_stage"]["mF1"] / sup, 4) if sup else None
    res.update(
        {
            "split": split,
            "n_images": len(samples),
            "weights": card.name,
            "threshold": p["threshold"],
            "supervised_method": "detector class map sampled at the annotated position",
            "classes": list(classes),
        }
    )
    return res
