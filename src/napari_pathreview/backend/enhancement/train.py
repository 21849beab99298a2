"""Training the enhancer on cached detections (:func:`fit_enhancer`) and end to end from a points
dataset or viewer annotations for a given detector (:func:`train_enhancer`): weights + card.

The epoch is selected on the detector's held-out tune images (mF1 of the enhanced classes), never on the
validation split.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..detection import CRCHISTO_MPP
from ..errors import InputError, ProgressFn
from ..train import TrainConfig, fit, seed_everything
from ..weights import ModelCard, choose_device, load_model, reference, save_model
from .data import _split_cache
from .loss import _batch, _class_weights, _loss
from .options import EnhancerTrainOptions, EnhancerTrainSetup
from .scoring import _logits_cached, predict_cached, score_cached, search_class_bias


def fit_enhancer(
    train_cache,
    tune_cache,
    classes,
    cfg,
    opt: EnhancerTrainOptions,
    setup: EnhancerTrainSetup | None = None,
    *,
    init_state=None,
    progress=None,
    cancel=None,
    on_epoch=None,
):
    """Train one enhancer (``cfg``: an ``EnhancerConfig``) on cached detections; select the epoch on
    ``tune_cache`` (mF1). ``setup``: its ``mpp``, ``radius_um``, ``seed`` and ``device`` are used.
    ``init_state``: a state dict of ``cfg``'s architecture to fine-tune from (else from scratch).
    -> (model, FitResult, {"base": tune dict, "enhanced": tune dict})."""
    import torch

    from ..models.enhancer import build_enhancer

    setup = setup or EnhancerTrainSetup()
    mpp, radius_um = setup.mpp or CRCHISTO_MPP, setup.radius_um
    rng = seed_everything(setup.seed)
    dev = choose_device(setup.device)
    model = build_enhancer(cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(dev)
    radius_px = radius_um / mpp
    cw = torch.tensor(
        _class_weights(train_cache, len(classes), opt.class_weight_power), dtype=torch.float32, device=dev
    )
    feat_std = np.concatenate([c.features for c in train_cache]).std(0).astype(np.float32) + 1e-6
    bs = max(1, opt.batch_images)
    steps = max(1, int(np.ceil(len(train_cache) / bs)))
    tcfg = TrainConfig(
        epochs=opt.epochs, lr=opt.lr, schedule=opt.schedule, seed=setup.seed, batch_size=bs, device=str(dev)
    )

    def batches(epoch):
        order = rng.permutation(len(train_cache))
        for s in range(0, len(order), bs):
            yield _batch([train_cache[i] for i in order[s : s + bs]], rng, opt, feat_std, mpp)

    def validate(m):
        r = score_cached(tune_cache, predict_cached(m, tune_cache, mpp), classes, radius_px, radius_um)
        return {"score": r["mF1"], "mF1": r["mF1"], "weighted_f1": r["weighted_f1"]}

    loss = lambda m, b: _loss(m, b, cw, opt, mpp, radius_um, cfg)
    res = fit(model, loss, batches, validate, tcfg, steps, progress, cancel, on_epoch)
    model.load_state_dict(res.best_state)
    model.eval()
    tune = {
        "base": score_cached(tune_cache, None, classes, radius_px, radius_um),
        "enhanced": score_cached(tune_cache, predict_cached(model, tune_cache, mpp), classes, radius_px, radius_um),
    }
    return model, res, tune


def _enhancer_config(setup: EnhancerTrainSetup, opt, classes, feature_dim: int, base, det_card):
    """A new enhancer's ``EnhancerConfig`` (``setup.config`` over the defaults), or ``base``'s when
    fine-tuning, which must fit the detector's classes and feature size."""
    from ..models.enhancer import EnhancerConfig

    if base is None:
        new = {"classes": tuple(classes), "feature_dim": feature_dim, "position_head": opt.mode == "bipartite"}
        return EnhancerConfig.from_dict({**new, **(setup.config or {})})
    cfg = EnhancerConfig.from_dict(base.config)
    if list(base.classes) != list(classes) or cfg.feature_dim != feature_dim:
        raise InputError(
            f"enhancer '{base.name}' does not fit detector '{det_card.name}' (classes "
            f"{base.classes} vs {classes}, or another feature size)"
        )
    return cfg


