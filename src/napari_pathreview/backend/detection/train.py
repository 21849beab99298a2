"""Training the point detector: :class:`DetectorTrainOptions` (one field per ``pathreview train
detector`` option), the loss, and :func:`train_detector`, which fits on a points dataset or on viewer
annotations, selects the epoch and the decoding on held-out tune images, and writes weights + card.

Distances (``radius_um``, ``target_sigma_um``) are µm; crops are pixels at the model's mpp.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..datasets import dataset_mpp, load_points_dataset, rescale_points_samples
from ..errors import InputError, ProgressFn
from ..points import point_targets
from ..train import TrainConfig, check_new_architecture, fit, seed_everything
from ..weights import ModelCard, choose_device, class_colors, load_model, resolve, save_model
from .data import CRCHISTO_MPP, CropAugment, _crop_batches, _to_tensors
from .evaluate import tune_params
from .few_shot import ClassAnchor, few_shot_options, is_few_shot
from .maps import DetectParams, normalise


@dataclass
class DetectorTrainOptions:
    """Options of :func:`train_detector` (defaults: ``pathreview train detector``'s).

    ``init``: weights to fine-tune from (name or path), else from scratch; ``widths``: encoder channels of
    a model trained from scratch (default ``DetectorConfig``'s). ``classes``: what the labels of in-memory
    samples index (default: ``init``'s). ``mpp``: the µm per pixel of a dataset folder's images (None: at
    the model's scale; CRCHisto's 0.55 from scratch); a fine-tune resamples them to ``init``'s scale, a
    model from scratch is trained at theirs.
    ``tune_images``: training images (chosen by ``seed``) held out to select the checkpoint and the
    decoding; ``radius_um``: match radius of that selection. ``checkpoints``: also write the best-so-far
    weights to ``OUT.checkpoint.*`` during training. ``lr``: learning rate (default ``TrainConfig.lr``;
    ~10x less to fine-tune). ``target_sigma_um``: sigma (µm) of the Gaussian centre target (default:
    ``init``'s, else 2 model pixels); ``target_crowding``: cap each cell's sigma at this fraction of its
    nearest-neighbour distance (``point_targets``' ``crowding``; default: ``init``'s, else 0 = off).
    ``ema``: decay of a per-step moving average of the weights that is validated and kept (0: off).
    ``amp``: bfloat16 autocast in the training passes (``TrainConfig.amp``). ``stain_norm``: scale every
    image's hematoxylin to the fitted images' median level (``stain``; a fine-tune: to its ``init``'s
    reference) and record it as ``stain_reference`` in the card, so inference does the same; None: as
    ``init`` does. ``obj_loss``: ``"bce"`` or ``"focal"`` (see :func:`detector_loss`; default: ``init``'s,
    else ``"bce"``). ``deepen``: give ``init`` one more, coarser level of this many channels before
    training (``models.detector.deepen_detector``: the same outputs at first, twice the context).
    ``crop``: side in pixels of the training crops; ``crops_per_image``: crops per fitted image and
    epoch; ``scale_jitter``: random zoom of each crop, up to this fraction either way (0: none; see
    ``data._crop_batches``). ``stain_jitter`` / ``blur`` (max sigma, model pixels) / ``jpeg_quality``
    (lowest quality; 0: off): the crops' ``data.CropAugment``. ``extra_points``: a points dataset folder
    whose ``train`` images are fitted for detection only (every cell's class ignored: objectness loss
    only), resampled from its ``dataset.json`` mpp; never tuned on. ``epochs`` / ``crops_per_image`` None: 30 / 4, or a few-shot fine-tune's.

    ``few_shot``: fine-tune ``init`` the few-shot way (``few_shot.FewShotRecipe``: its epochs, crops, lr;
    ``init``'s batch-norm statistics and decoding kept; class probabilities distilled from ``init``);
    None: when ``init`` is given and the data has at most ``few_shot.FEW_SHOT_IMAGES`` images.
    ``freeze_bn`` / ``distill`` (weight of the KL to ``init``'s class probabilities): None: the
    few-shot recipe's, else off; so is ``amp`` (None: on for a few-shot fine-tune, else off).
    """

    epochs: int | None = None
    seed: int = 0
    device: str | None = None
    init: str | Path | None = None
    classes: list | None = None
    mpp: float | None = None
    crops_per_image: int | None = None
    crop: int = 256
    batch_size: int = 8
    tune_images: int = 8
    radius_um: float = 3.3
    checkpoints: bool = False
    lr: float | None = None
    target_sigma_um: float | None = None
    target_crowding: float | None = None
    ema: float = 0.0
    amp: bool | None = None
    widths: tuple | None = None
    stain_norm: bool | None = None
    obj_loss: str | None = None
    deepen: int | None = None
    scale_jitter: float = 0.0
    stain_jitter: float = 0.05
    blur: float = 0.0
    jpeg_quality: int = 0
    extra_points: str | Path | None = None
    few_shot: bool | None = None
    freeze_bn: bool | None = None
    distill: float | None = None


def detector_loss(model, batch, class_weights, obj_loss: str = "bce", anchor=None):
    """Objectness: ``"bce"``, BCE against the Gaussian targets weighted towards centres, or ``"focal"``,
    CenterNet's penalty-reduced focal loss (each centre pixel a positive, the Gaussian lowering the penalty
    of the pixels around it; summed and divided by the number of centres); classes: weighted CE near
    labelled centres (pixels without a labelled nearest cell are ignored; no term when the batch has none,
    e.g. nuclei annotated without types); ``anchor`` (``few_shot.ClassAnchor``): plus its distillation
    term on the class logits."""
    import torch
    import torch.nn.functional as F

    x, obj, cls = batch
    out = {k: v.float() for k, v in model(x).items()}  # float32 losses under autocast
    if obj_loss == "focal":
        logit = out["objectness"]
        p = torch.sigmoid(logit)
        pos = obj >= 0.999
        l_pos = -(F.logsigmoid(logit) * (1 - p) ** 2)[pos].sum()
        l_neg = -(F.logsigmoid(-logit) * p**2 * (1 - obj) ** 4)[~pos].sum()
        l_obj = (l_pos + l_neg) / pos.sum().clamp(min=1)
    else:
        w = 1.0 + 9.0 * obj
        l_obj = F.binary_cross_entropy_with_logits(out["objectness"], obj, weight=w)
    loss = l_obj
    if bool((cls >= 0).any()):
        loss = loss + 0.5 * F.cross_entropy(out["class_logits"], cls, weight=class_weights, ignore_index=-1)
    if anchor is not None:
        loss = loss + anchor.loss(x, out["class_logits"], obj)
    return loss


def _deepened(model, card, samples, channels: int):
    """``deepen_detector`` with the coarsest skip's per-channel mean / std over (up to) 20 training images."""
    import torch

    from ..models.detector import deepen_detector, encode

    model = model.float().eval()
    s = model.stride
    feats = []
    with torch.no_grad():
        for smp in samples[:20]:
            h, w = (smp.image.shape[0] // s) * s, (smp.image.shape[1] // s) * s
            x = (
                torch.from_numpy(normalise(smp.image[:h, :w], card))
                .permute(2, 0, 1)[None]
                .to(next(model.parameters()).device)
            )
            f = encode(model.down, x)[-1]
            feats.append(f.permute(1, 0, 2, 3).reshape(f.shape[1], -1))
    f = torch.cat(feats, 1)
    return deepen_detector(model, channels, f.mean(1).cpu(), f.std(1).cpu()).to(f.device)


def _training_samples(data, o: DetectorTrainOptions):
    """-> (samples, class names, a description for the card) of a dataset folder or in-memory samples."""
    if isinstance(data, (str, Path)):
        train, classes = load_points_dataset(data, "train")
        if not classes and o.init is not None:  # nuclei without types: detection-only, init's classes
            classes = list(resolve(o.init, "detector")[1].classes)
        return train, classes, str(data)
    train = list(data)
    if not train:
        raise InputError("no annotated images to train on")
    classes = o.classes
    if classes is None:
        if o.init is None:
            raise InputError("in-memory training samples need `classes` or an `init` model")
        classes = list(resolve(o.init, "detector")[1].classes)
    return train, classes, "in-memory: " + ", ".join(s.name for s in train)[:300]


def _at_model_scale(train, data, data_mpp: float | None, model_mpp: float):
    """A dataset folder's samples resampled from ``data_mpp`` (µm/px; None: already at the model's) to
    the model's ``model_mpp``; in-memory samples (the viewer's) are at the model's scale already."""
    if data_mpp is None or not isinstance(data, (str, Path)):
        return train
    return rescale_points_samples(train, data_mpp / model_mpp)


def _start_model(o: DetectorTrainOptions, data, classes, dev):
    """-> (model, base card or None, DetectorConfig, model mpp): ``init``'s weights, else a new network."""
    from ..models.detector import DetectorConfig, build_detector

    check_new_architecture(o.init, o.widths)
    if o.deepen is not None and (o.init is None or o.deepen < 1):
        raise InputError("--deepen adds a level to the model given by --init: give both, with a channel count >= 1")
    if o.init is None:
        cfg = DetectorConfig(classes=tuple(classes), **({"widths": tuple(o.widths)} if o.widths else {}))
        return build_detector(cfg).to(dev), None, cfg, o.mpp or CRCHISTO_MPP
    model, base = load_model(o.init, "detector", dev)
    if list(base.classes) != list(classes):
        raise InputError(f"{data}: classes {classes} differ from the model's {base.classes}")
    return model, base, DetectorConfig.from_dict(base.config), base.mpp


def _n_tune(n_images: int, tune_images: int) -> int:
    """How many of ``n_images`` training images are held out to tune on (0: one image, tuned on itself)."""
    return min(tune_images, max(1, n_images // 5)) if n_images > 1 else 0


def _recipe(o: DetectorTrainOptions, base, n_images: int) -> DetectorTrainOptions:
    """``o`` with the choices left to ``init`` (None) filled: a fine-tune keeps the stain normalisation,
    targets and objectness loss its base learnt with; from scratch: off, 2 px, no cap, ``"bce"``. A
    few-shot fine-tune of ``n_images`` takes ``few_shot.FewShotRecipe``'s schedule; anything else 30
    epochs of 4 crops per image, batch-norm statistics learnt, no distillation."""
    few = is_few_shot(o.init, n_images, o.few_shot)
    if few:
        o = few_shot_options(replace(o, few_shot=True), max(1, n_images - _n_tune(n_images, o.tune_images)))
    o = replace(
        o,
        few_shot=few,
        epochs=o.epochs if o.epochs is not None else 30,
        crops_per_image=o.crops_per_image if o.crops_per_image is not None else 4,
        freeze_bn=bool(o.freeze_bn),
        amp=bool(o.amp),
        distill=float(o.distill or 0.0),
    )
    trained = (base.training or {}) if base is not None else {}
    stain_norm = o.stain_norm
    if stain_norm is None:
        stain_norm = base is not None and (base.params or {}).get("stain_reference") is not None
    o = replace(
        o,
        stain_norm=stain_norm,
        target_sigma_um=o.target_sigma_um if o.target_sigma_um is not None else trained.get("target_sigma_um"),
        target_crowding=o.target_crowding if o.target_crowding is not None else trained.get("target_crowding") or 0.0,
        obj_loss=o.obj_loss if o.obj_loss is not None else trained.get("obj_loss") or "bce",
    )
    if o.obj_loss not in ("bce", "focal"):
        raise InputError(f"objectness loss must be 'bce' or 'focal', got {o.obj_loss!r}")
    if not 0.0 <= o.scale_jitter < 0.5:
        raise InputError(f"scale jitter must be a fraction from 0 up to 0.5, got {o.scale_jitter!r}")
    if not 0.0 <= o.stain_jitter < 1.0:
        raise InputError(f"stain jitter must be a fraction from 0 up to 1 (e.g. 0.2), got {o.stain_jitter!r}")
    if not 0.0 <= o.blur <= 5.0:
        raise InputError(f"blur must be a sigma in pixels from 0 (off) to 5, e.g. 1.5, got {o.blur!r}")
    if o.jpeg_quality and not 1 <= o.jpeg_quality <= 90:
        raise InputError(f"JPEG quality must be 0 (off) or from 1 to 90, e.g. 30, got {o.jpeg_quality!r}")
    return o


def _extra_samples(o: DetectorTrainOptions, model_mpp: float) -> list:
    """``o.extra_points``' ``train`` images at the model's mpp, every cell without a class."""
    if o.extra_points is None:
        return []
    if o.stain_norm:
        raise InputError("--extra-points with --stain-norm is not supported: train without stain normalisation")
    mpp = dataset_mpp(o.extra_points)
    if mpp is None:
        raise InputError(
            f'{o.extra_points}: extra points need their scale: write a dataset.json {{"mpp": X}} in that folder'
        )
    extra, _ = load_points_dataset(o.extra_points, "train")
    extra = rescale_points_samples(extra, mpp / model_mpp)
    return [replace(s, labels=-np.ones(len(s.yx), np.int64)) for s in extra]


def _split_tune(train: list, o: DetectorTrainOptions, base, rng):
    """-> (tune, fit_set, hematoxylin reference or None): ``tune_images`` held out by the seeded ``rng``,
    both stain-normalised when ``o.stain_norm``."""
    order = rng.permutation(len(train))
    n_tune = _n_tune(len(train), o.tune_images)
    tune = [train[i] for i in order[:n_tune]] or train
    fit_set = [train[i] for i in order[n_tune:]] or train
    if not o.stain_norm:
        return tune, fit_set, None
    from ..stain import normalised_training_sets

    reference, fit_set, tune = normalised_training_sets(
        fit_set, tune, reference=(base.params or {}).get("stain_reference") if base is not None else None
    )
    return tune, fit_set, reference


def _new_card(out, cfg, classes, mpp, base, reference) -> ModelCard:
    """The card being trained: default decoding, ``base``'s normalisation, colours and decoding on a fine-tune."""
    card = ModelCard(
        name=Path(out).stem,
        task="detector",
        config=cfg.to_dict(),
        classes=list(classes),
        mpp=mpp,
        colors=class_colors(classes),
        params=DetectParams().__dict__.copy(),
        licence="research use only (inherited from the training data's licence)",
    )
    if base is not None:  # a fine-tuned model keeps its base's input normalisation, colours and decoding
        card.normalisation, card.colors = base.normalisation, base.colors
        card.licence = base.licence or card.licence
        card.params.update(base.params or {})
    card.params["stain_reference"] = reference  # tuning and validation below see normalised images
    return card


def _train_config(o: DetectorTrainOptions, dev) -> TrainConfig:
    """``train.fit``'s settings from the filled options (``lr`` None: ``TrainConfig``'s default)."""
    lr = {"lr": o.lr} if o.lr else {}
    return TrainConfig(
        epochs=o.epochs,
        batch_size=o.batch_size,
        seed=o.seed,
        device=str(dev),
        ema=o.ema,
        amp=o.amp,
        freeze_bn=o.freeze_bn,
        **lr,
    )


def _record(o: DetectorTrainOptions, command, data_desc, lr, sigma_um, res, seconds, dev, fit_set, tune) -> dict:
    """``card.training``: what was run, on what, and how it went."""
    return {
        "command": command,
        "data": data_desc,
        "seed": o.seed,
        "epochs": o.epochs,
        "lr": lr,
        "ema": o.ema,
        "amp": o.amp,
        "init": str(o.init) if o.init is not None else None,
        "target_sigma_um": sigma_um,
        "target_crowding": o.target_crowding,
        "stain_norm": bool(o.stain_norm),
        "obj_loss": o.obj_loss,
        "deepen": o.deepen,
        "crop": o.crop,
        "crops_per_image": o.crops_per_image,
        "scale_jitter": o.scale_jitter,
        "stain_jitter": o.stain_jitter,
        "blur": o.blur,
        "jpeg_quality": o.jpeg_quality,
        "extra_points": str(o.extra_points) if o.extra_points is not None else None,
        "extra_images": [s.name for s in fit_set if s.split == "extra"],
        "few_shot": o.few_shot,
        "freeze_bn": o.freeze_bn,
        "distill": o.distill,
        "best_epoch": res.best_epoch,
        "seconds": seconds,
        "device": str(dev),
        "fit_images": len(fit_set),
        "tune_images": [s.name for s in tune],
        "history": res.history,
    }


def train_detector(
    data,
    out: str | Path,
    options: DetectorTrainOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel=None,
    on_epoch=None,
    command: str = "",
):
    """Train the point detector and save weights + card to ``out`` (``OUT.safetensors`` + ``OUT.json``).

    ``data``: a points dataset folder (its ``train`` split), or a list of ``PointsSample`` already at the
    model's mpp (annotations from the viewer) whose labels index ``options.classes``. ``options.tune_images``
    training images are held out to select the checkpoint and the decoding threshold; the ``validation``
    split is only evaluated, never tuned on. ``progress`` / ``cancel`` / ``on_epoch``: see ``train.fit``;
    ``command``: recorded in the card. -> (model, card).
    """
    import torch

    o = options or DetectorTrainOptions()
    rng = seed_everything(o.seed)
    dev = choose_device(o.device)
    train, classes, data_desc = _training_samples(data, o)
    model, base, cfg, mpp = _start_model(o, data, classes, dev)
    train = _at_model_scale(train, data, o.mpp, mpp)
    o = _recipe(o, base, len(train))
    tune, fit_set, reference = _split_tune(train, o, base, rng)
    fit_set = fit_set + [replace(s, split="extra") for s in _extra_samples(o, mpp)]
    if o.deepen:
        model = _deepened(model, base, fit_set, o.deepen)
        cfg = model.cfg
    model = model.to(memory_format=torch.channels_last)
    anchor = ClassAnchor(model, o.distill) if o.distill > 0 else None
    sigma_px = o.target_sigma_um / mpp if o.target_sigma_um else 2.0
    targets = [
        point_targets(s.image.shape[:2], s.yx, s.labels, sigma=sigma_px, crowding=o.target_crowding) for s in fit_set
    ]
    freq = np.bincount(np.concatenate([s.labels[s.labels >= 0] for s in fit_set]), minlength=len(classes))
    cw = torch.tensor((freq.sum() / np.maximum(freq, 1) / len(classes)) ** 0.5, dtype=torch.float32, device=dev)
    card = _new_card(out, cfg, classes, mpp, base, reference)
    steps = max(1, (len(fit_set) * o.crops_per_image) // o.batch_size)
    tcfg = _train_config(o, dev)

    def batches(epoch):
        n = steps * o.batch_size
        aug = CropAugment(stain=o.stain_jitter, blur=o.blur, jpeg=o.jpeg_quality)
        for b in _crop_batches(fit_set, targets, rng, n, o.crop, o.batch_size, freq, o.scale_jitter, aug):
            yield _to_tensors(b, card, dev)

    def validate(m):  # each epoch at its best threshold: the objectness scale drifts while training
        p = DetectParams.from_card(card)
        r = tune_params(m, card, tune, o.radius_um, min_distances=(p.min_distance_um,), smooths=(p.smooth_um,))
        return {k: r[k] for k in ("score", "det_f1", "weighted_f1", "mF1", "threshold")}

    def checkpoint(m, row):
        if o.checkpoints:
            card.training = {"command": command, "checkpoint_epoch": row["epoch"], "partial": True}
            save_model(m, card, Path(str(out) + ".checkpoint"))

    t0 = time.time()
    loss = lambda m, b: detector_loss(m, b, cw, o.obj_loss, anchor)
    res = fit(model, loss, batches, validate, tcfg, steps, progress, cancel, on_epoch, checkpoint)
    model.load_state_dict(res.best_state)
    model.eval()
    if not o.few_shot:  # a few-shot fine-tune keeps init's decoding: one field is too few to re-tune it on
        params = tune_params(model, card, tune, o.radius_um)
        card.params.update({k: params[k] for k in ("threshold", "min_distance_um", "smooth_um")})
        for rule in ("adaptive", "adapt_bn"):  # per-image rules were fitted around the base's threshold
            card.params[rule] = None
    seconds = round(time.time() - t0, 1)
    card.training = _record(o, command, data_desc, tcfg.lr, round(sigma_px * mpp, 3), res, seconds, dev, fit_set, tune)
    save_model(model, card, out)
    return model, card
