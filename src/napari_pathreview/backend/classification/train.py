"""Classifier training: class-balanced random crops, checkpoint chosen and thresholds tuned on held-out images."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..augment import brightness_contrast, hed_jitter, random_dihedral
from ..errors import InputError, ProgressFn
from ..slides import open_slide
from ..tiling import pad_to
from ..train import TrainConfig, fit, seed_everything
from ..weights import ModelCard, choose_device, load_model, save_model
from .data import GLAS_MPP, load_split, targets_of
from .folds import fold_thresholds
from .metrics import classification_metrics, search_thresholds
from .model_input import normalise, predict_probs, probabilities, stain_shifted, to_model_scale
from .options import ClassifierTrainOptions


def _holdout(targets: np.ndarray, n: int, rng) -> np.ndarray:
    """Indices of ``n`` held-out images, stratified by each image's first label."""
    key = targets.argmax(1)
    out = []
    for k in np.unique(key):
        idx = np.flatnonzero(key == k)
        take = max(1, round(n * len(idx) / len(key)))
        out += list(rng.permutation(idx)[:take])
    return np.sort(np.asarray(out, int))


def _crop(img: np.ndarray, side: int, rng) -> np.ndarray:
    img = pad_to(img, side, side)[0]
    y = int(rng.integers(img.shape[0] - side + 1))
    x = int(rng.integers(img.shape[1] - side + 1))
    return img[y : y + side, x : x + side]


def _augment(crop: np.ndarray, rng, stain: float = 0.08) -> np.ndarray:
    """Flips / 90° turns, HED jitter of strength ``stain`` (OD scale ±stain, shift ±3/8 stain), brightness."""
    (crop,) = random_dihedral([crop], rng)
    if crop.shape[2] == 3 and stain > 0:
        crop = hed_jitter(crop, rng, sigma=stain, bias=0.375 * stain)
    return brightness_contrast(crop, rng, b=0.08, c=0.15)


def _sample_weights(targets: np.ndarray) -> np.ndarray:
    """Balanced sampling: each image weighted by the inverse frequency of its rarest label."""
    freq = targets.sum(0) / len(targets)
    w = np.array([1.0 / freq[row > 0].min() if row.any() else 1.0 for row in targets])
    return w / w.sum()


def classifier_loss(model, x, y, loss_fn, multilabel: bool, recon_weight: float = 10.0):
    """Loss on a batch: x ``(B, C, H, W)``; y ``(B, K)`` 0/1 (multi-label) or ``(B,)`` indices."""
    from ..losses import arcface_loss, dual_loss
    from ..models.classifier import ArcFaceHead

    f = model.forward_features(x)
    pooled = model.drop(model.flatten(model.pool(f)))
    if isinstance(model.head, ArcFaceHead):
        loss = arcface_loss(model.head.cosine(pooled), y, model.head.s, model.head.m)
    else:
        loss = loss_fn(model.head(pooled), y)
    if model.decoder is not None:
        loss = dual_loss(loss, model.reconstruct(f, x.shape[-2:]), x, recon_weight)
    return loss


def _training_images(data):
    """(images, classes, multilabel, description) of a labels.csv folder's train split or a list of
    :class:`~..datasets.LabelledImage`; InputError with fewer than two classes."""
    if isinstance(data, (str, Path)):
        images, classes, multi = load_split(data, "train")
        desc = str(data)
    else:
        images = list(data)
        classes = sorted({c for s in images for c in s.labels})
        multi = any(len(s.labels) != 1 for s in images)
        desc = "in-memory: " + ", ".join(s.name for s in images)[:300]
    present = sorted({c for s in images for c in s.labels})
    if len(present) < 2:
        raise InputError(f"{desc}: need images of at least two classes to train a classifier, found {present}")
    return images, classes, multi, desc


def _base_model(opts: ClassifierTrainOptions, images, dev):
    """(model, card) of ``opts.init`` checked against the data's labels, or (None, None)."""
    if opts.init is None:
        return None, None
    model, base = load_model(opts.init, None, dev)
    if base.task not in ("classifier", "vit"):
        raise InputError(f"'{base.name}' is a {base.task} model, not a classifier")
    unknown = sorted({c for s in images for c in s.labels} - set(base.classes))
    if unknown:
        raise InputError(f"labels {unknown} are not classes of {base.name} ({', '.join(base.classes)})")
    return model, base


