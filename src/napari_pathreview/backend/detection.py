"""Cell detection: inference over images of any size and scale, training, and evaluation.

Pixels vs microns: a model works at its card's ``mpp``; inputs at another mpp are resampled per tile,
and points come back in the input's pixels. Distances users give (min distance, match radius) are µm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, ProgressFn, check_cancel, report
from .points import CellPoints, find_peaks, point_targets, sample_bilinear

CRCHISTO_MPP = 0.55


@dataclass
class DetectParams:
    """Decoding parameters. threshold: objectness in [0, 1]; min_distance_um: between peaks (µm);
    smooth_um: sigma (µm) of a Gaussian applied to the objectness map before peak finding (0: none);
    tile / overlap: model-scale pixels per tile and shared by neighbouring tiles (128: 64 px of context each
    side, what reproduces the whole-image cells; tests/test_detector.py); tta: average the objectness
    and class probabilities over the 8 rotations / flips of each tile (8x slower); stain_reference: the
    hematoxylin level each input image is scaled to before the network (``stain``; None: as it is)."""

    threshold: float = 0.35
    min_distance_um: float = 2.2
    smooth_um: float = 0.0
    tile: int = 512
    overlap: int = 128
    tta: bool = False
    stain_reference: float | None = None

    @classmethod
    def from_card(cls, card, **override) -> DetectParams:
        p = {k: v for k, v in (card.params or {}).items() if k in cls.__dataclass_fields__}
        p.update({k: v for k, v in override.items() if v is not None})
        return cls(**p)


def stain_normalised(img: np.ndarray, card) -> np.ndarray:
    """(H, W, 3) uint8 image scaled to the card's hematoxylin reference (unchanged when it has none):
    for whole in-memory images read outside :func:`detect`, which applies the same factor tile by tile."""
    from .stain import normalised_image

    return normalised_image(img, (card.params or {}).get("stain_reference"))


def normalise(img: np.ndarray, card) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) float32 normalised with the card's mean / std."""
    mean = np.asarray(card.normalisation["mean"], np.float32)
    std = np.asarray(card.normalisation["std"], np.float32)
    return (img.astype(np.float32) / 255.0 - mean) / std


def predict_maps(model, img: np.ndarray, device=None, tta: bool = False) -> dict:
    """Run the detector on one normalised (H, W, 3) float32 tile.

    Returns numpy maps at the tile's pixels: objectness (H, W) in [0, 1], probs (K, H, W), features (F, H, W).
    ``tta``: objectness and probs are the means over the 8 dihedral transforms of the tile (each mapped
    back); features stay those of the tile as given, the ones the enhancer was trained on.
    """
    if not tta:
        return _predict_once(model, img, device)
    out = _predict_once(model, img, device)
    obj, probs = out["objectness"].copy(), out["probs"].copy()
    for k in range(1, 8):
        turns, flip = k % 4, k >= 4
        x = np.rot90(img[:, ::-1] if flip else img, turns)
        m = _predict_once(model, np.ascontiguousarray(x), device)
        obj += _undo_dihedral(m["objectness"], turns, flip)
        probs += _undo_dihedral(m["probs"], turns, flip)
    out["objectness"], out["probs"] = obj / 8.0, probs / 8.0
    return out


