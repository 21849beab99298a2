"""Scoring segmentations against masks: per-image scores, the post-processing grid search, and
``pathreview evaluate segmenter``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import InputError, ProgressFn, check_cancel, report
from ..modelio import check_mpp
from ..seg_metrics import score_pair
from ..weights import load_model
from .data import MONUSEG_MPP, load_masks_dataset
from .infer import predict_maps
from .instances import postprocess_maps
from .params import SegmentParams
from .predict import n_fg_channels


def _score_row(lab: np.ndarray, s) -> dict:
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
    return row


def score_samples(maps_list, samples, params: SegmentParams, mpp: float, n_fg: int = 1) -> dict:
    """Dice (foreground) for every sample; AJI and PQ where the ground truth has instances."""
    per = []
    for maps, s in zip(maps_list, samples):
        _, _, lab, _, _ = postprocess_maps(maps, n_fg, params, mpp)
        per.append(_score_row(lab, s))
    inst = [r for r in per if r["aji"] is not None]
    return {
        "dice": float(np.mean([r["dice"] for r in per])) if per else float("nan"),
        "aji": float(np.mean([r["aji"] for r in inst])) if inst else None,
        "pq": float(np.mean([r["pq"] for r in inst])) if inst else None,
        "n_images": len(per),
        "per_image": per,
    }


def tune_params(maps_list, samples, mpp: float, base: SegmentParams) -> dict:
    """Grid search of threshold and marker threshold on held-out maps (maximises Dice + AJI)."""
    best, best_p = -1.0, {}
    for th in (0.4, 0.5, 0.6):
        for mt in (0.3, 0.4, 0.5, 0.6, 0.7):
            p = replace(base, threshold=th, marker_threshold=mt)
            r = score_samples(maps_list, samples, p, mpp)
            s = r["dice"] + (r["aji"] or 0.0)
            if s > best:
                best, best_p = s, {"threshold": th, "marker_threshold": mt}
    return best_p


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
    model, card = load_model(weights, "segmenter", device)
    names = None
    if split in ("heldout", "tune"):
        names = card.training.get("heldout_images" if split == "heldout" else "tune_images") or []
        if not names:
            raise InputError(f"{card.name}: its card lists no {split} images; use --split train or all")
    samples = load_masks_dataset(data, None if split in (None, "all") else split, names=names)
    mpp = check_mpp(mpp if mpp is not None else MONUSEG_MPP, str(data))
    params = SegmentParams.from_card(card, tta=tta)
    maps = []
    for i, s in enumerate(samples):
        check_cancel(cancel)
        maps.append(predict_maps(model, card, s.image, mpp, params))
        report(progress, i + 1, len(samples), s.name)
    res = score_samples(maps, samples, params, mpp, n_fg_channels(card))
    res.update(model=card.name, split=split, mpp=mpp)
    return res
