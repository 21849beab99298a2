"""Image classification: labels.csv datasets, model-scale input, tiled + TTA prediction, training, evaluation.

Pixels vs microns: a classifier works at its card's ``mpp``. An input at ``mpp`` µm/px is resampled by
``mpp / card.mpp``; an input without a known mpp is assumed to be at ``card.params["input_mpp"]`` (the
training data's scale: GlaS 0.62 µm/px). Images whose model-scale side exceeds ``card.params["tile"]``
are classified (and explained, see ``backend.explain``) tile by tile; tile probabilities are averaged.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, ProgressFn, check_cancel, report

GLAS_MPP = 0.62  # µm/px of the GlaS images (20x, rescaled from 0.465 µm by the challenge organisers)
_LABEL_COLUMNS = ("labels", "label", "grade", "class")


@dataclass
class LabelledImage:
    """One dataset image: ``labels`` are class names (several for multi-label rows ``a;b``).

    In-memory images (annotations from the viewer) carry their pixels in ``image`` (an ``(H, W, C)`` array
    or a Slide) at ``mpp`` µm/px (None: the training data's); ``path`` is then not read.
    """

    name: str
    path: Path
    split: str
    labels: list
    image: object = None
    mpp: float | None = None


def read_labels_csv(root: str | Path) -> tuple[list[LabelledImage], list[str], bool]:
    """Read ``root/labels.csv`` (``image,split,<label column>``; ``a;b`` = several labels).

    Returns (images, sorted class names, multilabel). The label column is the first of
    labels/label/grade/class present, else the third column.
    """
    root = Path(root)
    path = root / "labels.csv"
    if not path.is_file():
        raise InputError(f"{root}: no labels.csv (expected image,split,label; see docs/data-formats.md)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "image" not in rows[0]:
        raise InputError(f"{path}: needs a header with an 'image' column")
    cols = list(rows[0])
    col = next((c for c in _LABEL_COLUMNS if c in cols), None) or (cols[2] if len(cols) > 2 else None)
    if col is None:
        raise InputError(f"{path}: no label column (expected image,split,label)")
    out = []
    for r in rows:
        labels = [s.strip() for s in (r[col] or "").split(";") if s.strip()]
        out.append(LabelledImage(r["image"], _find_image(root / "images", r["image"]), r.get("split", ""), labels))
    classes = sorted({c for s in out for c in s.labels})
    multilabel = any(len(s.labels) != 1 for s in out)
    return out, classes, multilabel


def _find_image(folder: Path, name: str) -> Path:
    for ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        if (folder / f"{name}{ext}").is_file():
            return folder / f"{name}{ext}"
    if (folder / name).is_file():
        return folder / name
    raise InputError(f"{folder}: no image file for '{name}'")


def load_split(root, split: str | None):
    """(images of ``split`` (all when None), classes, multilabel)."""
    images, classes, multi = read_labels_csv(root)
    if split:
        chosen = [s for s in images if s.split == split]
        if not chosen:
            splits = sorted({s.split for s in images})
            raise InputError(f"{root}: no images in split '{split}'; splits: {', '.join(splits)}")
        images = chosen
    return images, classes, multi


def targets_of(images: list[LabelledImage], classes: list[str]) -> np.ndarray:
    """``(N, K)`` 0/1 float32 label matrix."""
    t = np.zeros((len(images), len(classes)), np.float32)
    for i, s in enumerate(images):
        for c in s.labels:
            t[i, classes.index(c)] = 1
    return t


# ---------------------------------------------------------------- input at the model's scale


def to_model_scale(image, card, mpp: float | None = None) -> np.ndarray:
    """An ``(H, W, C)`` array or a Slide -> float32 ``(h, w, C)`` in [0, 1] at the card's mpp.

    ``mpp``: µm per level-0 pixel of ``image`` (default: the slide's, else ``card.params["input_mpp"]``).
    A pyramid is read at its coarsest level that is still at least as fine as the model's scale.
    """
    from .slides import Slide, check_model_scale, to_rgb_uint8

    name = (image.path or image.name or "image") if isinstance(image, Slide) else "image"
    if isinstance(image, Slide):
        mpp = mpp or image.mpp
        level = 0
        if mpp:  # the coarsest pyramid level still at least as fine as the model's scale
            level = max(i for i, d in enumerate(image.downsamples) if i == 0 or mpp * d <= card.mpp * 1.05)
            mpp = mpp * image.downsamples[level]
        image = np.asarray(image.levels[level])
    a = np.asarray(image)
    if card.in_channels == 3:
        a = to_rgb_uint8(a, "image")
    elif a.ndim != 3 or a.shape[2] != card.in_channels:
        raise InputError(f"image has shape {a.shape}; this model needs {card.in_channels} channels")
    a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else max(1.0, float(a.max())))
    factor = check_model_scale(input_mpp(card, mpp), card.mpp, name)
    if abs(factor - 1) > 1e-3:
        from skimage.transform import resize

        shape = (max(1, round(a.shape[0] * factor)), max(1, round(a.shape[1] * factor)))
        a = resize(a, shape, order=1, anti_aliasing=factor < 1, preserve_range=True).astype(np.float32)
    return a


def input_mpp(card, mpp: float | None) -> float:
    """The µm/px assumed for an input: ``mpp`` when known, else the card's training-data scale."""
    return float(mpp) if mpp else float(card.params.get("input_mpp") or card.mpp)


def normalise(batch_hwc: np.ndarray, card):
    """float ``(B, H, W, C)`` in [0, 1] -> normalised torch ``(B, C, H, W)``."""
    import torch

    mean = np.asarray(card.normalisation["mean"], np.float32)
    std = np.asarray(card.normalisation["std"], np.float32)
    x = (np.asarray(batch_hwc, np.float32) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def tile_side(card) -> int:
    """Model-scale side of one input tile: the ViT's fixed size, else ``params["tile"]`` (512)."""
    if card.task == "vit":
        return int(card.config.get("img_size", 224))
    return int(card.params.get("tile", 512))


def model_tiles(shape_hw, card):
    """Tiles ``backend.tiling.Tile`` covering a model-scale image (one tile when it fits)."""
    from .tiling import Tile, plan_tiles

    side = tile_side(card)
    h, w = shape_hw
    if card.task != "vit" and h <= side and w <= side:
        return [Tile(0, 0, h, w, 0)]
    return plan_tiles((h, w), side, side // 4)


def pad_for_model(crop: np.ndarray, card) -> np.ndarray:
    """Reflect-pad ``(h, w, C)`` at bottom/right to the ViT size or a multiple of 16 (CNN stride)."""
    from .tiling import pad_to

    h, w = crop.shape[:2]
    if card.task == "vit":
        side = tile_side(card)
        return pad_to(crop, side, side)[0]
    m = 2 ** len(card.config.get("widths", (0, 0, 0, 0)))
    return pad_to(crop, -(-h // m) * m, -(-w // m) * m)[0]


def probabilities(logits, card):
    """torch logits ``(B, K)`` -> probabilities (sigmoid for multi-label, else softmax)."""
    import torch

    return torch.sigmoid(logits) if card.config.get("multilabel") else torch.softmax(logits, 1)


def predict_probs(model, card, images_hwc: np.ndarray, tta: bool = False, cancel=None) -> np.ndarray:
    """Class probabilities ``(B, K)`` for model-scale images ``(B, H, W, C)`` (same size), float [0, 1].

    Tile probabilities are averaged; ``tta``: also over the 4 flips (none, horizontal, vertical, both).
    """
    import torch

    images_hwc = np.asarray(images_hwc, np.float32)
    dev = next(model.parameters()).device
    tiles = model_tiles(images_hwc.shape[1:3], card)
    flips = [(), (2,), (1,), (1, 2)] if tta else [()]
    acc = 0.0
    with torch.no_grad():
        for t in tiles:
            check_cancel(cancel)
            crops = np.stack([pad_for_model(im[t.y0 : t.y1, t.x0 : t.x1], card) for im in images_hwc])
            for f in flips:
                c = np.flip(crops, f) if f else crops
                acc = acc + probabilities(model(normalise(c, card).to(dev)), card).float().cpu().numpy()
    return acc / (len(tiles) * len(flips))


def decide(probs: np.ndarray, card) -> np.ndarray:
    """0/1 decisions ``(B, K)`` from probabilities with the card's per-class thresholds.

    Multi-label: ``p_k >= t_k``. Single-label: one class per image, ``argmax_k (p_k - t_k)`` (for two
    classes this is ``p_1 >= t_1`` with ``t_0 = 1 - t_1``).
    """
    probs = np.atleast_2d(probs)
    t = np.asarray(card.params.get("thresholds") or [0.5] * probs.shape[1], np.float32)
    if card.config.get("multilabel"):
        return (probs >= t).astype(np.int64)
    out = np.zeros(probs.shape, np.int64)
    out[np.arange(len(probs)), np.argmax(probs - t, 1)] = 1
    return out


# ---------------------------------------------------------------- metrics and threshold search


def binary_auc(scores: np.ndarray, target: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count half); None when one class is absent."""
    scores, target = np.asarray(scores, np.float64), np.asarray(target).astype(bool)
    pos, neg = scores[target], scores[~target]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _prf(pred: np.ndarray, t: np.ndarray) -> dict:
    tp, fp, fn = int((pred & t).sum()), int((pred & ~t).sum()), int((~pred & t).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": int(t.sum())}


def classification_metrics(probs: np.ndarray, targets: np.ndarray, card) -> dict:
    """accuracy, balanced_accuracy, auc, f1 and per_class {precision, recall, f1, support, auc}.

    Binary single-label: ``auc`` and ``f1`` are those of the second (positive) class; otherwise macro
    means. Multi-label accuracy is the exact-match ratio.
    """
    classes = list(card.classes)
    pred = decide(probs, card).astype(bool)
    t = np.asarray(targets) > 0.5
    per = {}
    for k, c in enumerate(classes):
        per[c] = {**_prf(pred[:, k], t[:, k]), "auc": binary_auc(probs[:, k], t[:, k])}
    recalls = [per[c]["recall"] for c in classes if per[c]["support"]]
    aucs = [per[c]["auc"] for c in classes if per[c]["auc"] is not None]
    binary = len(classes) == 2 and not card.config.get("multilabel")
    return {
        "accuracy": float(np.mean(np.all(pred == t, 1))),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "auc": per[classes[1]]["auc"] if binary else (float(np.mean(aucs)) if aucs else None),
        "f1": per[classes[1]]["f1"] if binary else float(np.mean([per[c]["f1"] for c in classes])),
        "per_class": per,
        "n_images": int(len(t)),
    }


def search_thresholds(probs: np.ndarray, targets: np.ndarray, multilabel: bool) -> list[float]:
    """Per-class threshold maximising that class' F1 on validation; ties -> the one nearest 0.5.

    Binary single-label: only the positive class is searched and ``t_0 = 1 - t_1`` (see :func:`decide`).
    """
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    t = np.asarray(targets) > 0.5
    k_all = range(probs.shape[1]) if (multilabel or probs.shape[1] != 2) else [1]
    out = [0.5] * probs.shape[1]
    for k in k_all:
        f1 = np.array([_prf(probs[:, k] >= g, t[:, k])["f1"] for g in grid])
        best = np.flatnonzero(f1 >= f1.max() - 1e-9)
        out[k] = float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])
    if not multilabel and probs.shape[1] == 2:
        out[0] = round(1 - out[1], 2)
    return out


# ---------------------------------------------------------------- training


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
    from .tiling import pad_to

    img = pad_to(img, side, side)[0]
    y = int(rng.integers(img.shape[0] - side + 1))
    x = int(rng.integers(img.shape[1] - side + 1))
    return img[y : y + side, x : x + side]


def _augment(crop: np.ndarray, rng) -> np.ndarray:
    from .augment import brightness_contrast, hed_jitter, random_dihedral

    (crop,) = random_dihedral([crop], rng)
    if crop.shape[2] == 3:
        crop = hed_jitter(crop, rng, sigma=0.08, bias=0.03)
    return brightness_contrast(crop, rng, b=0.08, c=0.15)


def _sample_weights(targets: np.ndarray) -> np.ndarray:
    """Balanced sampling: each image weighted by the inverse frequency of its rarest label."""
    freq = targets.sum(0) / len(targets)
    w = np.array([1.0 / freq[row > 0].min() if row.any() else 1.0 for row in targets])
    return w / w.sum()


def classifier_loss(model, x, y, loss_fn, multilabel: bool, recon_weight: float = 10.0):
    """Loss on a batch: x ``(B, C, H, W)``; y ``(B, K)`` 0/1 (multi-label) or ``(B,)`` indices."""
    from .losses import arcface_loss, dual_loss
    from .models.classifier import ArcFaceHead

    f = model.forward_features(x)
    pooled = model.drop(model.flatten(model.pool(f)))
    if isinstance(model.head, ArcFaceHead):
        loss = arcface_loss(model.head.cosine(pooled), y, model.head.s, model.head.m)
    else:
        loss = loss_fn(model.head(pooled), y)
    if model.decoder is not None:
        loss = dual_loss(loss, model.reconstruct(f, x.shape[-2:]), x, recon_weight)
    return loss


def train_classifier(
    data,
    out,
    epochs: int = 30,
    seed: int = 0,
    device=None,
    crop: int = 192,
    batch_size: int = 16,
    steps_per_epoch: int = 16,
    data_mpp: float = GLAS_MPP,
    model_mpp: float = 2 * GLAS_MPP,
    tune_images: int = 10,
    lr: float | None = None,
    widths=(16, 32, 64, 128),
    se: bool = False,
    loss: str = "ce",
    head: str = "linear",
    decoder: bool = False,
    arch: str = "cnn",
    progress: ProgressFn | None = None,
    cancel=None,
    command: str = "",
    on_epoch=None,
    checkpoints: bool = False,
    init: str | Path | None = None,
):
    """Train a classifier on ``data/labels.csv`` (split ``train``) and save weights + card to ``out``.

    ``tune_images`` train images (stratified, chosen by ``seed``) are held out to pick the checkpoint
    (accuracy - 0.1 x NLL) and to search the per-class thresholds (F1); the rest are read at
    ``model_mpp`` (``data_mpp`` µm/px on disk) and sampled class-balanced as random ``crop`` x ``crop``
    crops with flips / 90° turns, stain and brightness jitter. Cosine LR (AdamW).
    ``arch="vit"``: a small ViT (``models.vit``) on ``crop`` x ``crop`` inputs instead of the CNN.
    ``lr``: default 3e-3 (CNN) or 1e-3 (ViT).
    ``data``: a labels.csv folder, or a list of :class:`LabelledImage` (in memory: ``image`` set).
    ``init``: a classifier or ViT (name or path) to fine-tune from: its architecture (``arch`` follows
    it), classes, scale, input scale, tile and TTA are kept, so the data's labels must be its classes.
    When holding out ``tune_images`` would leave a class without training images (a few viewer
    annotations), the checkpoint is selected on the training images themselves.
    """
    import torch

    from .losses import build_loss
    from .models.classifier import ClassifierConfig, build_classifier
    from .slides import open_slide
    from .train import TrainConfig, fit, seed_everything
    from .weights import ModelCard, choose_device, load_model, save_model

    rng = seed_everything(seed)
    dev = choose_device(device)
    if isinstance(data, (str, Path)):
        images, classes, multi = load_split(data, "train")
        data_desc = str(data)
    else:
        images = list(data)
        classes = sorted({c for s in images for c in s.labels})
        multi = any(len(s.labels) != 1 for s in images)
        data_desc = "in-memory: " + ", ".join(s.name for s in images)[:300]
    present = sorted({c for s in images for c in s.labels})
    if len(present) < 2:
        raise InputError(f"{data_desc}: need images of at least two classes to train a classifier, found {present}")
    base = None
    if init is not None:
        model, base = load_model(init, None, dev)
        if base.task not in ("classifier", "vit"):
            raise InputError(f"'{base.name}' is a {base.task} model, not a classifier")
        unknown = sorted(set(present) - set(base.classes))
        if unknown:
            raise InputError(f"labels {unknown} are not classes of {base.name} ({', '.join(base.classes)})")
        arch, classes = ("vit" if base.task == "vit" else "cnn"), list(base.classes)
        multi = bool(base.config.get("multilabel"))
    lr = lr or (1e-3 if arch == "vit" else 3e-3)
    if base is not None:
        cfg = model.cfg
        crop = int(base.config.get("img_size", crop)) if arch == "vit" else crop
    elif arch == "vit":
        from .models.vit import ViTConfig, build_vit

        cfg = ViTConfig(classes=tuple(classes), img_size=crop, multilabel=multi)
        model = build_vit(cfg).to(dev)
    else:
        cfg = ClassifierConfig(
            classes=tuple(classes), widths=tuple(widths), se=se, multilabel=multi, head=head, decoder=decoder
        )
        model = build_classifier(cfg).to(dev)
    card = ModelCard(
        name=Path(out).stem,
        task="vit" if arch == "vit" else "classifier",
        config=cfg.to_dict(),
        classes=list(classes),
        mpp=float(model_mpp),
        params={"input_mpp": float(data_mpp), "tile": 512, "tta": True, "thresholds": [0.5] * len(classes)},
        licence="research use only (inherited from the GlaS training data)",
    )
    if base is not None:  # a fine-tuned model keeps its base's scales, normalisation and inference settings
        card.mpp, card.normalisation, card.colors = base.mpp, base.normalisation, base.colors
        card.licence = base.licence
        card.params = {**base.params, "thresholds": [0.5] * len(classes)}
        data_mpp = float(base.params.get("input_mpp") or data_mpp)
    targets = targets_of(images, classes)
    tune_i = _holdout(targets, tune_images, rng) if tune_images else np.zeros(0, int)
    fit_i = np.setdiff1d(np.arange(len(images)), tune_i)
    if tune_images and len(np.unique(targets[fit_i].argmax(1))) < len(np.unique(targets.argmax(1))):
        fit_i = tune_i = np.arange(len(images))  # too few images to hold any out
    pix = [
        to_model_scale(s.image if s.image is not None else open_slide(s.path), card, s.mpp or data_mpp) for s in images
    ]
    fit_pix, fit_t = [pix[i] for i in fit_i], targets[fit_i]
    weights = _sample_weights(fit_t)
    loss_fn = build_loss(loss, multi)
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=str(dev))

    def batches(epoch):
        for _ in range(steps_per_epoch):
            idx = rng.choice(len(fit_pix), batch_size, p=weights)
            x = normalise(np.stack([_augment(_crop(fit_pix[i], crop, rng), rng) for i in idx]), card).to(dev)
            y = torch.from_numpy(fit_t[idx]).to(dev)
            yield x, (y if multi else y.argmax(1))

    def tune_probs(m, tta=False):
        return np.concatenate([predict_probs(m, card, pix[i][None], tta=tta) for i in tune_i])

    def validate(m):
        if not len(tune_i):
            return {"score": 0.0}
        p, t = tune_probs(m), targets[tune_i]
        nll = float(
            -np.mean(np.log(np.clip((p * t).sum(1) if not multi else np.where(t > 0, p, 1 - p).prod(1), 1e-6, 1)))
        )
        acc = classification_metrics(p, t, card)["accuracy"]
        return {"score": acc - 0.1 * nll, "accuracy": acc, "nll": nll}

    def checkpoint(m, row):
        if checkpoints:
            card.training = {"command": command, "checkpoint_epoch": row["epoch"], "partial": True}
            save_model(m, card, Path(str(out) + ".checkpoint"))

    t0 = time.time()
    step_loss = (
        (lambda m, b: loss_fn(m(b[0]), b[1]))
        if arch == "vit"
        else (lambda m, b: classifier_loss(m, b[0], b[1], loss_fn, multi))
    )
    res = fit(model, step_loss, batches, validate, tcfg, steps_per_epoch, progress, cancel, on_epoch, checkpoint)
    model.load_state_dict(res.best_state)
    model.eval()
    if len(tune_i):
        p = tune_probs(model, tta=True)
        card.params["thresholds"] = search_thresholds(p, targets[tune_i], multi)
        m = classification_metrics(p, targets[tune_i], card)
        card.metrics = {"tune": {k: m[k] for k in ("accuracy", "balanced_accuracy", "auc", "f1", "n_images")}}
    card.training = {
        "command": command,
        "data": data_desc,
        "data_mpp": data_mpp,
        "seed": seed,
        "init": None if init is None else str(init),
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "crop": crop,
        "arch": arch,
        "loss": loss,
        "lr": lr,
        "best_epoch": res.best_epoch,
        "seconds": round(time.time() - t0, 1),
        "device": str(dev),
        "fit_images": len(fit_i),
        "tune_images": [images[i].name for i in tune_i],
        "history": res.history,
    }
    save_model(model, card, out)
    return model, card


# ---------------------------------------------------------------- evaluation


def evaluate_classifier(
    data,
    split: str | None = "testA",
    weights=None,
    device=None,
    mpp: float | None = None,
    faithfulness: bool = True,
    methods=None,
    limit: int | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    task: str = "classifier",
) -> dict:
    """Score a classifier on a labels.csv split (TTA and thresholds as its card says).

    Returns ``{accuracy, balanced_accuracy, auc, f1, per_class, n_images, faithfulness}``;
    ``faithfulness[method] = {deletion_auc, random_deletion_auc, insertion_auc, random_insertion_auc}``
    (means over images, explaining the predicted class; see ``backend.explain.faithfulness``).
    ``weights=None``: the shipped model of ``task`` (``classifier`` or ``vit``).
    """
    from .explain import faithfulness as faith
    from .explain import methods_for
    from .pipelines import get_classifier
    from .slides import open_slide
    from .weights import default_model

    model, card = get_classifier(weights or default_model(task), device)
    images, classes, _ = load_split(data, split)
    images = images[:limit] if limit else images
    unknown = sorted({c for s in images for c in s.labels} - set(card.classes))
    if unknown:
        raise InputError(f"{data}: labels {unknown} are not classes of {card.name} ({card.classes})")
    targets = targets_of(images, list(card.classes))
    methods = list(methods or methods_for(card))
    probs, curves = [], {m: [] for m in methods}
    for i, s in enumerate(images):
        check_cancel(cancel)
        img = to_model_scale(open_slide(s.path), card, mpp or card.params.get("input_mpp"))
        p = predict_probs(model, card, img[None], tta=bool(card.params.get("tta")))
        probs.append(p)
        if faithfulness:
            res = faith(model, card, img, int(np.argmax(decide(p, card)[0])), methods, seed=i)
            for m in methods:
                curves[m].append(res[m])
        report(progress, i + 1, len(images), f"{s.name}")
    out = classification_metrics(np.concatenate(probs), targets, card)
    out["model"] = card.name
    out["split"] = split
    if faithfulness:
        out["faithfulness"] = {m: {k: float(np.mean([c[k] for c in curves[m]])) for k in curves[m][0]} for m in methods}
    return out
