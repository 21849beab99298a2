"""The whole weak-cells recipe: stage-1 CAM variants, a threshold chosen on tile labels, pseudo-labels,
the stage-2 U-Net, and the cards of all four models."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..datasets import load_points_dataset
from ..errors import ProgressFn, check_cancel, report
from ..normalisation import default_normalisation
from ..weights import ModelCard, choose_device, class_colors, load_model, save_model
from .config import VARIANTS, WeakConfig
from .crops import grid_crops
from .infer import cam_references
from .maps import cam_probs, pseudo_labels
from .scores import threshold_sweep
from .stages import Hooks, WeakData, split_tune, train_stage1, train_stage2
from .subcategories import sub_categories

N_STEPS = 5  # progress steps: three CAM variants, pseudo-labels, U-Net
LICENCE = "research use only (trained on CRCHisto; the weights inherit its licence)"


def _stage(progress, name: str, i: int, n: int):
    if progress is None:
        return None
    return lambda a, b, m: progress(i, n, f"{name}: {m}")


@dataclass
class _Stage1:
    """Stage-1 CAM models per variant, their fits (None when reused) and references (reused only)."""

    models: dict
    fits: dict = field(default_factory=dict)
    refs: dict | None = None


def _reused_stage1(cams, dev, progress) -> tuple[_Stage1, dict]:
    """The CAM models of the weak-cells model ``cams`` and their cards' normalisation."""
    refs = cam_references(cams)
    loaded = {v: load_model(r, "weak-cam", dev) for v, r in refs.items()}
    report(progress, 3, N_STEPS, f"stage 1 reused from {cams}")
    norm = next(iter(loaded.values()))[1].normalisation
    return _Stage1({v: m for v, (m, _) in loaded.items()}, refs=refs), norm


def _trained_stage1(data: WeakData, cfg: WeakConfig, dev, hooks: Hooks) -> _Stage1:
    """The three CAM variants trained in turn (SC-CAM starts from, and clusters the features of, CAM)."""
    st = _Stage1({})
    for i, v in enumerate(VARIANTS):
        check_cancel(hooks.cancel)
        kw = {}
        if v == "sc":
            ref = st.models["cam"]
            rng = np.random.default_rng(cfg.seed)
            kms = sub_categories(ref, data.train, cfg, len(data.classes), rng, dev, data.normalisation)
            kw = {"init": ref, "ref": ref, "kms": kms}
        stage_hooks = Hooks(_stage(hooks.progress, v, i, N_STEPS), hooks.cancel, hooks.on_epoch)
        st.models[v], st.fits[v] = train_stage1(v, data, cfg, dev, hooks=stage_hooks, **kw)
        report(hooks.progress, i + 1, N_STEPS, f"{v}: tile F1 {st.fits[v].best_val['score']:.3f}")
    return st


def _pseudo(ensemble: list, data: WeakData, cfg: WeakConfig, cancel) -> dict:
    """The threshold with the best tile F1 on the tune images, its sweep, and the pseudo-label maps of
    the train and tune images (CAM ensemble with TTA)."""
    k = len(data.classes)

    def probs(s):
        return cam_probs(ensemble, s.image, data.normalisation, cfg.tta_scales, cfg.tta_flips)

    probs_tune = [probs(s) for s in data.tune]
    curve = threshold_sweep(probs_tune, grid_crops(data.tune, cfg.crop, k), k, cfg.thresholds, cfg.min_px)
    threshold = max(curve, key=lambda r: r["tile_f1"])["threshold"]
    train_maps = []
    for s in data.train:
        check_cancel(cancel)
        train_maps.append(pseudo_labels(probs(s), threshold))
    tune_maps = [pseudo_labels(p, threshold) for p in probs_tune]
    return {"threshold": threshold, "curve": curve, "train_maps": train_maps, "tune_maps": tune_maps}


def _training_record(data_ref, data: WeakData, cfg: WeakConfig, dev, command: str) -> dict:
    import torch

    return {
        "command": command,
        "seed": cfg.seed,
        "data": str(data_ref),
        "device": str(dev),
        "torch": torch.__version__,
        "crop_px": cfg.crop,
        "crop_um": round(cfg.crop * cfg.mpp, 1),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "train_images": len(data.train),
        "tune_images": [s.name for s in data.tune],
        "labels": "tile level only: the set of types present in each crop",
    }


