"""Nucleus / tissue segmentation: tiled inference on images and lazy slides, training, evaluation.

Pixels vs microns: a model works at its card's ``mpp``; each tile is resampled to it inside the
prediction function and the probabilities are resampled back, so results come out at the pixels of
the input (or of the pyramid level read). Areas users give are µm².

Maps: the network's foreground probability (and, for several classes, per-class probabilities) and a
normalised distance map are blended over overlapping tiles (``tiling.predict_tiled``); instances are
then split by a marker-controlled watershed (markers: connected parts of ``distance > marker_threshold``
inside the foreground). Over slides, :func:`segment_to_zarr` streams the same maps band by band
(``tiling.predict_tiled_to_zarr``) into an instance labeller that keeps ``halo`` rows of context, so
memory is bounded by a band of rows whatever the slide height.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import Cancelled, InputError, ProgressFn, check_cancel, report
from .stain import image_factor

MONUSEG_MPP = 0.25  # MoNuSeg: TCGA 40x scans, about 0.25 µm per pixel
MODEL_MPP = 0.5  # the shipped segmenter works at 20x-equivalent pixels (4x fewer pixels on a CPU)
MASK_KINDS = ("instance", "binary")


# ---------------------------------------------------------------- data


@dataclass
class MaskSample:
    """One annotated image: ``image`` (H, W, 3) uint8 and ``labels`` (H, W) int32 — instance ids
    (0 background) when ``instances`` is True, else a 0/1 foreground mask with no instance split."""

    name: str
    split: str
    image: np.ndarray
    labels: np.ndarray
    instances: bool


def read_splits_csv(root: Path) -> list[dict]:
    path = Path(root) / "splits.csv"
    if not path.is_file():
        raise InputError(
            f"{root}: no splits.csv; a masks dataset needs images/, masks/ and splits.csv "
            "(image,split,mask); see docs/data-formats.md"
        )
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"image", "split"} <= set(rows[0]):
        raise InputError(f"{path}: expected columns image,split,mask")
    for r in rows:
        kind = (r.get("mask") or "instance").strip()
        if kind not in MASK_KINDS:
            raise InputError(f"{path}: image {r['image']}: mask kind '{kind}' is not one of {MASK_KINDS}")
        r["mask"] = kind
    return rows


def load_masks_dataset(
    root: str | Path, splits: str | list[str] | None = None, names: list[str] | None = None
) -> list[MaskSample]:
    """Load an images + masks + splits.csv dataset (splits: a name, comma list or list; None: all).

    ``names``: keep only these images (in this order). ``mask=instance`` rows: uint16/int instance labels;
    ``mask=binary`` rows: nonzero = foreground (0/255 PNG).
    """
    from skimage.io import imread

    from .datasets import _find_image
    from .slides import to_rgb_uint8

    root = Path(root)
    if not (root / "images").is_dir() or not (root / "masks").is_dir():
        raise InputError(f"{root}: not a masks dataset (needs images/ and masks/ folders and splits.csv)")
    rows = read_splits_csv(root)
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",")]
    if names is not None:
        by_name = {r["image"]: r for r in rows}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise InputError(f"{root}: images {missing[:3]} are not listed in splits.csv")
        rows = [by_name[n] for n in names]
    elif splits is not None:
        present = sorted({r["split"] for r in rows})
        rows = [r for r in rows if r["split"] in splits]
        if not rows:
            raise InputError(f"{root}: no images in split(s) {splits}; splits present: {', '.join(present)}")
    out = []
    for r in rows:
        image = to_rgb_uint8(imread(_find_image(root / "images", r["image"])), r["image"])
        mpath = _find_image(root / "masks", r["image"])
        mask = np.asarray(imread(mpath))
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != image.shape[:2]:
            raise InputError(f"{mpath}: mask shape {mask.shape} differs from the image's {image.shape[:2]}")
        inst = r["mask"] == "instance"
        labels = mask.astype(np.int32) if inst else (mask > 0).astype(np.int32)
        out.append(MaskSample(r["image"], r["split"], image, labels, inst))
    return out


def distance_target(labels: np.ndarray) -> np.ndarray:
    """Normalised distance map of an instance mask: per instance, the Euclidean distance to its border
    divided by its maximum, in (0, 1] inside instances and 0 outside: float32 (H, W)."""
    from scipy import ndimage

    out = np.zeros(labels.shape, np.float32)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl)
        m = labels[sl] == i
        d = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        if d.max() > 0:
            out[sl][m] = (d[m] / d.max()).astype(np.float32)
    return out


# ---------------------------------------------------------------- parameters and results


@dataclass
class SegmentParams:
    """Post-processing and tiling. threshold: foreground probability; marker_threshold: normalised
    distance above which a pixel seeds an instance; min_area_um2: smaller instances are dropped;
    tile / overlap: model-scale pixels per tile and between tiles; tta: average the 4 flips;
    stain_reference: the hematoxylin level (``stain.hematoxylin_level``) each input is scaled to before
    the network (one factor per image, ``stain.hematoxylin_factor``); None: inputs as they are."""

    threshold: float = 0.5
    marker_threshold: float = 0.5
    min_area_um2: float = 4.0
    tile: int = 512
    overlap: int = 64
    tta: bool = False
    majority_class: bool = False
    stain_reference: float | None = None

    @classmethod
    def from_card(cls, card, **override) -> SegmentParams:
        p = {k: v for k, v in (card.params or {}).items() if k in cls.__dataclass_fields__}
        p.update({k: v for k, v in override.items() if v is not None})
        return cls(**p)


@dataclass
class SegmentationResult:
    """Segmentation of one image, at the pixels of the array read (pyramid level ``level``).

    labels: (H, W) int32 instances (0 background); prob: (H, W) float32 foreground probability;
    distance: (H, W) float32 normalised distance map; semantic: (H, W) int32 class map (0 background,
    k = classes[k - 1]) or None for one class; table: per instance ``label, area_px, area_um2,
    centroid_y, centroid_x, mean_intensity`` (centroids in level-0 pixels); mpp: level-0 µm per pixel
    (None when unknown); downsample: level-0 pixels per result pixel.
    """

    labels: np.ndarray
    prob: np.ndarray
    distance: np.ndarray
    classes: list
    mpp: float | None
    table: dict
    semantic: np.ndarray | None = None
    level: int = 0
    downsample: float = 1.0
    source: str = ""
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.table["label"]))


def label_instances(
    prob: np.ndarray, distance: np.ndarray, threshold: float = 0.5, marker_threshold: float = 0.5, min_area_px: int = 0
) -> np.ndarray:
    """Instances from a foreground probability and a normalised distance map, both (H, W) in [0, 1].

    Foreground = ``prob > threshold``; markers = connected parts of ``distance > marker_threshold``
    within it; marker-controlled watershed of ``-distance`` restricted to the foreground; foreground
    parts that hold no marker become one instance each; instances under ``min_area_px`` are dropped.
    Returns int32 (H, W), labels 1..N in raster order of their first pixel.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    fg = prob > threshold
    if not fg.any():
        return np.zeros(prob.shape, np.int32)
    markers, n = ndimage.label(fg & (distance > marker_threshold))
    lab = watershed(-distance, markers, mask=fg) if n else np.zeros(prob.shape, np.int32)
    rest, m = ndimage.label(fg & (lab == 0))
    if m:
        lab = np.where(rest > 0, rest + n, lab)
    lab = lab.astype(np.int32)
    if min_area_px > 0:
        area = np.bincount(lab.ravel())
        small = area < min_area_px
        small[0] = False
        lab[small[lab]] = 0
    return _raster_relabel(lab)