def _enhancer_card(out, cfg, classes, det_card, detector, setup: EnhancerTrainSetup, bias) -> ModelCard:
    return ModelCard(
        name=Path(out).stem,
        task="enhancer",
        config=cfg.to_dict(),
        classes=list(classes),
        mpp=det_card.mpp,
        colors=dict(det_card.colors),
        params={
            "detector": reference(detector or det_card.name, "detector"),
            "match_radius_um": setup.radius_um,
            "class_bias": None if bias is None else [float(b) for b in bias],
        },
        licence="research use only (trained on CRCHisto)",
    )


def train_enhancer(
    data,
    out: str | Path,
    options: EnhancerTrainOptions | None = None,
    setup: EnhancerTrainSetup | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel=None,
    on_epoch=None,
    command: str = "",
):
    """Train the enhancer on a points dataset for a given detector and save weights + card to ``out``.

    Training images: the ``train`` split minus the detector's tune images; selection: those tune images
    (mF1 of the enhanced classes); the ``validation`` split is never used here.
    ``data``: a points dataset folder, or a list of ``PointsSample`` at ``setup.mpp`` (annotations from the
    viewer, labels indexing the detector's classes); when none of them is a detector tune image, the
    epoch is selected on the training images themselves. ``setup.init``: an enhancer to fine-tune from:
    its architecture, and its detector unless ``setup.detector`` is given. -> (model, card).
    """
    opt = options or EnhancerTrainOptions()
    setup = setup or EnhancerTrainSetup()
    base = base_model = None
    detector = setup.detector
    if setup.init is not None:
        base_model, base = load_model(setup.init, "enhancer", "cpu")
        detector = detector or base.params.get("detector")
    det_model, det_card = load_model(detector, "detector", setup.device)
    setup = replace(setup, mpp=setup.mpp or CRCHISTO_MPP)
    mpp, radius_um = setup.mpp, setup.radius_um
    t0 = time.time()
    train_cache, tune_cache, classes = _split_cache(
        data, det_model, det_card, mpp, progress, cancel, opt.matching, radius_um
    )
    t_cache = time.time() - t0
    cfg = _enhancer_config(setup, opt, classes, train_cache[0].features.shape[1], base, det_card)
    init_state = None if base is None else base_model.state_dict()
    hooks = {"progress": progress, "cancel": cancel, "on_epoch": on_epoch}
    model, res, tune = fit_enhancer(train_cache, tune_cache, classes, cfg, opt, setup, init_state=init_state, **hooks)
    bias = None
    if opt.tune_bias:
        logits = _logits_cached(model, tune_cache, mpp)
        bias = search_class_bias(logits, tune_cache, classes, radius_um / mpp, radius_um)
        labels = predict_cached(model, tune_cache, mpp, bias)
        tune["enhanced_bias"] = score_cached(tune_cache, labels, classes, radius_um / mpp, radius_um)
    card = _enhancer_card(out, cfg, classes, det_card, detector, setup, bias)
    data_desc = str(data) if isinstance(data, (str, Path)) else "in-memory: " + ", ".join(s.name for s in data)[:300]
    card.training = {
        "command": command,
        "data": data_desc,
        "seed": setup.seed,
        "detector": card.params["detector"],
        "init": None if setup.init is None else str(setup.init),
        "options": opt.__dict__.copy(),
        "fit_images": len(train_cache),
        "tune_images": [c.name for c in tune_cache],
        "best_epoch": res.best_epoch,
        "seconds": round(time.time() - t0, 1),
        "cache_seconds": round(t_cache, 1),
        "device": str(setup.device or "cpu"),
        "history": res.history,
    }
    card.metrics = {"tune": {k: {"mF1": v["mF1"], "weighted_f1": v["weighted_f1"]} for k, v in tune.items()}}
    save_model(model, card, out)
    return model, card
