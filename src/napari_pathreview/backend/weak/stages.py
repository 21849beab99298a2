"""Training the two stages: a CAM variant on random crops with tile labels (stage 1), the U-Net on the
pseudo-label maps (stage 2). Both validate on held-out *train* images, using no point labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, ProgressFn
from ..train import TrainConfig, fit, seed_everything
from .config import VARIANTS, WeakConfig
from .crops import crop_tensor, grid_crops, jitter_and_turn, normalise, random_crops
from .maps import seg_probs
from .model import build_weak_cam, stage1_loss
from .scores import crop_presence_f1, pseudo_agreement, tile_presence_f1
from .subcategories import sub_labels


@dataclass
class WeakData:
    """The training split: ``train`` and held-out ``tune`` samples (``PointsSample``: image at the models'
    scale, points used only through tile labels), the class names and the pixel ``normalisation``."""

    train: list
    tune: list
    classes: list
    normalisation: dict


@dataclass
class Hooks:
    """Callbacks of a training loop (``backend.train.fit``): progress, cancel, on_epoch."""

    progress: ProgressFn | None = None
    cancel: object = None
    on_epoch: Callable | None = None

    def fit(self, model, loss, batches, validate, tc, steps: int):
        """``backend.train.fit`` with these callbacks; the best epoch's weights loaded -> (model in eval
        mode, FitResult)."""
        res = fit(
            model,
            loss,
            batches,
            validate,
            tc,
            steps,
            progress=self.progress,
            cancel=self.cancel,
            on_epoch=self.on_epoch,
        )
        model.load_state_dict(res.best_state)
        return model.eval(), res


def split_tune(samples, every: int):
    """(train, tune): every ``every``-th training image is held out (stopping, threshold choice)."""
    tune = samples[::every]
    return [s for i, s in enumerate(samples) if i % every], tune


def train_stage1(variant: str, data: WeakData, cfg: WeakConfig, device, init=None, kms=None, ref=None, hooks=None):
    """Train one CAM variant ('cam', 'puzzle', 'sc') on random crops -> (model, FitResult).

    ``init``: weights to start from (SC-CAM starts from the CAM model); ``kms``/``ref``: the SC-CAM
    k-means per class and the frozen model whose features they cluster.
    """
    import torch

    hooks = hooks or Hooks()
    k, norm = len(data.classes), data.normalisation
    seed_everything(cfg.seed + VARIANTS.index(variant))
    rng = np.random.default_rng(cfg.seed + 10 * VARIANTS.index(variant))
    model = build_weak_cam(
        {"classes": list(data.classes), "widths": list(cfg.widths), "n_sub": cfg.n_sub if variant == "sc" else 0}
    ).to(device)
    if init is not None:
        model.load_state_dict(init.state_dict(), strict=False)
    xt, yt = crop_tensor(data.tune, grid_crops(data.tune, cfg.crop, k), norm)
    xt = torch.from_numpy(xt).to(device)

    def batches(epoch):
        for _ in range(cfg.cam_steps):
            x, y = random_crops(data.train, cfg.cam_batch, cfg.crop, k, rng, norm)
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            yield x, y, (sub_labels(ref, x, y, kms, cfg.n_sub) if variant == "sc" else None)

    def validate(m):
        logits = torch.cat([m(xt[i : i + 512]) for i in range(0, len(xt), 512)]).cpu().numpy()
        return {"score": tile_presence_f1(logits > 0, yt)}

    tc = TrainConfig(epochs=cfg.cam_epochs, batch_size=cfg.cam_batch, lr=cfg.lr, seed=cfg.seed)
    loss = lambda m, b: stage1_loss(m, b[0], b[1], variant, b[2], cfg.puzzle_alpha)
    return hooks.fit(model, loss, batches, validate, tc, cfg.cam_steps)


def _class_weights(train_maps, k: int, device):
    """Cross-entropy weights ``(1 + K,)``: inverse square root of each label's pixel frequency, mean 1."""
    import torch

    freq = np.bincount(np.concatenate([m[m >= 0] for m in train_maps]), minlength=k + 1).astype(np.float64)
    weight = torch.tensor((freq.sum() / np.maximum(freq, 1)) ** 0.5, dtype=torch.float32)
    return (weight / weight.mean()).to(device)


def _seg_batch(data: WeakData, train_maps, cfg: WeakConfig, rng):
    """One stage-2 batch: random ``seg_crop`` crops with colour jitter and dihedral turns ->
    (x ``(B, 3, c, c)`` normalised, y ``(B, c, c)`` int64 pseudo-labels)."""
    xs, ys, c = [], [], cfg.seg_crop
    for _ in range(cfg.seg_batch):
        j = int(rng.integers(len(data.train)))
        img, lab = data.train[j].image, train_maps[j]
        y0, x0 = int(rng.integers(0, img.shape[0] - c + 1)), int(rng.integers(0, img.shape[1] - c + 1))
        im, lb = jitter_and_turn(img[y0 : y0 + c, x0 : x0 + c], rng, lab[y0 : y0 + c, x0 : x0 + c])
        xs.append(normalise(im, data.normalisation))
        ys.append(lb)
    return np.stack(xs), np.stack(ys).astype(np.int64)


def train_stage2(data: WeakData, train_maps, cfg: WeakConfig, device, tune_maps=None, hooks=None):
    """U-Net on the pseudo-label maps (``(H, W)`` int, 0 = background, -1 = ignored) -> (segmenter, FitResult).

    Validation on the held-out train images, both recorded each epoch: ``tile_f1`` (crop-level presence F1
    of the U-Net's label maps against the tile labels) and, given ``tune_maps`` (their pseudo-labels),
    ``agreement`` (:func:`pseudo_agreement`). ``cfg.seg_select`` names the one that picks the checkpoint;
    "agreement" tracks per-cell types, tile F1 does not (docs/model-cards/weak-cells.md).
    """
    import torch
    import torch.nn.functional as F

    from ..models.segmenter import SegmenterConfig, build_segmenter

    hooks = hooks or Hooks()
    k = len(data.classes)
    seed_everything(cfg.seed + 5)
    rng = np.random.default_rng(cfg.seed + 50)
    seg = build_segmenter(SegmenterConfig(classes=tuple(data.classes))).to(device)
    weight = _class_weights(train_maps, k, device)
    crops = grid_crops(data.tune, cfg.crop, k)

    def batches(epoch):
        for _ in range(cfg.seg_steps):
            x, y = _seg_batch(data, train_maps, cfg, rng)
            yield torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def loss_fn(m, b):
        return F.cross_entropy(m(b[0])["logits"], b[1], weight=weight, ignore_index=-1)

    if cfg.seg_select not in ("agreement", "tile_f1"):
        raise InputError(f"seg_select '{cfg.seg_select}': use 'agreement' or 'tile_f1'")
    if cfg.seg_select == "agreement" and tune_maps is None:
        raise InputError("seg_select 'agreement' needs the held-out images' pseudo-labels (tune_maps)")

    def validate(m):
        probs = [seg_probs(m, s.image, data.normalisation, flips=False) for s in data.tune]
        row = {"tile_f1": crop_presence_f1([p.argmax(0) for p in probs], crops, k, cfg.min_px)}
        if tune_maps is not None:
            row["agreement"] = pseudo_agreement([p[1:].argmax(0) for p in probs], tune_maps, k)
        return {"score": row[cfg.seg_select], **row}

    tc = TrainConfig(epochs=cfg.seg_epochs, batch_size=cfg.seg_batch, lr=cfg.lr, seed=cfg.seed)
    return hooks.fit(seg, loss_fn, batches, validate, tc, cfg.seg_steps)