def _raster_relabel(lab: np.ndarray) -> np.ndarray:
    """Relabel 1..N in raster order of each instance's first pixel (a canonical numbering)."""
    flat = lab.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids > 0
    ids, first = ids[keep], first[keep]
    lut = np.zeros(int(flat.max()) + 1 if flat.size else 1, np.int32)
    lut[ids[np.argsort(first)]] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[lab]


def instance_table(
    labels: np.ndarray,
    intensity: np.ndarray | None = None,
    mpp: float | None = None,
    y0: int = 0,
    downsample: float = 1.0,
    x0: int = 0,
) -> dict:
    """Per-instance features of a label image: ``label, area_px, area_um2, centroid_y, centroid_x,
    mean_intensity`` (numpy columns). ``intensity``: (H, W) grey values (mean of RGB, 0..255) or None;
    ``y0``, ``x0``: row / column offset of ``labels``; centroids are scaled by ``downsample`` to level-0 pixels and
    ``area_um2`` uses ``mpp`` (level-0 µm per pixel; NaN when unknown)."""
    flat = labels.ravel()
    ids = np.unique(flat)
    ids = ids[ids > 0]
    if ids.size == 0:
        z = np.zeros(0, np.float32)
        return {
            "label": np.zeros(0, np.int64),
            "area_px": np.zeros(0, np.int64),
            "area_um2": z,
            "centroid_y": z,
            "centroid_x": z,
            "mean_intensity": z,
        }
    idx = np.searchsorted(ids, flat)
    inside = flat > 0
    idx, n = idx[inside], ids.size
    yy, xx = np.divmod(np.flatnonzero(inside), labels.shape[1])
    area = np.bincount(idx, minlength=n)
    cy = np.bincount(idx, yy, minlength=n) / area + y0
    cx = np.bincount(idx, xx, minlength=n) / area + x0
    mi = (
        np.bincount(idx, intensity.ravel()[inside], minlength=n) / area if intensity is not None else np.full(n, np.nan)
    )
    px_um2 = (mpp * downsample) ** 2 if mpp else np.nan
    return {
        "label": ids.astype(np.int64),
        "area_px": area.astype(np.int64),
        "area_um2": (area * px_um2).astype(np.float32),
        "centroid_y": ((cy + 0.5) * downsample - 0.5).astype(np.float32),
        "centroid_x": ((cx + 0.5) * downsample - 0.5).astype(np.float32),
        "mean_intensity": mi.astype(np.float32),
    }


# ---------------------------------------------------------------- inference


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _check_ensemble(models, cards):
    models, cards = _as_list(models), _as_list(cards)
    if not models or len(models) != len(cards):
        raise InputError("give one card per model")
    c0 = cards[0]
    for c in cards[1:]:
        if list(c.classes) != list(c0.classes) or abs((c.mpp or 0) - (c0.mpp or 0)) > 1e-6:
            raise InputError(
                f"ensemble members differ: {c.name} ({c.classes}, {c.mpp} µm/px) vs "
                f"{c0.name} ({c0.classes}, {c0.mpp} µm/px); combine models of one task and scale"
            )
    return models, cards


def n_fg_channels(card) -> int:
    return 1 if len(card.classes) == 1 else len(card.classes) + 1


