"""Scoring the detector on annotated images: the decoding grid search that picks a card's threshold,
min distance and smoothing, and ``pathreview evaluate detector`` (see ``metrics.PointScores``).

Match radius and distances in µm; a dataset folder's images are at ``CRCHISTO_MPP`` unless told.
"""

from __future__ import annotations

from ..datasets import load_points_dataset
from ..errors import check_cancel, report
from ..metrics import PointScores
from ..modelio import check_mpp
from ..weights import load_model
from .data import CRCHISTO_MPP
from .infer import detect
from .maps import DetectParams, decode, normalise, predict_maps, smooth_objectness


def score_points(model, card, samples, params: DetectParams, radius_um: float, maps_cache=None) -> dict:
    """Evaluation dict (see metrics.PointScores.as_dict) of a model on annotated samples."""
    scores = PointScores(card.classes, radius_um / card.mpp)
    for k, s in enumerate(samples):
        maps = maps_cache[k] if maps_cache is not None else predict_maps(model, normalise(s.image, card))
        pts = decode(maps, card.classes, params, card.mpp)
        scores.add(pts.yx, pts.labels, s.yx, s.labels)
    return scores.as_dict(radius_um)


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
    model, card = load_model(weights, "detector", device)
    samples, classes = load_points_dataset(data, split, classes=list(card.classes))
    mpp = check_mpp(mpp if mpp is not None else CRCHISTO_MPP, str(data))
    scores = PointScores(card.classes, radius_um / mpp)
    for i, s in enumerate(samples):
        check_cancel(cancel)
        pts = detect(s.image, model, card, mpp=mpp, params=DetectParams.from_card(card, tta=tta or None), name=s.name)
        scores.add(pts.yx, pts.labels, s.yx, s.labels)
        report(progress, i + 1, len(samples), s.name)
    return scores.as_dict(radius_um)