def _cam_card(out: Path, v: str, fit, cfg: WeakConfig, common: dict, training: dict) -> ModelCard:
    return ModelCard(
        name=f"{out.name}-{v}",
        task="weak-cam",
        in_channels=3,
        config={"classes": common["classes"], "widths": list(cfg.widths), "n_sub": cfg.n_sub if v == "sc" else 0},
        params={"variant": v, "crop": cfg.crop, "stride": 8},
        training={**training, "best_epoch": fit.best_epoch, "seconds": round(fit.seconds, 1), "history": fit.history},
        metrics={"tune_tile_f1": round(fit.best_val["score"], 4)},
        **common,
    )


def _seg_card(out: Path, seg, seg_fit, cfg: WeakConfig, pseudo: dict, cam_refs, common: dict, training: dict, seconds):
    return ModelCard(
        name=out.name,
        task="weak-cells",
        config=seg.cfg.to_dict(),
        in_channels=3,
        params={
            "cams": cam_refs or {v: f"{out.name}-{v}" for v in VARIANTS},
            "threshold": pseudo["threshold"],
            "tta_scales": list(cfg.tta_scales),
            "tta_flips": cfg.tta_flips,
            "cell_radius_px": cfg.cell_radius,
            "crop": cfg.crop,
        },
        training={
            **training,
            "threshold_curve": pseudo["curve"],
            "best_epoch": seg_fit.best_epoch,
            "seconds": seconds,
            "seg_seconds": round(seg_fit.seconds, 1),
            "history": seg_fit.history,
        },
        metrics={"tune_" + k: round(v, 4) for k, v in seg_fit.best_val.items() if k != "score"},
        **common,
    )


def train_weak_cells(
    data,
    out,
    cfg: WeakConfig | None = None,
    device=None,
    command: str = "",
    cams=None,
    progress: ProgressFn | None = None,
    cancel=None,
    on_epoch=None,
) -> dict:
    """The whole recipe on a points dataset's ``train`` split; writes ``OUT-{cam,puzzle,sc}`` (stage 1,
    task ``weak-cam``) and ``OUT`` (stage-2 U-Net, task ``weak-cells``) as safetensors + cards.

    ``cams``: a weak-cells model (name or path) whose stage-1 CAM models are reused as they are; only the
    threshold sweep, the pseudo-labels and the stage-2 U-Net are redone, and ``OUT``'s card points at
    those CAM models (and its normalisation is theirs). Returns ``{"files", "threshold", "curve",
    "seconds"}``. Point labels are used only through :func:`~.crops.tile_labels`.
    """
    cfg = cfg or WeakConfig()
    dev = choose_device(device)
    t0 = time.time()
    samples, classes = load_points_dataset(data, "train")
    train_s, tune_s = split_tune(samples, cfg.tune_every)
    out = Path(out).with_suffix("") if Path(out).suffix in (".safetensors", ".json") else Path(out)
    hooks = Hooks(progress, cancel, on_epoch)
    if cams is not None:
        st, norm = _reused_stage1(cams, dev, progress)
    else:
        norm = default_normalisation()
    wd = WeakData(train_s, tune_s, list(classes), norm)
    if cams is None:
        st = _trained_stage1(wd, cfg, dev, hooks)
    pseudo = _pseudo([st.models[v] for v in VARIANTS], wd, cfg, cancel)
    report(progress, 4, N_STEPS, f"pseudo-labels at threshold {pseudo['threshold']}")
    seg, seg_fit = train_stage2(
        wd,
        pseudo["train_maps"],
        cfg,
        dev,
        pseudo["tune_maps"],
        Hooks(_stage(progress, "u-net", 4, N_STEPS), cancel, on_epoch),
    )
    seconds = round(time.time() - t0, 1)
    common = {"mpp": cfg.mpp, "classes": list(classes), "licence": LICENCE, "colors": class_colors(classes)}
    common["normalisation"] = norm
    training = _training_record(data, wd, cfg, dev, command)
    files = []
    for v in VARIANTS if cams is None else ():
        card = _cam_card(out, v, st.fits[v], cfg, common, training)
        files.append(str(save_model(st.models[v], card, out.with_name(f"{out.name}-{v}"))))
    card = _seg_card(out, seg, seg_fit, cfg, pseudo, st.refs, common, training, seconds)
    if cams is not None:
        card.training["stage1_from"] = str(cams)
    files.append(str(save_model(seg, card, out)))
    report(progress, N_STEPS, N_STEPS, f"done in {seconds} s")
    return {"files": files, "threshold": pseudo["threshold"], "curve": pseudo["curve"], "seconds": seconds}