def make_predict_fn(
    models,
    cards,
    scale: float,
    tta: bool = False,
    ensemble: str = "mean",
    skip_background: bool = True,
    compile: bool = False,
    h_factor: float = 1.0,
    cancel=None,
):
    """Wrap model(s) as a ``tiling`` predict function over input-pixel tiles.

    (B, t, t, C) float32 (raw 0..255 RGB values) -> (B, K + 2, t, t) float32: foreground
    probabilities (K = 1, or classes + background), the normalised distance map, and the tile's grey
    intensity (mean of RGB) passed through so post-processing can measure instances. Each tile is
    resampled by ``scale`` (model pixels per input pixel) before the network and back after; ``tta``
    averages the 4 flips; several models are combined by ``ensemble``: ``"mean"`` of probabilities, or
    ``"union"`` (max: foreground where any model finds it). With ``skip_background`` tiles of bare glass
    (``tissue.is_background``) skip the network: no foreground, distance 0. ``compile``: run the
    network(s) through ``compiled.compile_for_inference`` (faster per tile after a ~20-30 s first call).
    ``h_factor``: hematoxylin scaling of every tile before the network (``stain.scale_hematoxylin``; the
    grey channel passed through stays the input's). ``cancel`` (an Event) is checked before every network
    pass, so a cancel inside a tile of TTA x ensemble passes waits for one pass, not the whole tile.
    """
    import torch
    import torch.nn.functional as F

    from .precision import autocast, current

    prec = current()  # fixed when the function is made: tiles may run on another thread
    models, cards = _check_ensemble(models, cards)
    if compile:
        from .compiled import compile_for_inference

        models = [compile_for_inference(m) for m in models]
    if ensemble not in ("mean", "union"):
        raise InputError(f"ensemble must be 'mean' or 'union', got {ensemble!r}")
    card = cards[0]
    mean = torch.tensor(card.normalisation["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(card.normalisation["std"], dtype=torch.float32).view(1, 3, 1, 1)
    multi = len(card.classes) > 1
    flips = [(), (3,), (2,), (2, 3)] if tta else [()]

    def run_one(model, x):
        s = model.stride
        h, w = x.shape[-2:]
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        acc = None
        for f in flips:
            check_cancel(cancel)
            xi = torch.flip(x, f) if f else x
            with autocast(xi.device, prec):
                out = model(xi.contiguous(memory_format=torch.channels_last))
            logits, distance = out["logits"].float(), out["distance"].float()
            p = torch.softmax(logits, 1) if multi else torch.sigmoid(logits)
            p = torch.cat([p, torch.sigmoid(distance)], 1)
            p = torch.flip(p, f) if f else p
            acc = p if acc is None else acc + p
        return (acc / len(flips))[..., :h, :w]

    n_out = n_fg_channels(card) + 1

    def predict(batch: np.ndarray) -> np.ndarray:
        b = np.asarray(batch, np.float32)
        if b.shape[-1] == 1:
            b = np.repeat(b, 3, -1)
        b = b[..., :3]
        if skip_background:
            from .tissue import is_background

            glass = np.array([is_background(t) for t in b])
            if glass.any():
                out = np.zeros((len(b), n_out + 1) + b.shape[1:3], np.float32)
                if multi:
                    out[:, 0] = 1.0  # all background
                out[:, -1] = b.mean(-1)
                if not glass.all():
                    out[~glass] = model_maps(b[~glass])
                return out
        return model_maps(b)

    def model_maps(b: np.ndarray) -> np.ndarray:
        t_h, t_w = b.shape[1:3]
        grey = b.mean(-1)[:, None]
        device = next(models[0].parameters()).device
        if h_factor != 1.0:
            from .stain import scale_hematoxylin

            b = scale_hematoxylin(b, h_factor)
        x = (torch.from_numpy(b.transpose(0, 3, 1, 2).copy()) / 255.0 - mean) / std
        mh, mw = max(8, int(round(t_h * scale))), max(8, int(round(t_w * scale)))
        if (mh, mw) != (t_h, t_w):
            x = F.interpolate(x, size=(mh, mw), mode="bilinear", align_corners=False, antialias=scale < 1)
        outs = []
        with torch.inference_mode():
            for m in models:
                outs.append(run_one(m, x.to(device)).float().cpu())
        p = torch.stack(outs).mean(0) if ensemble == "mean" else torch.stack(outs).amax(0)
        if (mh, mw) != (t_h, t_w):
            p = F.interpolate(p, size=(t_h, t_w), mode="bilinear", align_corners=False)
        return np.concatenate([p.numpy(), grey], 1).astype(np.float32)

    predict.out_channels = n_fg_channels(card) + 2
    # tiles per forward: batching pays on a GPU (an out-of-memory error halves it, tiling.OomSplitter);
    # on the CPU one tile keeps results independent of how tiles are grouped (bit-identical resumes)
    predict.batch_size = 4 if next(models[0].parameters()).device.type == "cuda" else 1
    return predict


def _check_mpp(mpp, what: str) -> float:
    from .slides import validate_mpp

    if mpp is None:
        raise InputError(f"{what}: microns per pixel unknown; give --mpp (e.g. 0.5 for 20x, 0.25 for 40x)")
    return validate_mpp(mpp, what)


def _resolve_input(image, card, mpp, level, name):
    """-> (array (H, W[, C]) numpy/dask, level, downsample, level-0 mpp, level mpp, name)."""
    from .slides import Slide, check_model_scale, lazy_rgb_uint8, to_rgb_uint8

    if isinstance(image, Slide):
        mpp = image.mpp if mpp is None else mpp
        name = image.path or image.name or name
        mpp = _check_mpp(mpp, name)
        if level is None:
            level = 0
            for i in range(len(image.levels)):
                if mpp * image.downsamples[i] <= card.mpp * 1.1:
                    level = i
        if not 0 <= level < len(image.levels):
            raise InputError(f"{name}: level {level} does not exist (the slide has {len(image.levels)})")
        arr, down = image.levels[level], image.downsamples[level]
        if arr.dtype != np.uint8:  # one slide-wide contrast stretch, applied tile by tile as tiles are read
            arr = lazy_rgb_uint8(arr, image.levels[-1], name)
    else:
        arr, down, level = to_rgb_uint8(np.asarray(image), name), 1.0, 0
        mpp = _check_mpp(mpp if mpp is not None else card.mpp, name)
    check_model_scale(mpp, card.mpp, name)
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 1:
        raise InputError(f"{name}: expected a 2-D RGB image, got shape {tuple(arr.shape)}")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise InputError(f"{name}: has {arr.shape[2]} channels; segmentation needs grey, RGB or RGBA")
    return arr, level, down, mpp, mpp * down, name


def _tiling(params: SegmentParams, scale: float, shape) -> tuple[int, int]:
    """Input-pixel tile and overlap for model-pixel ``params.tile`` / ``params.overlap``."""
    if params.tile < 32:
        raise InputError(f"tile {params.tile} is too small: use at least 32 model pixels")
    if not 0 <= params.overlap < params.tile / 2:
        raise InputError(f"overlap {params.overlap} must be >= 0 and under half the tile ({params.tile})")
    tile_in = max(16, int(round(params.tile / scale)))
    overlap_in = min(tile_in // 2, max(0, int(round(params.overlap / scale))))
    return tile_in, overlap_in


def _postprocess_maps(maps: np.ndarray, n_fg: int, params: SegmentParams, level_mpp: float):
    """Blended maps (K + 2, H, W) -> (prob, distance, labels, semantic, grey)."""
    if n_fg == 1:
        prob, semantic = maps[0], None
    else:
        prob = 1.0 - maps[0]
        semantic = np.where(prob > params.threshold, maps[1:n_fg].argmax(0) + 1, 0).astype(np.int32)
        if params.majority_class and (semantic > 0).any():
            semantic[semantic > 0] = np.bincount(semantic[semantic > 0]).argmax()
    dist, grey = maps[n_fg], maps[n_fg + 1]
    min_px = int(round(params.min_area_um2 / level_mpp**2))
    labels = label_instances(prob, dist, params.threshold, params.marker_threshold, min_px)
    return prob, dist, labels, semantic, grey


def segment(
    image,
    model,
    card,
    mpp: float | None = None,
    params: SegmentParams | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    tta: bool | None = None,
    level: int | None = None,
    ensemble: str = "mean",
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
    skip_background: bool = True,
    compile: bool = False,
    stain_norm: bool | None = None,
) -> SegmentationResult:
    """Segment an image (or one level of a slide) in memory: overlapping tiles, blended, watershed.

    Args:
        image: (H, W, 3) array (uint8 RGB or anything ``to_rgb_uint8`` takes) or a Slide.
        model, card: from ``weights.load_model``; or lists of them (an ensemble, see ``ensemble``).
        mpp: µm per pixel of ``image`` (a Slide's own when None; for arrays the model's is assumed).
        params: post-processing / tiling (the card's tuned values by default); ``tile`` (model
            pixels), ``overlap`` (model pixels, or a fraction of the tile when < 1) and ``tta`` override.
        level: pyramid level of a Slide (default: the coarsest level at least as fine as the model's).
        compile: ``torch.compile`` the network(s) (see :func:`make_predict_fn`); pays on large slides.
        stain_norm: False ignores the card's hematoxylin reference (``SegmentParams.stain_reference``).

    Returns a :class:`SegmentationResult` at the pixels of the level read.
    """
    from .tiling import predict_tiled
    from .tissue import glass_tiles

    models, cards = _check_ensemble(model, card)
    c0 = cards[0]
    params = params or SegmentParams.from_card(c0)
    params = _override(params, tile, overlap, tta, stain_norm)
    arr, level, down, mpp, level_mpp, name = _resolve_input(image, c0, mpp, level, name)
    scale = level_mpp / c0.mpp
    tile_in, overlap_in = _tiling(params, scale, arr.shape[:2])
    fn = make_predict_fn(
        models,
        cards,
        scale,
        params.tta,
        ensemble,
        skip_background,
        compile,
        image_factor(arr, params.stain_reference, image, level),
        cancel=cancel,
    )
    check_fits_in_memory(arr.shape[:2], fn.out_channels, name)
    maps = predict_tiled(
        arr,
        fn,
        tile_in,
        overlap_in,
        fn.out_channels,
        batch_size=fn.batch_size,
        glass=glass_tiles(image, level, skip_background),
        progress=progress,
        cancel=cancel,
    )
    check_cancel(cancel)
    prob, dist, labels, semantic, grey = _postprocess_maps(maps, n_fg_channels(c0), params, level_mpp)
    table = instance_table(labels, grey, mpp, downsample=down)
    return SegmentationResult(
        labels,
        prob,
        dist,
        list(c0.classes),
        mpp,
        table,
        semantic,
        level,
        down,
        "+".join(c.name for c in cards),
        params.__dict__.copy(),
    )


def in_memory_bytes(shape_yx, channels: int) -> int:
    """Bytes the in-memory ``segment`` holds for an (H, W) level: the RGB level (uint8), the blended maps
    and their weights (float32, ``channels + 1``), probability / distance / grey maps (float32) and the
    labels (int32) at once."""
    h, w = (int(s) for s in shape_yx)
    return h * w * (3 + 4 * (channels + 1) + 4 * 3 + 4)


def check_fits_in_memory(shape_yx, channels: int, name: str, fraction: float = 0.7) -> None:
    """Refuse, before any work, an in-memory segmentation that would need more than ``fraction`` of the
    available memory; the tile-by-tile zarr path (``segment_to_zarr``) has bounded memory instead."""
    from .memory import require_memory

    require_memory(
        in_memory_bytes(shape_yx, channels),
        f"{name}: segmenting {shape_yx[0]} x {shape_yx[1]} px in memory",
        "write to an OME-Zarr instead (`pathreview segment INPUT --out OUT.zarr`, bounded memory) "
        "or pick a coarser level",
        fraction,
    )


def _override(params: SegmentParams, tile, overlap, tta, stain_norm=None) -> SegmentParams:
    from dataclasses import replace

    kw = {} if stain_norm is None or stain_norm else {"stain_reference": None}
    if tile is not None:
        kw["tile"] = int(tile)
    if overlap is not None:
        t = kw.get("tile", params.tile)
        kw["overlap"] = int(round(overlap * t)) if 0 < overlap < 1 else int(overlap)
    if tta is not None:
        kw["tta"] = bool(tta)
    return replace(params, **kw)


class BandLabeller:
    """A slice-assignable sink for ``tiling.predict_tiled_to_zarr``: it receives the blended maps
    (K + 2, k, W) band by band, in row order, and writes instance labels into ``out`` (H, W).

    Rows are cut at multiples of ``band``; the rows ``[final, cut)`` are labelled on the window
    ``[final - halo, cut + halo)`` of maps, whatever sizes the maps arrive in, so the labels depend only
    on the maps (a resumed run gives the same labels as an uninterrupted one). An instance belongs to
    the window holding its first row and is written whole; pixels already written by an earlier window
    are never overwritten. Memory: about ``(band + 2 * halo) * W`` map values. With ``band >= H`` this
    is exactly :func:`label_instances` on the whole image.

    ``cols=(x0, x1)``: the columns of the maps it receives (a vertical strip of the image) and
    ``core=(c0, c1)``: the columns whose instances it owns (an instance's leftmost column), so strips
    side by side, each with ``halo`` columns of context, label the image once (see
    :func:`strip_plan`). ``on_cut(labeller, table)`` runs after each cut is written (``table``: the
    cut's new instances or None), for checkpoints; :meth:`resume_at` restores a labeller from one.
    """

    def __init__(
        self,
        out,
        shape,
        n_fg: int,
        params: SegmentParams,
        level_mpp: float,
        band: int,
        halo: int,
        mpp: float | None = None,
        downsample: float = 1.0,
        on_cut=None,
        cols=None,
        core=None,
        strip: int = 0,
    ):
        self.out, (self.h, self.w_all) = out, shape
        self.x0, self.x1 = cols or (0, self.w_all)
        self.c0, self.c1 = core or (self.x0, self.x1)
        self.w, self.strip = self.x1 - self.x0, strip
        self.n_fg, self.params, self.level_mpp = n_fg, params, level_mpp
        self.band, self.halo = max(1, int(band)), max(0, int(halo))
        self.mpp, self.down = mpp, downsample
        self.buf = np.zeros((n_fg + 2, 0, self.w), np.float32)
        self.r0 = self.r1 = self.final = 0
        self.next_id = 1
        self.tables: list[dict] = []
        self.on_cut = on_cut

    @property
    def start_row(self) -> int:
        """First map row this labeller still needs."""
        return max(0, self.final - self.halo) if self.final < self.h else self.h

    def resume_at(self, final: int, next_id: int, tables: list[dict]) -> None:
        """Continue from a checkpoint: rows ``< final`` done, the next instance id, the tables so far."""
        self.final, self.next_id, self.tables = int(final), int(next_id), list(tables)
        self.r0 = self.r1 = self.start_row

    def __setitem__(self, key, band: np.ndarray) -> None:
        ys, xs = key[-2], key[-1]
        if (xs.start or 0, self.w_all if xs.stop is None else xs.stop) != (self.x0, self.x1):
            raise ValueError(f"expected columns {self.x0}..{self.x1}, got {xs}")
        if ys.start != self.r1:
            raise ValueError(f"bands must arrive in order: got rows {ys.start}..{ys.stop}, expected {self.r1}")
        self.buf = np.concatenate([self.buf, np.asarray(band, np.float32)], axis=1)
        self.r1 = ys.stop
        while self.final < self.h:
            cut = min(self.final + self.band, self.h)
            if self.r1 < min(cut + self.halo, self.h):
                break
            self._label(cut)

    def _label(self, cut: int) -> None:
        w0, w1 = max(0, self.final - self.halo), min(cut + self.halo, self.h)
        maps = self.buf[:, w0 - self.r0 : w1 - self.r0]
        prob, dist, lab, _, grey = _postprocess_maps(maps, self.n_fg, self.params, self.level_mpp)
        owned = self._owned(lab, w0, cut)
        table = None
        if owned.size:  # else nothing to write (bare glass, or only instances another cut owns)
            lut = np.zeros(int(lab.max()) + 1, np.int64)
            lut[owned] = np.arange(self.next_id, self.next_id + owned.size)
            new = lut[lab[self.final - w0 :]]
            rows, cols = slice(self.final, w1), slice(self.x0, self.x1)
            old = np.asarray(self.out[rows, cols])
            merged = np.where(old > 0, old, new).astype(old.dtype)
            self.out[rows, cols] = merged
            m = np.where(merged >= self.next_id, merged, 0)
            table = instance_table(
                m, grey[self.final - w0 :], self.mpp, y0=self.final, x0=self.x0, downsample=self.down
            )
            self.tables.append(table)
        self.next_id += owned.size
        self.final = cut
        drop = max(0, self.start_row - self.r0)
        self.buf, self.r0 = self.buf[:, drop:], self.r0 + drop
        if self.on_cut is not None:
            self.on_cut(self, table)

    def _owned(self, lab: np.ndarray, w0: int, cut: int) -> np.ndarray:
        """Labels of ``lab`` (rows from ``w0``) this cut owns: first row in ``[final, cut)`` and leftmost
        column in the strip's core."""
        from scipy import ndimage

        if not lab.any():
            return np.zeros(0, np.int64)
        boxes = ndimage.find_objects(lab)
        ids = np.array([i for i, b in enumerate(boxes, 1) if b is not None], np.int64)
        top = np.array([boxes[i - 1][0].start for i in ids], np.int64) + w0
        left = np.array([boxes[i - 1][1].start for i in ids], np.int64) + self.x0
        return ids[(top >= self.final) & (top < cut) & (left >= self.c0) & (left < self.c1)]

    def table(self) -> dict:
        if not self.tables:
            return instance_table(np.zeros((1, 1), np.int32))
        return {k: np.concatenate([t[k] for t in self.tables]) for k in self.tables[0]}


class ResumeCheckpoint:
    """The scratch folder's ``state.json`` + ``parts/NNNNN.csv`` (instance tables of finished cuts).

    ``state.json`` is replaced atomically after the labels of a cut are written, so a run killed at any
    point (SIGKILL included) resumes from the last finished cut. ``fingerprint`` (input, scale, models,
    parameters) must match, otherwise the scratch is started afresh.
    """

    def __init__(self, folder: Path, fingerprint: dict):
        self.folder, self.fingerprint = Path(folder), fingerprint
        self.parts: list[str] = []

    def load(self):
        """-> (strip, final, next_id, tables) of a matching checkpoint, or None."""
        import json

        try:
            state = json.loads((self.folder / "state.json").read_text())
            if state.get("fingerprint") != json.loads(json.dumps(self.fingerprint)):
                return None
            tables = [read_table_csv(self.folder / "parts" / p) for p in state["parts"]]
        except (OSError, ValueError, KeyError):
            return None
        self.parts = list(state["parts"])
        return int(state.get("strip", 0)), int(state["final"]), int(state["next_id"]), tables

    def save(self, labeller: BandLabeller, table: dict | None) -> None:
        import json

        if table is not None:
            name = f"{len(self.parts):05d}.csv"
            (self.folder / "parts").mkdir(exist_ok=True)
            _write_table_csv(table, self.folder / "parts" / name)
            self.parts.append(name)
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(
            json.dumps(
                {
                    "fingerprint": self.fingerprint,
                    "strip": labeller.strip,
                    "final": labeller.final,
                    "next_id": labeller.next_id,
                    "parts": self.parts,
                }
            )
        )
        os.replace(tmp, self.folder / "state.json")


def _file_digest(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _fingerprint(
    image, arr, name, level, mpp, cards, params, tile_in, overlap_in, band, halo, ensemble, compiled: bool = False
) -> dict:
    """What a resumable scratch must agree on: the input (path, size, mtime), scale, models, settings."""
    from .slides import Slide

    src = {"name": str(name), "shape": [int(s) for s in arr.shape], "level": int(level), "mpp": float(mpp)}
    path = image.path if isinstance(image, Slide) else ""
    if path and os.path.exists(path):
        st = os.stat(path)
        src.update(size=st.st_size, mtime=st.st_mtime_ns)
    elif not isinstance(image, Slide):
        src["digest"] = __import__("hashlib").sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]
    weights = []
    for c in cards:
        wpath = Path(c.path).with_suffix(".safetensors") if getattr(c, "path", "") else None
        weights.append(_file_digest(wpath) if wpath is not None and wpath.exists() else c.name)
    return {
        "source": src,
        "weights": weights,
        "params": dict(params.__dict__),
        "tile": tile_in,
        "overlap": overlap_in,
        "band": band,
        "halo": halo,
        "ensemble": ensemble,
        "compiled": bool(compiled),
    }


INCOMPLETE_MARKER = "INCOMPLETE"


def segment_to_zarr(
    image,
    out,
    model,
    card,
    mpp: float | None = None,
    params: SegmentParams | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    tta: bool | None = None,
    level: int | None = None,
    ensemble: str = "mean",
    band: int = 1024,
    halo_um: float = 40.0,
    strip: int = 8192,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
    skip_background: bool = True,
    compile: bool = False,
    stain_norm: bool | None = None,
) -> Path:
    """Segment a slide (or array) tile by tile into an OME-Zarr labels pyramid at ``out``.

    Bounded memory, whatever the slide's size: the level is cut into vertical strips of ``strip``
    columns (+ ``halo_um`` of context each side); in each, maps are blended band by band
    (``predict_tiled_to_zarr``, one global tile plan) and instances labelled by a :class:`BandLabeller`
    (``band`` rows + ``halo_um`` of context), written to a scratch zarr;
    then the OME-Zarr pyramid is built tile by tile (``slides.write_ome_zarr``, labels mode). Everything
    is built under hidden temporary names holding an ``INCOMPLETE`` marker and renamed to ``out`` only
    when complete, so ``out`` is either complete or absent. A cancelled run removes its scratch; a run
    that is killed or fails keeps it (``.OUT.scratch``, marked ``INCOMPLETE``) with a checkpoint after
    every band, and the same call resumes from the last finished band, giving the same labels as an
    uninterrupted run. The store also holds ``instances.csv`` (the instance table). ``compile``:
    ``torch.compile`` the network(s), see :func:`make_predict_fn`. ``stain_norm``: False ignores the card's
    hematoxylin reference. Returns ``Path(out)``.
    """
    import shutil

    import zarr

    from .atomic import atomic_path
    from .slides import Slide, _default_levels, write_ome_zarr
    from .tiling import predict_tiled_to_zarr
    from .tissue import glass_tiles

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; choose another output or pass --overwrite")
    models, cards = _check_ensemble(model, card)
    c0 = cards[0]
    params = _override(params or SegmentParams.from_card(c0), tile, overlap, tta, stain_norm)
    arr, level, down, mpp, level_mpp, name = _resolve_input(image, c0, mpp, level, name)
    scale = level_mpp / c0.mpp
    tile_in, overlap_in = _tiling(params, scale, arr.shape[:2])
    fn = make_predict_fn(
        models,
        cards,
        scale,
        params.tta,
        ensemble,
        skip_background,
        compile,
        image_factor(arr, params.stain_reference, image, level),
        cancel=cancel,
    )
    h, w = (int(s) for s in arr.shape[:2])
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f".{out.name}.scratch")
    halo = int(math.ceil(halo_um / level_mpp))
    chunk = min(1024, max(256, tile_in))
    ckpt = ResumeCheckpoint(
        scratch,
        _fingerprint(
            image, arr, name, level, mpp, cards, params, tile_in, overlap_in, [band, strip], halo, ensemble, compile
        ),
    )
    resumed = ckpt.load() if (scratch / "labels0").exists() else None
    if resumed is None and scratch.exists():
        shutil.rmtree(scratch)
    done = False
    try:
        if resumed is None:
            scratch.mkdir()
            (scratch / INCOMPLETE_MARKER).write_text(
                "pathreview segment: still running, killed or cancelled; rerun the same command to resume\n"
            )
            lab0 = zarr.open_array(
                str(scratch / "labels0"),
                mode="w",
                shape=(h, w),
                dtype=np.uint32,
                chunks=(min(chunk, h), min(chunk, w)),
                fill_value=0,
            )
        else:
            lab0 = zarr.open_array(str(scratch / "labels0"), mode="r+")
        glass = glass_tiles(image, level, skip_background)
        strips = strip_plan(w, strip, halo)
        first, final, next_id, tables = resumed if resumed is not None else (0, 0, 1, [])
        if resumed is not None:
            report(
                progress,
                0,
                1,
                f"resuming {name} at row {final} of {h}"
                + (f" in strip {first + 1} of {len(strips)}" if len(strips) > 1 else ""),
            )
        for k in range(first, len(strips)):
            core, cols = strips[k]
            labeller = BandLabeller(
                lab0,
                (h, w),
                n_fg_channels(c0),
                params,
                level_mpp,
                band,
                halo,
                mpp,
                down,
                on_cut=ckpt.save,
                cols=cols,
                core=core,
                strip=k,
            )
            labeller.resume_at(final if k == first else 0, next_id, tables)
            if labeller.final < h:
                predict_tiled_to_zarr(
                    arr,
                    fn,
                    labeller,
                    tile_in,
                    overlap_in,
                    fn.out_channels,
                    batch_size=fn.batch_size,
                    progress=_strip_progress(progress, k, len(strips)),
                    cancel=cancel,
                    start_row=labeller.start_row,
                    cols=cols,
                    glass=glass,
                )
            next_id, tables = labeller.next_id, labeller.tables
        check_cancel(cancel)
        with atomic_path(out, overwrite=overwrite) as tmp:
            n_levels = _default_levels((h, w), chunk)
            if isinstance(image, Slide):  # as many levels as the input pyramid has from the level read
                n_levels = max(n_levels, min(len(image.levels) - level, 1 + int(math.log2(max(1, min(h, w))))))
            write_ome_zarr(
                tmp,
                lab0,
                level_mpp,
                labels=True,
                name=out.name.replace(".ome.zarr", "").replace(".zarr", ""),
                chunks=chunk,
                n_levels=n_levels,
                cancel=cancel,
            )
            _write_table_csv(labeller.table(), Path(tmp) / "instances.csv")
            import json

            (Path(tmp) / "pathreview.json").write_text(
                json.dumps(
                    {
                        "source": name,
                        "level": level,
                        "downsample": down,
                        "mpp": mpp,
                        "classes": list(c0.classes),
                        "models": [c.name for c in cards],
                        "params": params.__dict__,
                        "n_instances": int(labeller.next_id - 1),
                    },
                    indent=2,
                )
            )
        done = True
    except Cancelled:
        done = True  # a cancel is the user's choice: nothing to resume
        raise
    finally:
        if done and scratch.exists():
            shutil.rmtree(scratch)
    return out


def strip_plan(width: int, strip: int, halo: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Vertical strips of an image ``width`` px wide: ``[(core, cols)]`` where ``core = (c0, c1)`` are the
    columns a strip owns (``strip`` columns each, the last one what is left) and ``cols`` the core plus
    ``halo`` columns of context each side, clipped to the image. No strip is wider than ``strip + 2 *
    halo``, whatever the width, so the memory of a band does not grow with the slide."""
    strip = max(1, int(strip))
    edges = list(range(0, width, strip)) + [width]
    return [((a, b), (max(0, a - halo), min(width, b + halo))) for a, b in zip(edges[:-1], edges[1:])]


def _strip_progress(progress, k: int, n: int):
    if progress is None or n == 1:
        return progress
    return lambda i, m, msg="": progress(k * m + i, n * m, f"strip {k + 1}/{n}: {msg}")


def _write_table_csv(table: dict, path: Path) -> None:
    keys = list(table)
    with open(path, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(keys)
        for row in zip(*(table[k] for k in keys)):
            wr.writerow([int(v) if isinstance(v, (np.integer,)) else (f"{float(v):.6g}") for v in row])


def read_table_csv(path: Path) -> dict:
    """The ``instances.csv`` of a segmentation store as numpy columns."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keys = ["label", "area_px", "area_um2", "centroid_y", "centroid_x", "mean_intensity"]
    ints = {"label", "area_px"}
    return {k: np.array([float(r[k]) for r in rows], np.int64 if k in ints else np.float32) for k in keys}


# ---------------------------------------------------------------- training


def _resize(a: np.ndarray, size: int, order: int = 1) -> np.ndarray:
    from skimage.transform import resize

    if a.shape[0] == size and a.shape[1] == size:
        return a
    down = a.shape[0] > size
    return resize(
        a, (size, size) + a.shape[2:], order=order, mode="reflect", anti_aliasing=down, preserve_range=True
    ).astype(np.float32)


class MultiScaleTiles:
    """The multi-scale tile dataset (HuBMAP 2021): every image as a whole, as a 2x2 and as a 3x3
    tiling, each cell (jittered by up to a quarter of its side) resized to ``tile`` x ``tile``.

    For MoNuSeg (1000 px at 0.25 µm/px) with ``tile = 256`` the three grids are seen at about 1.0, 0.5
    (the model's scale) and 0.33 µm/px: scale augmentation around the working scale.
    ``per_grid``: cells drawn per image and epoch from each grid (all of them when None).
    Items: (image (t, t, 3) float [0, 1], foreground (t, t) float, distance (t, t) float, instances bool).
    """

    def __init__(self, samples: list[MaskSample], tile: int = 256, grids=(1, 2, 3), per_grid=(1, 4, 4)):
        self.samples, self.tile, self.grids = samples, int(tile), tuple(grids)
        self.per_grid = tuple(per_grid) if per_grid is not None else tuple(g * g for g in grids)
        self.images = [s.image.astype(np.float32) / 255.0 for s in samples]
        self.fg = [(s.labels > 0).astype(np.float32) for s in samples]
        self.dist = [
            distance_target(s.labels) if s.instances else np.zeros(s.labels.shape, np.float32) for s in samples
        ]

    def cells(self, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
        """One epoch's (sample index, y0, x0, side) windows in random order."""
        out = []
        for si, s in enumerate(self.samples):
            h, w = s.image.shape[:2]
            for g, k in zip(self.grids, self.per_grid):
                side = min(h, w) // g
                grid = [(i, j) for i in range(g) for j in range(g)]
                for c in rng.permutation(len(grid))[:k]:
                    i, j = grid[c]
                    y0 = (
                        int(
                            np.clip(
                                i * (h - side) / max(1, g - 1) + rng.integers(-side // 4, side // 4 + 1), 0, h - side
                            )
                        )
                        if g > 1
                        else int(rng.integers(0, h - side + 1))
                    )
                    x0 = (
                        int(
                            np.clip(
                                j * (w - side) / max(1, g - 1) + rng.integers(-side // 4, side // 4 + 1), 0, w - side
                            )
                        )
                        if g > 1
                        else int(rng.integers(0, w - side + 1))
                    )
                    out.append((si, y0, x0, side))
        return [out[i] for i in rng.permutation(len(out))]

    def item(self, cell) -> tuple:
        si, y0, x0, side = cell
        sl = (slice(y0, y0 + side), slice(x0, x0 + side))
        t = self.tile
        return (
            np.clip(_resize(self.images[si][sl], t), 0, 1),
            _resize(self.fg[si][sl], t),
            _resize(self.dist[si][sl], t),
            self.samples[si].instances,
        )


def augment_item(item, other, rng: np.random.Generator, p_blend: float = 0.2, p_pale: float = 0.0):
    """Colour / geometry augmentation of one tile, and Laplacian-pyramid blending with ``other``.
    ``p_pale``: probability of paling the tile's nuclei (:func:`augment.pale_nuclei`)."""
    from .augment import (
        brightness_contrast,
        gaussian_blur,
        gaussian_noise,
        grid_distortion,
        hed_jitter,
        hsv_jitter,
        laplacian_blend,
        pale_nuclei,
        random_blend_mask,
        random_dihedral,
    )

    img, fg, dist, inst = item
    if other is not None and rng.random() < p_blend:
        img2, fg2, dist2, inst2 = other
        m = random_blend_mask(img.shape[0], img.shape[1], rng)
        img = laplacian_blend(img, img2, m)
        fg, dist, inst = fg * m + fg2 * (1 - m), dist * m + dist2 * (1 - m), inst and inst2
    if p_pale and rng.random() < p_pale:
        img = pale_nuclei(img, fg, rng)
    img, fg, dist = random_dihedral([img, fg, dist], rng)
    if rng.random() < 0.3:
        img, fg, dist = grid_distortion([img, fg, dist], rng)
    if rng.random() < 0.7:
        img = hed_jitter(img, rng)
    if rng.random() < 0.5:
        img = hsv_jitter(img, rng)
    if rng.random() < 0.7:
        img = brightness_contrast(img, rng)
    if rng.random() < 0.2:
        img = gaussian_blur(img, rng)
    if rng.random() < 0.2:
        img = gaussian_noise(img, rng)
    return np.clip(img, 0, 1).astype(np.float32), fg, dist, inst


def lovasz_hinge(logits, target):
    """Lovász hinge loss (Berman et al. 2018) of binary logits (B, H, W) vs 0/1 targets, image-averaged."""
    import torch
    import torch.nn.functional as F

    losses = []
    for lg, tg in zip(logits.flatten(1), target.flatten(1)):
        signs = 2.0 * tg - 1.0
        errors = 1.0 - lg * signs
        errors_sorted, perm = torch.sort(errors, descending=True)
        gt = tg[perm]
        inter = gt.sum() - gt.cumsum(0)
        union = gt.sum() + (1 - gt).cumsum(0)
        jac = 1.0 - inter / union
        jac = torch.cat([jac[:1], jac[1:] - jac[:-1]])
        losses.append(torch.dot(F.relu(errors_sorted), jac))
    return torch.stack(losses).mean()


def segmenter_loss(model, batch, lovasz: bool = False):
    """BCE + soft Dice on the foreground (+ Lovász hinge), and BCE on the distance map for tiles whose
    masks hold instances (``mask=binary`` tiles train the foreground only)."""
    import torch
    import torch.nn.functional as F

    x, fg, dist, inst = batch
    out = {k: v.float() for k, v in model(x).items()}  # float32 losses under autocast
    lg = out["logits"][:, 0]
    loss = F.binary_cross_entropy_with_logits(lg, fg)
    p = torch.sigmoid(lg)
    loss = loss + 1.0 - (2 * (p * fg).sum() + 1) / (p.sum() + fg.sum() + 1)
    if lovasz:
        loss = loss + 0.5 * lovasz_hinge(lg, (fg > 0.5).float())
    if inst.any():
        d = F.binary_cross_entropy_with_logits(out["distance"][:, 0], dist, reduction="none")
        w = 1.0 + 4.0 * (fg > 0.5).float()
        loss = loss + ((d * w).mean((1, 2)) * inst).sum() / inst.sum()
    return loss


def _batch_tensors(items, card, device):
    import torch

    mean = np.asarray(card.normalisation["mean"], np.float32)
    std = np.asarray(card.normalisation["std"], np.float32)
    x = torch.from_numpy(np.stack([(it[0] - mean) / std for it in items]).transpose(0, 3, 1, 2).copy())
    fg = torch.from_numpy(np.stack([it[1] for it in items]).astype(np.float32))
    dist = torch.from_numpy(np.stack([it[2] for it in items]).astype(np.float32))
    inst = torch.tensor([float(it[3]) for it in items])
    return (x.to(device).contiguous(memory_format=torch.channels_last), fg.to(device), dist.to(device), inst.to(device))


def _holdout(samples: list[MaskSample], rng, n_tune, n_report):
    """Pick ``n_tune`` and ``n_report`` held-out images, each half instance / half binary where possible."""
    inst = [i for i, s in enumerate(samples) if s.instances]
    binr = [i for i, s in enumerate(samples) if not s.instances]
    inst, binr = list(rng.permutation(inst)), list(rng.permutation(binr))

    def take(n):
        k_i = min(len(inst), (n + 1) // 2) if len(samples) > n else 0
        k_b = min(len(binr), n - k_i) if len(samples) > n else 0
        picked = [inst.pop() for _ in range(k_i)] + [binr.pop() for _ in range(k_b)]
        return sorted(int(i) for i in picked)

    tune, rep = take(n_tune), take(n_report)
    rest = sorted(set(range(len(samples))) - set(tune) - set(rep))
    return tune, rep, rest


def score_samples(maps_list, samples, params: SegmentParams, mpp: float, n_fg: int = 1) -> dict:
    """Dice (foreground) for every sample; AJI and PQ where the ground truth has instances."""
    from .seg_metrics import score_pair

    per = []
    for maps, s in zip(maps_list, samples):
        prob, dist, lab, _, _ = _postprocess_maps(maps, n_fg, params, mpp)
        sc = score_pair(lab, s.labels, s.instances)  # the same function Compare scores a Labels pair with
        row = {
            "image": s.name,
            "mask": "instance" if s.instances else "binary",
            "dice": sc["dice"],
            "n_pred": int(lab.max()),
            "aji": sc["aji"],
            "pq": sc["pq"],
            "n_gt": sc["n_gt"],
        }
        if s.instances:
            row.update(dq=sc["dq"], sq=sc["sq"])
        per.append(row)
    inst = [r for r in per if r["aji"] is not None]
    return {
        "dice": float(np.mean([r["dice"] for r in per])) if per else float("nan"),
        "aji": float(np.mean([r["aji"] for r in inst])) if inst else None,
        "pq": float(np.mean([r["pq"] for r in inst])) if inst else None,
        "n_images": len(per),
        "per_image": per,
    }


def predict_maps(
    model,
    card,
    image: np.ndarray,
    mpp: float,
    tta: bool = False,
    tile: int = 512,
    overlap: int = 64,
    stain_reference: float | None = None,
) -> np.ndarray:
    """Blended maps (K + 2, H, W) of one in-memory image at ``mpp`` (one tile when it fits);
    ``stain_reference``: see :class:`SegmentParams`."""
    from .tiling import predict_tiled

    scale = mpp / card.mpp
    fn = make_predict_fn([model], [card], scale, tta, h_factor=image_factor(image, stain_reference))
    t_in = max(16, int(round(tile / scale)))
    return predict_tiled(image, fn, t_in, min(t_in // 2, int(round(overlap / scale))), fn.out_channels)


def tune_params(maps_list, samples, mpp: float, base: SegmentParams) -> dict:
    """Grid search of threshold and marker threshold on held-out maps (maximises Dice + AJI)."""
    from dataclasses import replace

    best, best_p = -1.0, {}
    for th in (0.4, 0.5, 0.6):
        for mt in (0.3, 0.4, 0.5, 0.6, 0.7):
            p = replace(base, threshold=th, marker_threshold=mt)
            r = score_samples(maps_list, samples, p, mpp)
            s = r["dice"] + (r["aji"] or 0.0)
            if s > best:
                best, best_p = s, {"threshold": th, "marker_threshold": mt}
    return best_p


def train_segmenter(
    data,
    out: str | Path,
    epochs: int = 12,
    seed: int = 0,
    device=None,
    tile: int = 256,
    batch_size: int = 8,
    data_mpp: float = MONUSEG_MPP,
    model_mpp: float | None = None,
    tune_images: int = 3,
    report_images: int = 4,
    decoder: str = "unet",
    aspp: bool = True,
    lovasz: bool = False,
    lr: float = 2e-3,
    per_grid=(1, 4, 4),
    init: str | Path | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    command: str = "",
    on_epoch=None,
    checkpoints: bool = False,
    ema: float = 0.0,
    amp: bool = False,
    widths: tuple | None = None,
    pale: float = 0.0,
    stain_norm: bool | None = None,
):
    """Train a binary (nucleus) segmenter on a masks dataset and save weights + card to ``out``.

    All ``train`` images are used; ``tune_images`` of them (chosen by ``seed``, half with instance masks)
    select the checkpoint (Dice + AJI) and the post-processing thresholds, and ``report_images`` more
    are held out untouched for the card's metrics (``evaluate --split heldout``). ``data_mpp``: µm per
    pixel of the dataset; ``tile``: training tile side at the 2x2 grid scale, whose mpp is recorded as
    the model's (``data_mpp * image side / 2 / tile``; MoNuSeg: 0.25 * 500 / 256 ≈ 0.49, recorded as
    ``MODEL_MPP``; 384 gives 0.33); fine-tuning ``init`` at its own training tile keeps its scale.
    ``model_mpp`` overrides the recorded scale.
    ``data``: a masks dataset folder (its ``train`` split) or a list of ``MaskSample`` at ``data_mpp``
    (annotations from the viewer). ``ema``: decay of a per-step moving average of the weights that is
    validated and kept (0: off). ``amp``: bfloat16 autocast in the training passes (``TrainConfig.amp``).
    ``widths``: encoder channels of a model trained from scratch (default ``SegmenterConfig``'s).
    ``pale``: probability per tile of the pale-nucleus augmentation (:func:`augment.pale_nuclei`).
    ``stain_norm``: bring every image's hematoxylin level to the fitted images' median (a fine-tune: to
    its ``init``'s reference, the level that model learnt) before training and record that reference in
    the card, so inference does the same (``SegmentParams.stain_reference``); None: as ``init`` does.
    """
    import torch

    from .models.segmenter import SegmenterConfig, build_segmenter
    from .train import TrainConfig, check_new_architecture, fit, seed_everything
    from .weights import ModelCard, choose_device, load_model, save_model

    rng = seed_everything(seed)
    dev = choose_device(device)
    samples = load_masks_dataset(data, "train") if isinstance(data, (str, Path)) else list(data)
    if not samples:
        raise InputError("no annotated images to train on")
    data_desc = str(data) if isinstance(data, (str, Path)) else "in-memory: " + ", ".join(s.name for s in samples)[:300]
    check_new_architecture(init, widths)
    if init is not None:
        model, base = load_model(init, "segmenter", dev)
        cfg = SegmenterConfig.from_dict(base.config)
    else:
        cfg = SegmenterConfig(
            classes=("nucleus",), decoder=decoder, aspp=aspp, **({"widths": tuple(widths)} if widths else {})
        )
        model = build_segmenter(cfg).to(dev)
    model = model.to(memory_format=torch.channels_last)
    tune_i, rep_i, fit_i = _holdout(samples, rng, tune_images, report_images)
    tune, rep = [samples[i] for i in tune_i], [samples[i] for i in rep_i]
    fit_set = [samples[i] for i in fit_i] or samples
    tune = tune or fit_set[:1]
    if stain_norm is None:
        stain_norm = init is not None and (base.params or {}).get("stain_reference") is not None
    reference = None
    if stain_norm:
        from .stain import normalised_training_sets

        reference, fit_set, tune, rep = normalised_training_sets(
            fit_set, tune, rep, reference=(base.params or {}).get("stain_reference") if init is not None else None
        )
    dataset = MultiScaleTiles(fit_set, tile, per_grid=per_grid)
    if model_mpp is None and init is not None and tile == (base.training or {}).get("tile", 256):
        model_mpp = base.mpp  # fine-tuning at the tile it was trained with keeps its scale
    if model_mpp is None:
        side = float(np.median([min(s.image.shape[:2]) for s in fit_set]))
        model_mpp = MODEL_MPP if tile == 256 else round(data_mpp * side / 2 / tile, 3)
    card = ModelCard(
        name=Path(out).stem,
        task="segmenter",
        config=cfg.to_dict(),
        classes=list(cfg.classes),
        mpp=float(model_mpp),
        params=SegmentParams().__dict__.copy(),
        colors={"nucleus": "#ffe119"},
        licence="CC BY-NC-SA 4.0 (inherited from the MoNuSeg training data)",
    )
    n_cells = len(dataset.cells(np.random.default_rng(0)))
    steps = max(1, n_cells // batch_size)
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=str(dev), ema=ema, amp=amp)

    def batches(epoch):
        cells = dataset.cells(rng)
        for b in range(steps):
            items = []
            for c in cells[b * batch_size : (b + 1) * batch_size]:
                other = dataset.item(cells[int(rng.integers(len(cells)))])
                items.append(augment_item(dataset.item(c), other, rng, p_pale=pale))
            yield _batch_tensors(items, card, dev)

    base_params = SegmentParams()

    def validate(m):
        maps = [predict_maps(m, card, s.image, data_mpp) for s in tune]
        r = score_samples(maps, tune, base_params, data_mpp)
        return {"score": r["dice"] + (r["aji"] or 0.0), "dice": r["dice"], "aji": r["aji"]}

    def checkpoint(m, row):
        if checkpoints:
            card.training = {"command": command, "checkpoint_epoch": row["epoch"], "partial": True}
            save_model(m, card, Path(str(out) + ".checkpoint"))

    t0 = time.time()
    res = fit(
        model,
        lambda m, b: segmenter_loss(m, b, lovasz),
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
    maps = [predict_maps(model, card, s.image, data_mpp) for s in tune]
    card.params.update(tune_params(maps, tune, data_mpp, base_params), stain_reference=reference)
    train_seconds = round(time.time() - t0, 1)
    metrics = {}
    if rep:
        r = score_samples(
            [predict_maps(model, card, s.image, data_mpp) for s in rep], rep, SegmentParams.from_card(card), data_mpp
        )
        metrics = {
            "heldout": {k: r[k] for k in ("dice", "aji", "pq", "n_images")},
            "heldout_images": [s.name for s in rep],
        }
    card.metrics = metrics
    card.training = {
        "command": command,
        "data": data_desc,
        "data_mpp": data_mpp,
        "seed": seed,
        "init": None if init is None else str(init),
        "lr": lr,
        "ema": ema,
        "amp": amp,
        "epochs": epochs,
        "best_epoch": res.best_epoch,
        "seconds": train_seconds,
        "device": str(dev),
        "tile": tile,
        "grids": list(dataset.grids),
        "per_grid": list(dataset.per_grid),
        "lovasz": lovasz,
        "pale": pale,
        "stain_norm": bool(stain_norm),
        "fit_images": len(fit_set),
        "tune_images": [s.name for s in tune],
        "heldout_images": [s.name for s in rep],
        "history": res.history,
    }
    save_model(model, card, out)
    return model, card


# ---------------------------------------------------------------- evaluation


def evaluate_segmenter(
    data,
    split: str | None = "validation",
    weights=None,
    mpp: float | None = None,
    device=None,
    tta: bool = False,
    progress: ProgressFn | None = None,
    cancel=None,
) -> dict:
    """Segment every image of a masks dataset split and score it.

    ``split``: a split of splits.csv (comma list allowed), ``"all"``, or ``"heldout"`` / ``"tune"``: the
    images the model's card lists as held out from training (untouched) / used for checkpoint selection.
    Returns ``{"dice", "aji", "pq", "per_image": [...], "n_images"}`` (Dice on the foreground, mean over
    images; AJI and PQ means over the images with instance masks, None when there are none).
    """
    from .weights import load_model

    model, card = load_model(weights, "segmenter", device)
    names = None
    if split in ("heldout", "tune"):
        names = card.training.get("heldout_images" if split == "heldout" else "tune_images") or []
        if not names:
            raise InputError(f"{card.name}: its card lists no {split} images; use --split train or all")
    samples = load_masks_dataset(data, None if split in (None, "all") else split, names=names)
    mpp = _check_mpp(mpp if mpp is not None else MONUSEG_MPP, str(data))
    params = SegmentParams.from_card(card, tta=tta)
    maps = []
    for i, s in enumerate(samples):
        check_cancel(cancel)
        maps.append(
            predict_maps(
                model,
                card,
                s.image,
                mpp,
                tta=params.tta,
                tile=params.tile,
                overlap=params.overlap,
                stain_reference=params.stain_reference,
            )
        )
        report(progress, i + 1, len(samples), s.name)
    res = score_samples(maps, samples, params, mpp, n_fg_channels(card))
    res.update(model=card.name, split=split, mpp=mpp)
    return res