def _new_model(opts: ClassifierTrainOptions, classes, multi: bool, dev):
    """A fresh CNN classifier or ViT (``opts.arch``) and its config."""
    if opts.arch == "vit":
        from ..models.vit import ViTConfig, build_vit

        cfg = ViTConfig(classes=tuple(classes), img_size=opts.crop, multilabel=multi, stem=opts.stem)
        return build_vit(cfg).to(dev), cfg
    from ..models.classifier import ClassifierConfig, build_classifier

    cfg = ClassifierConfig(
        classes=tuple(classes),
        widths=tuple(opts.widths),
        se=opts.se,
        multilabel=multi,
        head=opts.head,
        decoder=opts.decoder,
    )
    return build_classifier(cfg).to(dev), cfg


def _card(out, cfg, classes, opts: ClassifierTrainOptions, base) -> ModelCard:
    """The new model's card; a fine-tuned model keeps its base's scales, normalisation and inference settings."""
    card = ModelCard(
        name=Path(out).stem,
        task="vit" if opts.arch == "vit" else "classifier",
        config=cfg.to_dict(),
        classes=list(classes),
        mpp=float(opts.model_mpp),
        params={"input_mpp": float(opts.data_mpp), "tile": 512, "tta": True, "thresholds": [0.5] * len(classes)},
        licence="research use only (inherited from the GlaS training data)",
    )
    if base is not None:
        card.mpp, card.normalisation, card.colors = base.mpp, base.normalisation, base.colors
        card.licence = base.licence
        card.params = {**base.params, "thresholds": [0.5] * len(classes)}
    return card


def _teacher(opts: ClassifierTrainOptions, classes, dev):
    """(model, card) of the ``distill`` teacher in eval mode, or None; InputError when its classes differ."""
    if opts.distill is None:
        return None
    from .loading import load_classifier

    model, card = load_classifier(opts.distill, dev)
    if list(card.classes) != list(classes):
        raise InputError(f"distill teacher {card.name} has classes {card.classes}, the data {list(classes)}")
    if opts.arch == "cnn" and (opts.head != "linear" or opts.decoder):
        raise InputError("distillation needs the linear head and no decoder")
    return model, card


def distill_loss(logits, y, soft, loss_fn, weight: float, multilabel: bool):
    """``(1 - weight) x loss_fn(logits, y) + weight x`` the KL divergence from the teacher's probabilities
    ``soft`` ``(B, K)`` to the student's softmax (multi-label: binary cross-entropy with ``soft``)."""
    import torch.nn.functional as F

    hard = loss_fn(logits, y)
    if multilabel:
        kd = F.binary_cross_entropy_with_logits(logits, soft)
    else:
        kd = F.kl_div(F.log_softmax(logits, 1), soft.clamp_min(1e-6), reduction="batchmean")
    return (1 - weight) * hard + weight * kd


def _step_loss(opts: ClassifierTrainOptions, loss_fn, multi: bool):
    """``loss(model, batch)`` of one step: plain, or distilled when the batch carries teacher probabilities."""

    def step(m, b):
        if len(b) == 3:
            return distill_loss(m(b[0]), b[1], b[2], loss_fn, opts.distill_weight, multi)
        if opts.arch == "vit":
            return loss_fn(m(b[0]), b[1])
        return classifier_loss(m, b[0], b[1], loss_fn, multi)

    return step