def _undo_dihedral(a: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """Map (..., H, W) computed on ``rot90(fliplr(tile) if flip else tile, turns)`` back to the tile."""
    a = np.rot90(a, -turns, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def _predict_once(model, img: np.ndarray, device=None) -> dict:
    import torch
    import torch.nn.functional as F

    from .precision import autocast

    device = device or next(model.parameters()).device
    h, w = img.shape[:2]
    s = model.stride
    ph, pw = (-h) % s, (-w) % s
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].to(device)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    with torch.inference_mode(), autocast(device):
        out = model(x.contiguous(memory_format=torch.channels_last))
    out = {k: v.float() for k, v in out.items()}
    crop = (slice(None), slice(None), slice(0, h), slice(0, w))
    return {
        "objectness": torch.sigmoid(out["objectness"][crop])[0, 0].float().cpu().numpy(),
        "probs": torch.softmax(out["class_logits"][crop], 1)[0].float().cpu().numpy(),
        "features": out["features"][crop][0].float().cpu().numpy(),
    }


def _predict_tile(model, img: np.ndarray, tta: bool = False) -> dict:
    """:func:`predict_maps`, with an accelerator out-of-memory error turned into a message saying what to do."""
    from .tiling import free_accelerator_memory, is_out_of_memory

    try:
        return predict_maps(model, img, tta=tta)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
    free_accelerator_memory()
    raise InputError(
        f"out of accelerator memory on one {img.shape[0]}x{img.shape[1]} tile; use a smaller "
        "tile or run on the CPU (--device cpu)"
    )


def decode(maps: dict, classes, params: DetectParams, mpp: float) -> CellPoints:
    """Peaks of the objectness map -> CellPoints at the maps' pixels (mpp = the model's)."""
    md = max(1, int(round(params.min_distance_um / mpp)))
    obj = smooth_objectness(maps["objectness"], params.smooth_um / mpp)
    peaks = find_peaks(obj, params.threshold, md)
    if len(peaks) == 0:
        return CellPoints.empty(classes, maps["features"].shape[0], mpp=mpp)
    probs = maps["probs"][:, peaks[:, 0], peaks[:, 1]].T
    feats = sample_bilinear(maps["features"], peaks.astype(np.float32))
    return CellPoints(
        peaks.astype(np.float32),
        probs.argmax(1),
        obj[peaks[:, 0], peaks[:, 1]],
        probs.astype(np.float32),
        list(classes),
        mpp,
        feats,
    )


def smooth_objectness(objectness: np.ndarray, sigma_px: float) -> np.ndarray:
    """(H, W) objectness blurred by a Gaussian of ``sigma_px`` pixels (unchanged when 0).

    The network's centre peaks are broad and ragged where annotations disagree by a few pixels; one
    blur merges the ragged maxima of a nucleus into one peak (chosen on the tune images, see tune_params).
    """
    if sigma_px <= 0:
        return objectness
    from scipy import ndimage

    return ndimage.gaussian_filter(objectness, sigma_px, mode="nearest")


def _axis_bounds(starts: np.ndarray, tile: float) -> np.ndarray:
    """Boundaries between the regions each tile owns along one axis (midpoints of tile centres)."""
    centres = np.unique(starts) + tile / 2.0
    return np.r_[-np.inf, (centres[1:] + centres[:-1]) / 2.0, np.inf]


def dedupe(points: CellPoints, distance: float) -> CellPoints:
    """Drop the lower-scoring point of any pair closer than ``distance`` (same units as yx)."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return points
    pairs = cKDTree(points.yx).query_pairs(distance, output_type="ndarray")
    if len(pairs) == 0:
        return points
    keep = np.ones(len(points), bool)
    order = np.argsort(-points.scores[pairs].max(1))
    for a, b in pairs[order]:
        if keep[a] and keep[b]:
            keep[b if points.scores[a] >= points.scores[b] else a] = False
    return points.select(keep)


def _check_mpp(mpp, what: str) -> float:
    from .slides import validate_mpp

    if mpp is None:
        raise InputError(f"{what}: microns per pixel unknown; give --mpp (e.g. 0.5 for 20x, 0.25 for 40x)")
    return validate_mpp(mpp, what)


def _stain_factor(arr, params: DetectParams, to_uint8, image=None, level: int = 0) -> float:
    """One hematoxylin factor for the whole image (1.0 without a reference). ``to_uint8``: the
    conversion tiles get, applied here to in-memory non-8-bit arrays; a lazy non-8-bit slide keeps 1.0.
    A Slide ``image``'s coarse level places the measured windows on tissue."""
    if params.stain_reference is None:
        return 1.0
    from .stain import image_factor

    if np.dtype(arr.dtype) != np.uint8:
        if not isinstance(arr, np.ndarray):
            return 1.0
        arr = to_uint8(arr)
    return image_factor(arr, params.stain_reference, image, level)


def detect(
    image,
    model,
    card,
    mpp: float | None = None,
    params: DetectParams | None = None,
    level: int | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
    skip_background: bool = True,
) -> CellPoints:
    """Detect cells in an image or a lazy slide.

    Args:
        image: (H, W, 3) numpy/dask array (uint8 RGB or anything ``to_rgb_uint8`` accepts) or a Slide.
        model, card: from ``weights.load_model``.
        mpp: microns per pixel of ``image`` (a Slide's own mpp when None); None and no metadata -> the
            model's mpp is assumed only when ``card.mpp`` is None, else InputError.
        params: decoding / tiling parameters; the card's tuned values by default.
        level: pyramid level of a Slide to read; default: the level closest to the model's mpp from below.
        skip_background: tiles of bare glass (``tissue.is_background``) are not sent to the network
            (bright-field slides; pass False for dark-background images).

    Returns CellPoints in level-0 pixels of the input, with ``mpp`` = the input's level-0 mpp.
    """
    from skimage.transform import resize

    from .slides import Slide, check_model_scale, to_rgb_uint8
    from .stain import scale_hematoxylin
    from .tiling import plan_tiles, read_tile
    from .tissue import glass_tiles, is_background

    params = params or DetectParams.from_card(card)
    if isinstance(image, Slide):
        mpp = image.mpp if mpp is None else mpp
        mpp = _check_mpp(mpp, image.path or name)
        if level is None:
            level = 0
            for i in range(len(image.levels)):
                if image.level_mpp(i) <= card.mpp * 1.1:
                    level = i
        arr, down = image.levels[level], image.downsamples[level]
        name = image.path or name
    else:
        arr, down = image, 1.0
        mpp = _check_mpp(mpp if mpp is not None else card.mpp, name)
    check_model_scale(mpp, card.mpp, name)
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 1:
        raise InputError(f"{name}: expected a 2-D RGB image, got shape {tuple(arr.shape)}")
    level_mpp = mpp * down
    lo = hi = None
    if np.dtype(arr.dtype) != np.uint8:  # one intensity stretch for the whole slide, not per tile
        small = (
            image.levels[-1]
            if isinstance(image, Slide)
            else arr[:: max(1, arr.shape[0] // 512), :: max(1, arr.shape[1] // 512)]
        )
        small = np.asarray(small, np.float64)
        if not np.isfinite(small).all():
            raise InputError(f"{name}: image has NaN or infinite pixels; fix or export the image again")
        if small.max() > 1.0 or small.min() < 0.0:
            lo, hi = np.percentile(small, [0.5, 99.5])
    scale = level_mpp / card.mpp  # model pixels per input pixel
    h, w = arr.shape[:2]
    h_factor = _stain_factor(arr, params, lambda a: to_rgb_uint8(a, name, lo, hi), image, level)
    tile_in = max(16, int(round(params.tile / scale)))
    overlap_in = min(tile_in - 8, max(0, int(round(params.overlap / scale))))
    from .memory import detect_bytes, require_memory

    require_memory(
        detect_bytes((h, w), level_mpp, params.tile, len(card.classes) + 40),
        f"{name}: detecting cells in {h} x {w} px at {level_mpp:.3g} µm/px",
        "detect a region or a coarser level, or use a machine with more memory",
        0.9,
    )
    tiles = plan_tiles((h, w), tile_in, overlap_in)
    by = _axis_bounds(np.array([t.y0 for t in tiles]), tile_in)
    bx = _axis_bounds(np.array([t.x0 for t in tiles]), tile_in)
    ys, xs = np.unique([t.y0 for t in tiles]), np.unique([t.x0 for t in tiles])
    glass = glass_tiles(image, level, skip_background)
    parts = []
    for i, t in enumerate(tiles):
        check_cancel(cancel)
        if glass is not None and glass(t):  # glass by the slide's coarse level: not even read
            report(progress, i + 1, len(tiles), f"tile {i + 1}/{len(tiles)} (glass)")
            continue
        crop = to_rgb_uint8(read_tile(arr, t), name, lo, hi)
        if skip_background and is_background(crop):  # bare glass: no cells, no network call
            report(progress, i + 1, len(tiles), f"tile {i + 1}/{len(tiles)} (glass)")
            continue
        th, tw = crop.shape[:2]
        if abs(scale - 1) > 0.02:
            mh, mw = max(1, int(round(th * scale))), max(1, int(round(tw * scale)))
            crop = (resize(crop, (mh, mw), order=1, anti_aliasing=scale < 1, preserve_range=True)).astype(np.uint8)
        if h_factor != 1.0:
            crop = scale_hematoxylin(crop, h_factor)
        pts = decode(_predict_tile(model, normalise(crop, card), params.tta), card.classes, params, card.mpp)
        pts.yx = (pts.yx + 0.5) * np.array([th / crop.shape[0], tw / crop.shape[1]], np.float32) - 0.5
        pts.yx += np.array([t.y0, t.x0], np.float32)
        iy, ix = np.searchsorted(ys, t.y0), np.searchsorted(xs, t.x0)
        own = (
            (pts.yx[:, 0] >= by[iy])
            & (pts.yx[:, 0] < by[iy + 1])
            & (pts.yx[:, 1] >= bx[ix])
            & (pts.yx[:, 1] < bx[ix + 1])
        )
        parts.append(pts.select(own))
        report(progress, i + 1, len(tiles), f"tile {i + 1}/{len(tiles)}")
    pts = CellPoints.concat(parts) if parts else CellPoints.empty(card.classes, model.cfg.feature_dim, mpp=card.mpp)
    pts = dedupe(pts, params.min_distance_um / level_mpp)
    pts.yx = (pts.yx + 0.5) * down - 0.5
    pts.mpp, pts.source = mpp, card.name
    from .weights import class_colors

    pts.colors = card.colors or class_colors(card.classes)
    return pts


# ---------------------------------------------------------------- training


def _crop_batches(
    samples, targets, rng, n_crops: int, crop: int, batch_size: int, class_freq: np.ndarray, scale_jitter: float = 0.0
):
    """Random crops centred on annotated cells, rarer classes drawn more often; dihedral + stain jitter.

    ``scale_jitter`` j > 0: each crop is read at a random zoom s, log-uniform in [1 - j, 1 + j] (a
    ``crop / s`` px window resampled to ``crop`` px: image and Gaussian targets bilinear, class map nearest),
    so nuclei appear up to j larger or smaller than at the model's mpp.
    """
    from skimage.transform import resize

    from .augment import brightness_contrast, hed_jitter, random_dihedral

    centres = []
    weights = []
    inv = 1.0 / np.maximum(class_freq, 1)
    for si, s in enumerate(samples):
        for p, lab in zip(s.yx, s.labels):
            centres.append((si, p[0], p[1]))
            weights.append(inv[lab] if lab >= 0 else inv.min())
    weights = np.asarray(weights) / np.sum(weights)
    picks = rng.choice(len(centres), size=n_crops, p=weights)
    batch = []
    for k in picks:
        si, cy, cx = centres[k]
        img, (obj, cls) = samples[si].image, targets[si]
        h, w = img.shape[:2]
        out_cs = min(crop, h, w)
        zoom = float(np.exp(rng.uniform(np.log(1 - scale_jitter), np.log(1 + scale_jitter)))) if scale_jitter else 1.0
        cs = min(max(8, int(round(out_cs / zoom))), h, w)
        y0 = int(np.clip(cy - cs / 2 + rng.integers(-cs // 4, cs // 4 + 1), 0, h - cs))
        x0 = int(np.clip(cx - cs / 2 + rng.integers(-cs // 4, cs // 4 + 1), 0, w - cs))
        sl = (slice(y0, y0 + cs), slice(x0, x0 + cs))
        im, ob, cl = img[sl].astype(np.float32) / 255.0, obj[sl], cls[sl]
        if cs != out_cs:
            im = resize(im, (out_cs, out_cs), order=1, anti_aliasing=cs > out_cs).astype(np.float32)
            ob = resize(ob, (out_cs, out_cs), order=1, anti_aliasing=False).astype(ob.dtype)
            cl = resize(cl, (out_cs, out_cs), order=0, anti_aliasing=False, preserve_range=True).astype(cl.dtype)
        im, ob, cl = random_dihedral([im, ob, cl], rng)
        if rng.random() < 0.8:
            im = hed_jitter(im, rng)
        if rng.random() < 0.8:
            im = brightness_contrast(im, rng)
        batch.append((im, ob, cl))
        if len(batch) == batch_size:
            yield batch
            batch = []


def _to_tensors(batch, card, device):
    import torch

    mean = np.asarray(card.normalisation["mean"], np.float32)
    std = np.asarray(card.normalisation["std"], np.float32)
    x = torch.from_numpy(np.stack([(b[0] - mean) / std for b in batch]).transpose(0, 3, 1, 2).copy())
    obj = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
    cls = torch.from_numpy(np.stack([b[2] for b in batch]))
    return (x.to(device).contiguous(memory_format=torch.channels_last), obj.to(device), cls.to(device))


def detector_loss(model, batch, class_weights, obj_loss: str = "bce"):
    """Objectness: ``"bce"``, BCE against the Gaussian targets weighted towards centres, or ``"focal"``,
    CenterNet's penalty-reduced focal loss (each centre pixel a positive, the Gaussian lowering the penalty
    of the pixels around it; summed and divided by the number of centres); classes: weighted CE near
    labelled centres (pixels without a labelled nearest cell are ignored)."""
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
    l_cls = F.cross_entropy(out["class_logits"], cls, weight=class_weights, ignore_index=-1)
    return l_obj + 0.5 * l_cls


def _deepened(model, card, samples, channels: int):
    """``deepen_detector`` with the coarsest skip's per-channel mean / std over (up to) 20 training images."""
    import torch

    from .models.detector import deepen_detector, encode

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


def score_points(model, card, samples, params: DetectParams, radius_um: float, maps_cache=None) -> dict:
    """Evaluation dict (see metrics.PointScores.as_dict) of a model on annotated samples."""
    from .metrics import PointScores

    scores = PointScores(card.classes, radius_um / card.mpp)
    for k, s in enumerate(samples):
        maps = maps_cache[k] if maps_cache is not None else predict_maps(model, normalise(s.image, card))
        pts = decode(maps, card.classes, params, card.mpp)
        scores.add(pts.yx, pts.labels, s.yx, s.labels)
    return scores.as_dict(radius_um)


def train_detector(
    data,
    out: str | Path,
    epochs: int = 30,
    seed: int = 0,
    device=None,
    crops_per_image: int = 4,
    crop: int = 256,
    batch_size: int = 8,
    tune_images: int = 8,
    radius_um: float = 3.3,
    mpp: float = CRCHISTO_MPP,
    init: str | Path | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    command: str = "",
    on_epoch=None,
    checkpoints: bool = False,
    lr: float | None = None,
    classes: list | None = None,
    target_sigma_um: float | None = None,
    ema: float = 0.0,
    amp: bool = False,
    widths: tuple | None = None,
    target_crowding: float | None = None,
    stain_norm: bool | None = None,
    obj_loss: str | None = None,
    deepen: int | None = None,
    scale_jitter: float = 0.0,
):
    """Train the point detector on a points dataset and save weights + card to ``out``.

    ``tune_images`` training images (chosen by ``seed``) are held out to select the checkpoint and
    the decoding threshold; the ``validation`` split is only evaluated, never tuned on.
    ``init``: weights to fine-tune from (name or path), else from scratch. ``checkpoints``: also write the
    best-so-far weights to ``OUT.checkpoint.*`` during training (resumable inspection of long runs).
    ``data``: a points dataset folder (its ``train`` split), or a list of ``PointsSample`` already at the
    model's mpp (annotations from the viewer) whose labels index ``classes`` (default: ``init``'s).
    ``lr``: learning rate (default ``TrainConfig.lr``; use ~10x less to fine-tune).
    ``target_sigma_um``: sigma (µm) of the Gaussian centre target (default: ``init``'s, else 2 model pixels).
    ``target_crowding``: cap each cell's sigma at this fraction of its nearest-neighbour distance
    (``point_targets``' ``crowding``; default: ``init``'s, else 0 = off).
    ``ema``: decay of a per-step moving average of the weights that is validated and kept (0: off).
    ``amp``: bfloat16 autocast in the training passes (``TrainConfig.amp``). ``widths``: encoder channels
    of a model trained from scratch (default ``DetectorConfig``'s). ``stain_norm``: scale every image's
    hematoxylin to the fitted images' median level (``stain``; a fine-tune: to its ``init``'s reference)
    and record it as ``stain_reference`` in the card, so inference does the same; None: as ``init`` does.
    ``obj_loss``: the objectness loss, ``"bce"`` or ``"focal"`` (see ``detector_loss``; default: ``init``'s,
    else ``"bce"``).
    ``deepen``: give ``init`` one more, coarser level of this many channels before training
    (``models.detector.deepen_detector``: the same outputs at first, twice the context to learn from).
    ``crop``: side in pixels of the training crops; ``crops_per_image``: crops per fitted image and epoch;
    ``scale_jitter``: random zoom of each crop, up to this fraction either way (0: none; see ``_crop_batches``).
    """
    import torch

    from .datasets import load_points_dataset
    from .models.detector import DetectorConfig, build_detector
    from .train import TrainConfig, check_new_architecture, fit, seed_everything
    from .weights import ModelCard, choose_device, class_colors, load_model, save_model

    rng = seed_everything(seed)
    dev = choose_device(device)
    if isinstance(data, (str, Path)):
        train, classes = load_points_dataset(data, "train")
        data_desc = str(data)
    else:
        train = list(data)
        if not train:
            raise InputError("no annotated images to train on")
        if classes is None:
            if init is None:
                raise InputError("in-memory training samples need `classes` or an `init` model")
            from .weights import resolve

            classes = list(resolve(init, "detector")[1].classes)
        data_desc = "in-memory: " + ", ".join(s.name for s in train)[:300]
    check_new_architecture(init, widths)
    if deepen is not None and (init is None or deepen < 1):
        raise InputError("--deepen adds a level to the model given by --init: give both, with a channel count >= 1")
    if init is not None:
        model, base = load_model(init, "detector", dev)
        if list(base.classes) != list(classes):
            raise InputError(f"{data}: classes {classes} differ from the model's {base.classes}")
        cfg, mpp = DetectorConfig.from_dict(base.config), base.mpp
    else:
        cfg = DetectorConfig(classes=tuple(classes), **({"widths": tuple(widths)} if widths else {}))
        model = build_detector(cfg).to(dev)
    order = rng.permutation(len(train))
    n_tune = min(tune_images, max(1, len(train) // 5)) if len(train) > 1 else 0
    tune = [train[i] for i in order[:n_tune]] or train
    fit_set = [train[i] for i in order[n_tune:]] or train
    if stain_norm is None:
        stain_norm = init is not None and (base.params or {}).get("stain_reference") is not None
    reference = None
    if stain_norm:
        from .stain import normalised_training_sets

        reference, fit_set, tune = normalised_training_sets(
            fit_set, tune, reference=(base.params or {}).get("stain_reference") if init is not None else None
        )
    if deepen:
        model = _deepened(model, base, fit_set, deepen)
        cfg = model.cfg
    model = model.to(memory_format=torch.channels_last)
    if target_sigma_um is None and init is not None:  # fine-tuning keeps the targets its base learnt
        target_sigma_um = (base.training or {}).get("target_sigma_um")
    if target_crowding is None:
        target_crowding = ((base.training or {}).get("target_crowding") or 0.0) if init is not None else 0.0
    if obj_loss is None:
        obj_loss = ((base.training or {}).get("obj_loss") or "bce") if init is not None else "bce"
    if obj_loss not in ("bce", "focal"):
        raise InputError(f"objectness loss must be 'bce' or 'focal', got {obj_loss!r}")
    if not 0.0 <= scale_jitter < 0.5:
        raise InputError(f"scale jitter must be a fraction from 0 up to 0.5, got {scale_jitter!r}")
    sigma_px = target_sigma_um / mpp if target_sigma_um else 2.0
    targets = [
        point_targets(s.image.shape[:2], s.yx, s.labels, sigma=sigma_px, crowding=target_crowding) for s in fit_set
    ]
    freq = np.bincount(np.concatenate([s.labels[s.labels >= 0] for s in fit_set]), minlength=len(classes))
    cw = torch.tensor((freq.sum() / np.maximum(freq, 1) / len(classes)) ** 0.5, dtype=torch.float32, device=dev)
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
    if init is not None:  # a fine-tuned model keeps its base's input normalisation, colours and decoding
        card.normalisation, card.colors = base.normalisation, base.colors
        card.licence = base.licence or card.licence
        card.params.update(base.params or {})
    card.params["stain_reference"] = reference  # tuning and validation below see normalised images
    steps = max(1, (len(fit_set) * crops_per_image) // batch_size)
    tcfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, seed=seed, device=str(dev), ema=ema, amp=amp, **({"lr": lr} if lr else {})
    )

    def batches(epoch):
        for b in _crop_batches(fit_set, targets, rng, steps * batch_size, crop, batch_size, freq, scale_jitter):
            yield _to_tensors(b, card, dev)

    def validate(m):  # each epoch at its best threshold: the objectness scale drifts while training
        p = DetectParams.from_card(card)
        r = tune_params(m, card, tune, radius_um, min_distances=(p.min_distance_um,), smooths=(p.smooth_um,))
        return {k: r[k] for k in ("score", "det_f1", "weighted_f1", "mF1", "threshold")}

    def checkpoint(m, row):
        if checkpoints:
            card.training = {"command": command, "checkpoint_epoch": row["epoch"], "partial": True}
            save_model(m, card, Path(str(out) + ".checkpoint"))

    t0 = time.time()
    res = fit(
        model,
        lambda m, b: detector_loss(m, b, cw, obj_loss),
        batches,
        validate,
        tcfg,
        steps,
        progress,
        cancel,
        on_epoch,
        checkpoint,
    )
    model.load_state_dict(res.best_state)
    model.eval()
    params = tune_params(model, card, tune, radius_um)
    card.params.update({k: params[k] for k in ("threshold", "min_distance_um", "smooth_um")})
    card.training = {
        "command": command,
        "data": data_desc,
        "seed": seed,
        "epochs": epochs,
        "lr": tcfg.lr,
        "ema": ema,
        "amp": amp,
        "init": str(init) if init is not None else None,
        "target_sigma_um": round(sigma_px * mpp, 3),
        "target_crowding": target_crowding,
        "stain_norm": bool(stain_norm),
        "obj_loss": obj_loss,
        "deepen": deepen,
        "crop": crop,
        "crops_per_image": crops_per_image,
        "scale_jitter": scale_jitter,
        "best_epoch": res.best_epoch,
        "seconds": round(time.time() - t0, 1),
        "device": str(dev),
        "fit_images": len(fit_set),
        "tune_images": [s.name for s in tune],
        "history": res.history,
    }
    save_model(model, card, out)
    return model, card


def tune_params(
    model,
    card,
    samples,
    radius_um: float,
    thresholds=(0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7),
    min_distances=(1.6, 2.2, 2.8),
    smooths=(0.0, 0.8, 1.1, 1.4, 1.7),
    maps=None,
) -> dict:
    """Grid search of threshold, min distance (µm) and smoothing sigma (µm) on held-out samples
    (maximises detection F1 + weighted F1). Returns the best ``DetectParams`` fields and ``score``."""
    maps = maps if maps is not None else [predict_maps(model, normalise(s.image, card)) for s in samples]
    best, best_p = -1.0, {}
    for sm in smooths:
        cache = [dict(m, objectness=smooth_objectness(m["objectness"], sm / card.mpp)) for m in maps]
        for md in min_distances:
            for th in thresholds:
                p = DetectParams(threshold=th, min_distance_um=md)
                r = score_points(model, card, samples, p, radius_um, cache)
                s = r["detection"]["f1"] + r["weighted_f1"]
                if s > best:
                    best, best_p = (
                        s,
                        {
                            "threshold": th,
                            "min_distance_um": md,
                            "smooth_um": sm,
                            "score": s,
                            "det_f1": r["detection"]["f1"],
                            "weighted_f1": r["weighted_f1"],
                            "mF1": r["mF1"],
                        },
                    )
    return best_p


def evaluate_detector(
    data,
    split: str | None = "validation",
    weights=None,
    radius_um: float = 3.3,
    mpp: float | None = None,
    device=None,
    tta: bool = False,
    progress=None,
    cancel=None,
) -> dict:
    """Detect on every image of a points dataset and score against its annotations (see metrics).
    ``tta``: average the 8 rotations / flips of every tile."""
    from .datasets import load_points_dataset
    from .metrics import PointScores
    from .weights import load_model

    model, card = load_model(weights, "detector", device)
    samples, classes = load_points_dataset(data, split, classes=list(card.classes))
    mpp = _check_mpp(mpp if mpp is not None else CRCHISTO_MPP, str(data))
    scores = PointScores(card.classes, radius_um / mpp)
    for i, s in enumerate(samples):
        check_cancel(cancel)
        pts = detect(s.image, model, card, mpp=mpp, params=DetectParams.from_card(card, tta=tta or None), name=s.name)
        scores.add(pts.yx, pts.labels, s.yx, s.labels)
        report(progress, i + 1, len(samples), s.name)
    return scores.as_dict(radius_um)
