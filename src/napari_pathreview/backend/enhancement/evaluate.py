"""``pathreview evaluate enhancer``: base vs enhanced classes of the *same* detected points, scored with
the detector's metric (``metrics.PointScores``), and optionally an ablation of position encodings and
attention masks (short trainings on the train split, scored on the evaluated split)."""

from __future__ import annotations

import time
from dataclasses import replace

from ..detection import CRCHISTO_MPP
from ..errors import InputError, check_cancel, report
from ..weights import load_model
from .data import _split_cache, cache_detections
from .options import EnhancerEvalOptions, EnhancerTrainOptions, EnhancerTrainSetup
from .scoring import predict_cached, score_cached
from .train import fit_enhancer

ABLATION = [
    {"variant": "relative, 70 µm mask (default)", "position": "relative", "radius_um": 70.0},
    {"variant": "sinusoidal, 70 µm mask", "position": "sinusoidal", "radius_um": 70.0},
    {"variant": "both, 70 µm mask", "position": "both", "radius_um": 70.0},
    {"variant": "none, 70 µm mask", "position": "none", "radius_um": 70.0},
    {"variant": "relative, 35 µm mask", "position": "relative", "radius_um": 35.0},
    {"variant": "relative, no mask (64 nearest)", "position": "relative", "radius_um": None},
]


def _ablation(data, card, detector, cache, classes, mpp: float, o: EnhancerEvalOptions, progress, cancel) -> dict:
    """Each :data:`ABLATION` variant trained for ``o.ablation_epochs`` with the card's options (selected on
    the detector's tune images) and scored on ``cache``. ``detector``: (model, card)."""
    from ..models.enhancer import EnhancerConfig

    t0 = time.time()
    train_cache, tune_cache, _ = _split_cache(data, *detector, mpp, None, cancel, "hungarian", o.radius_um)
    base_cfg = EnhancerConfig.from_dict(card.config).to_dict()
    opts = EnhancerTrainOptions(
        **{
            k: v
            for k, v in (card.training or {}).get("options", {}).items()
            if k in EnhancerTrainOptions.__dataclass_fields__
        }
    )
    opts = replace(opts, epochs=o.ablation_epochs, tune_bias=False)
    setup = EnhancerTrainSetup(mpp=mpp, radius_um=o.radius_um, seed=0, device=o.device)
    rp = o.radius_um / mpp
    rows = []
    for i, v in enumerate(ABLATION):
        check_cancel(cancel)
        t1 = time.time()
        cfg = EnhancerConfig.from_dict({**base_cfg, "position": v["position"], "radius_um": v["radius_um"]})
        m, fr, tune = fit_enhancer(train_cache, tune_cache, classes, cfg, opts, setup, cancel=cancel)
        r = score_cached(cache, predict_cached(m, cache, mpp), classes, rp, o.radius_um)
        rows.append(
            {
                **v,
                "epochs": o.ablation_epochs,
                "best_epoch": fr.best_epoch,
                "tune_mF1": tune["enhanced"]["mF1"],
                "mF1": r["mF1"],
                "weighted_f1": r["weighted_f1"],
                "classes": {k: c["f1"] for k, c in r["classes"].items()},
                "seconds": round(time.time() - t1, 1),
            }
        )
        report(progress, i + 1, len(ABLATION), f"ablation {v['variant']}: mF1 {r['mF1']:.4f}")
    return {"variants": rows, "seconds": round(time.time() - t0, 1)}


def evaluate_enhancer(
    data,
    split: str | None = "validation",
    weights=None,
    options: EnhancerEvalOptions | None = None,
    *,
    progress=None,
    cancel=None,
) -> dict:
    """Score base vs enhanced classes of the same detected points on a split (detected with the 8-fold
    rotation / flip test-time augmentation when ``options.tta``).

    -> {"base": {...}, "enhanced": {...}, ...}, each with the keys of ``evaluate detector``. With
    ``options.ablation``, also trains short variants (``ablation_epochs``; position encodings and masks)
    on the train split (selected on the detector's tune images) and adds their scores on ``split``.
    """
    o = options or EnhancerEvalOptions()
    model, card = load_model(weights, "enhancer", o.device)
    det_model, det_card = load_model(o.detector or card.params.get("detector"), "detector", o.device)
    if o.tta:  # part of the card's params, so also of the detections' cache key
        det_card = replace(det_card, params={**(det_card.params or {}), "tta": True})
    mpp = o.mpp or CRCHISTO_MPP
    cache, classes = cache_detections(data, split, det_model, det_card, mpp, progress=progress, cancel=cancel)
    if list(classes) != list(card.classes):
        raise InputError(f"{data}: classes {classes} differ from the enhancer's {card.classes}")
    rp = o.radius_um / mpp
    bias = card.params.get("class_bias")
    res = {
        "base": score_cached(cache, None, classes, rp, o.radius_um),
        "enhanced": score_cached(cache, predict_cached(model, cache, mpp, bias), classes, rp, o.radius_um),
        "enhancer": card.name,
        "detector": det_card.name,
        "split": split,
    }
    if o.ablation:
        ab = _ablation(data, card, (det_model, det_card), cache, classes, mpp, o, progress, cancel)
        res["ablation"] = {"base_mF1": res["base"]["mF1"], **ab}
    return res