@dataclass
class _Run:
    """One training run's data at the model's scale and its held-out (tune) images."""

    opts: ClassifierTrainOptions
    card: ModelCard
    pix: list
    targets: np.ndarray
    fit_i: np.ndarray
    tune_i: np.ndarray
    multi: bool
    rng: np.random.Generator
    dev: object
    teacher: tuple | None = None
    epochs_seen: int = 0

    def batches(self, epoch):
        """``steps_per_epoch`` batches (x, y) or, with a teacher, (x, y, teacher probabilities ``(B, K)``)."""
        import torch

        fit_t = self.targets[self.fit_i]
        weights = _sample_weights(fit_t)
        o = self.opts
        for _ in range(o.steps_per_epoch):
            idx = self.rng.choice(len(self.fit_i), o.batch_size, p=weights)
            crops = np.stack(
                [_augment(_crop(self.pix[self.fit_i[i]], o.crop, self.rng), self.rng, o.stain_jitter) for i in idx]
            )
            x = normalise(crops, self.card).to(self.dev)
            y = torch.from_numpy(fit_t[idx]).to(self.dev)
            y = y if self.multi else y.argmax(1)
            if self.teacher is None:
                yield x, y
                continue
            t_model, t_card = self.teacher
            with torch.no_grad():
                soft = probabilities(t_model(normalise(crops, t_card).to(self.dev)), t_card)
            yield x, y, soft

    def tune_probs(self, model, tta: bool = False, shift: float = 0.0) -> np.ndarray:
        """Probabilities ``(n, K)`` of the tune images; ``shift`` > 0: ``(4 n, K)``, the images as they are
        then three stain-shifted copies (``model_input.stain_shifted`` strength ``shift``)."""
        copies = [(i, 0.0, 0) for i in self.tune_i]
        if shift > 0:
            copies += [(i, shift, 100 * r + j) for r in (1, 2, 3) for j, i in enumerate(self.tune_i)]
        return np.concatenate(
            [
                predict_probs(model, self.card, stain_shifted(self.pix[i], seed, s)[None], tta=tta)
                for i, s, seed in copies
            ]
        )

    def validate(self, model) -> dict:
        """Checkpoint score on the tune images: accuracy - 0.1 x NLL."""
        if not len(self.tune_i):  # nothing held out: the last epoch is the best
            self.epochs_seen += 1
            return {"score": float(self.epochs_seen)}
        p, t = self.tune_probs(model), self.targets[self.tune_i]
        hit = (p * t).sum(1) if not self.multi else np.where(t > 0, p, 1 - p).prod(1)
        nll = float(-np.mean(np.log(np.clip(hit, 1e-6, 1))))
        acc = classification_metrics(p, t, self.card)["accuracy"]
        return {"score": acc - 0.1 * nll, "accuracy": acc, "nll": nll}


def _split_tune(targets: np.ndarray, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(fit, tune) indices: ``n`` stratified held-out images, or all for both when holding them out
    would leave a class without training images."""
    tune_i = _holdout(targets, n, rng) if n else np.zeros(0, int)
    fit_i = np.setdiff1d(np.arange(len(targets)), tune_i)
    if n and len(np.unique(targets[fit_i].argmax(1))) < len(np.unique(targets.argmax(1))):
        fit_i = tune_i = np.arange(len(targets))  # too few images to hold any out
    return fit_i, tune_i


def _tune_thresholds(model, run: _Run, search: bool = True) -> None:
    """Per-class thresholds (``search``; else the card's stay) and tune metrics into the card (with TTA),
    when there are tune images."""
    if not len(run.tune_i):
        return
    shift = run.opts.tune_shift if run.card.in_channels == 3 else 0.0
    p = run.tune_probs(model, tta=True, shift=shift)
    t = np.tile(run.targets[run.tune_i], (len(p) // len(run.tune_i), 1))
    if search:
        run.card.params["thresholds"] = search_thresholds(p, t, run.multi)
    keys = ("accuracy", "balanced_accuracy", "auc", "f1", "n_images")
    m = classification_metrics(p[: len(run.tune_i)], run.targets[run.tune_i], run.card)
    run.card.metrics = {**(run.card.metrics or {}), "tune": {k: m[k] for k in keys}}
    if shift > 0:
        m = classification_metrics(p[len(run.tune_i) :], t[len(run.tune_i) :], run.card)
        run.card.metrics["tune_shifted"] = {**{k: m[k] for k in keys}, "stain_shift": shift}


def _training_record(opts, run: _Run, res, extra: dict) -> dict:
    return {
        "command": extra["command"],
        "data": extra["data"],
        "data_mpp": extra["data_mpp"],
        "seed": opts.seed,
        "init": None if opts.init is None else str(opts.init),
        "epochs": opts.epochs,
        "steps_per_epoch": opts.steps_per_epoch,
        "batch_size": opts.batch_size,
        "crop": opts.crop,
        "arch": opts.arch,
        "loss": opts.loss,
        "lr": opts.lr,
        "stain_jitter": opts.stain_jitter,
        "stem": opts.stem if opts.arch == "vit" else None,
        "distill": None if opts.distill is None else str(opts.distill),
        "distill_weight": opts.distill_weight if opts.distill is not None else None,
        "tune_shift": opts.tune_shift,
        "threshold_folds": opts.threshold_folds,
        "best_epoch": res.best_epoch,
        "seconds": extra["seconds"],
        "device": str(run.dev),
        "fit_images": len(run.fit_i),
        "tune_images": [extra["images"][i].name for i in run.tune_i],
        "history": res.history,
    }


def train_classifier(
    data,
    out,
    options: ClassifierTrainOptions | None = None,
    *,
    device=None,
    progress: ProgressFn | None = None,
    cancel=None,
    command: str = "",
    on_epoch=None,
):
    """Train a classifier on ``data/labels.csv`` (split ``train``) and save weights + card to ``out``.

    ``options`` (:class:`ClassifierTrainOptions`; None: its defaults) -> (model, card).
    ``tune_images`` train images (stratified, chosen by ``seed``) are held out to pick the checkpoint
    (accuracy - 0.1 x NLL) and to search the per-class thresholds (F1); the rest are read at
    ``model_mpp`` (``data_mpp`` µm/px on disk) and sampled class-balanced as random ``crop`` x ``crop``
    crops with flips / 90° turns, stain and brightness jitter. Cosine LR (AdamW).
    ``data``: a labels.csv folder, or a list of :class:`LabelledImage` (in memory: ``image`` set).
    ``init``: a classifier or ViT (name or path) to fine-tune from: its architecture (``arch`` follows
    it), classes, scale, input scale, tile and TTA are kept, so the data's labels must be its classes.
    When holding out ``tune_images`` would leave a class without training images (a few viewer
    annotations), the checkpoint is selected on the training images themselves.
    """
    from ..losses import build_loss

    opts = replace(options) if options is not None else ClassifierTrainOptions()
    rng = seed_everything(opts.seed)
    dev = choose_device(device)
    images, classes, multi, data_desc = _training_images(data)
    model, base = _base_model(opts, images, dev)
    if base is not None:
        arch = "vit" if base.task == "vit" else "cnn"
        opts = replace(opts, arch=arch)
        classes, multi = list(base.classes), bool(base.config.get("multilabel"))
    opts.lr = opts.lr or (1e-3 if opts.arch == "vit" else 3e-3)
    if base is not None:
        cfg = model.cfg
        opts.crop = int(base.config.get("img_size", opts.crop)) if opts.arch == "vit" else opts.crop
    else:
        model, cfg = _new_model(opts, classes, multi, dev)
    # the images' µm/px: given (--mpp, dataset.json), else what the base was trained on, else GlaS's
    base_mpp = (base.params or {}).get("input_mpp") if base is not None else None
    opts.data_mpp = float(opts.data_mpp or base_mpp or GLAS_MPP)
    data_mpp = opts.data_mpp
    card = _card(out, cfg, classes, opts, base)
    targets = targets_of(images, classes)
    fit_i, tune_i = _split_tune(targets, opts.tune_images, rng)
    pix = [
        to_model_scale(s.image if s.image is not None else open_slide(s.path), card, s.mpp or data_mpp) for s in images
    ]
    run = _Run(opts, card, pix, targets, fit_i, tune_i, multi, rng, dev, _teacher(opts, classes, dev))
    loss_fn = build_loss(opts.loss, multi)
    tcfg = TrainConfig(epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed, device=str(dev))

    def checkpoint(m, row):
        if opts.checkpoints:
            card.training = {"command": command, "checkpoint_epoch": row["epoch"], "partial": True}
            save_model(m, card, Path(str(out) + ".checkpoint"))

    t0 = time.time()
    step_loss = _step_loss(opts, loss_fn, multi)
    steps = opts.steps_per_epoch
    res = fit(model, step_loss, run.batches, run.validate, tcfg, steps, progress, cancel, on_epoch, checkpoint)
    model.load_state_dict(res.best_state)
    model.eval()
    if opts.threshold_folds > 1:
        fold_thresholds(images, run, train_classifier, progress, cancel)
    _tune_thresholds(model, run, search=opts.threshold_folds <= 1)
    extra = {"command": command, "data": data_desc, "data_mpp": data_mpp, "images": images}
    card.training = _training_record(opts, run, res, {**extra, "seconds": round(time.time() - t0, 1)})
    save_model(model, card, out)
    return model, card
