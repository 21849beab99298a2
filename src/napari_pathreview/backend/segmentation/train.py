"""Training a nucleus segmenter on a masks dataset (or annotations from the viewer): the options, the
held-out images, the run's batches / validation / checkpoints, and the card it saves."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, ProgressFn
from ..train import TrainConfig, check_new_architecture, fit, seed_everything
from ..weights import ModelCard, choose_device, load_model, save_model
from .data import MONUSEG_MPP, MaskSample, load_masks_dataset
from .evaluate import score_samples, tune_params
from .infer import predict_maps
from .params import SegmentParams
from .tiles import MultiScaleTiles, augment_item, batch_tensors, segmenter_loss

MODEL_MPP = 0.5  # the shipped segmenter works at 20x-equivalent pixels (4x fewer pixels on a CPU)


@dataclass
class SegmenterTrainOptions:
    """The knobs of :func:`train_segmenter` (defaults: the shipped recipe's).

    ``epochs``, ``batch_size``, ``lr``, ``ema`` (decay of a per-step moving average of the weights that
    is validated and kept; 0: off), ``amp`` (bfloat16 autocast in the training passes,
    ``TrainConfig.amp``). ``tile``: training tile side at the 2x2 grid scale, whose mpp is recorded as
    the model's (``data_mpp * image side / 2 / tile``; MoNuSeg: 0.25 * 500 / 256 ≈ 0.49, recorded as
    ``MODEL_MPP``; 384 gives 0.33); fine-tuning ``init`` at its own training tile keeps its scale;
    ``model_mpp`` overrides the recorded scale. ``tune_images`` (chosen by the seed, half with instance
    masks) select the checkpoint (Dice + AJI) and the post-processing thresholds; ``report_images``
    more are held out untouched for the card's metrics. ``decoder`` (``unet`` / ``fpn``), ``aspp``,
    ``widths`` (encoder channels; default ``SegmenterConfig``'s): the architecture of a model trained
    from scratch; ``init``: a model to fine-tune instead. ``lovasz``: add the Lovász hinge loss.
    ``per_grid``: tiles drawn per image and epoch from the whole image, the 2x2 and the 3x3 grids
    (:class:`.tiles.MultiScaleTiles`). ``pale``: probability per tile of the pale-nucleus augmentation
    (:func:`augment.pale_nuclei`). ``stain_norm``: bring every image's hematoxylin level to the fitted
    images' median (a fine-tune: to its ``init``'s reference, the level that model learnt) before
    training and record that reference in the card, so inference does the same
    (``SegmentParams.stain_reference``); None: as ``init`` does. ``checkpoints``: save the best weights
    so far to ``OUT.checkpoint`` after every improving epoch.
    """

    epochs: int = 12
    tile: int = 256
    batch_size: int = 8
    model_mpp: float | None = None
    tune_images: int = 3
    report_images: int = 4
    decoder: str = "unet"
    aspp: bool = True
    lovasz: bool = False
    lr: float = 2e-3
    per_grid: tuple | None = (1, 4, 4)
    init: str | Path | None = None
    checkpoints: bool = False
    ema: float = 0.0
    amp: bool = False
    widths: tuple | None = None
    pale: float = 0.0
    stain_norm: bool | None = None


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


def _initial_model(opts: SegmenterTrainOptions, dev):
    """-> (model on ``dev``, its ``SegmenterConfig``, the ``init`` card or None)."""
    from ..models.segmenter import SegmenterConfig, build_segmenter

    if opts.init is not None:
        model, base = load_model(opts.init, "segmenter", dev)
        return model, SegmenterConfig.from_dict(base.config), base
    widths = {"widths": tuple(opts.widths)} if opts.widths else {}
    cfg = SegmenterConfig(classes=("nucleus",), decoder=opts.decoder, aspp=opts.aspp, **widths)
    return build_segmenter(cfg).to(dev), cfg, None


def _new_card(out, cfg, model_mpp: float) -> ModelCard:
    return ModelCard(
        name=Path(out).stem,
        task="segmenter",
        config=cfg.to_dict(),
        classes=list(cfg.classes),
        mpp=float(model_mpp),
        params=SegmentParams().__dict__.copy(),
        colors={"nucleus": "#ffe119"},
        licence="CC BY-NC-SA 4.0 (inherited from the MoNuSeg training data)",
    )


def _model_mpp(opts: SegmenterTrainOptions, base, fit_set, data_mpp: float) -> float:
    """The scale the model is recorded at (see :class:`SegmenterTrainOptions`)."""
    if opts.model_mpp is not None:
        return opts.model_mpp
    if base is not None and opts.tile == (base.training or {}).get("tile", 256) and base.mpp is not None:
        return base.mpp  # fine-tuning at the tile it was trained with keeps its scale
    side = float(np.median([min(s.image.shape[:2]) for s in fit_set]))
    return MODEL_MPP if opts.tile == 256 else round(data_mpp * side / 2 / opts.tile, 3)


@dataclass
class _Run:
    """One training run's state: what :func:`fit` calls back into, and what the card records."""

    opts: SegmenterTrainOptions
    out: str | Path
    command: str
    data_desc: str
    data_mpp: float
    seed: int
    device: object
    rng: np.random.Generator
    fit_set: list
    tune: list
    rep: list
    stain_norm: bool = False
    reference: float | None = None
    card: ModelCard | None = None
    dataset: MultiScaleTiles | None = None
    steps: int = 1

    def batches(self, epoch):
        bs, cells = self.opts.batch_size, self.dataset.cells(self.rng)
        for b in range(self.steps):
            items = []
            for c in cells[b * bs : (b + 1) * bs]:
                other = self.dataset.item(cells[int(self.rng.integers(len(cells)))])
                items.append(augment_item(self.dataset.item(c), other, self.rng, p_pale=self.opts.pale))
            yield batch_tensors(items, self.card, self.device)

    def validate(self, m) -> dict:
        maps = [predict_maps(m, self.card, s.image, self.data_mpp) for s in self.tune]
        r = score_samples(maps, self.tune, SegmentParams(), self.data_mpp)
        return {"score": r["dice"] + (r["aji"] or 0.0), "dice": r["dice"], "aji": r["aji"]}

    def checkpoint(self, m, row) -> None:
        if self.opts.checkpoints:
            self.card.training = {"command": self.command, "checkpoint_epoch": row["epoch"], "partial": True}
            save_model(m, self.card, Path(str(self.out) + ".checkpoint"))

    def heldout_metrics(self, model) -> dict:
        if not self.rep:
            return {}
        maps = [predict_maps(model, self.card, s.image, self.data_mpp) for s in self.rep]
        r = score_samples(maps, self.rep, SegmentParams.from_card(self.card), self.data_mpp)
        return {
            "heldout": {k: r[k] for k in ("dice", "aji", "pq", "n_images")},
            "heldout_images": [s.name for s in self.rep],
        }

    def record(self, res, seconds: float) -> dict:
        """The card's ``training`` entry."""
        o = self.opts
        return {
            "command": self.command,
            "data": self.data_desc,
            "data_mpp": self.data_mpp,
            "seed": self.seed,
            "init": None if o.init is None else str(o.init),
            "lr": o.lr,
            "ema": o.ema,
            "amp": o.amp,
            "epochs": o.epochs,
            "best_epoch": res.best_epoch,
            "seconds": seconds,
            "device": str(self.device),
            "tile": o.tile,
            "grids": list(self.dataset.grids),
            "per_grid": list(self.dataset.per_grid),
            "lovasz": o.lovasz,
            "pale": o.pale,
            "stain_norm": bool(self.stain_norm),
            "fit_images": len(self.fit_set),
            "tune_images": [s.name for s in self.tune],
            "heldout_images": [s.name for s in self.rep],
            "history": res.history,
        }


def _stain_normalise(run: _Run, base) -> None:
    """Apply ``opts.stain_norm`` (None: as the ``base`` card does) to the run's image sets."""
    ref = (base.params or {}).get("stain_reference") if base is not None else None
    stain_norm = run.opts.stain_norm
    if stain_norm is None:
        stain_norm = base is not None and ref is not None
    run.stain_norm = stain_norm
    if stain_norm:
        from ..stain import normalised_training_sets

        run.reference, run.fit_set, run.tune, run.rep = normalised_training_sets(
            run.fit_set, run.tune, run.rep, reference=ref
        )


def _split(samples, rng, opts: SegmenterTrainOptions) -> tuple[list, list, list]:
    """-> (fit, tune, report) sample lists (tune: the first fitted image when none is held out)."""
    tune_i, rep_i, fit_i = _holdout(samples, rng, opts.tune_images, opts.report_images)
    tune, rep = [samples[i] for i in tune_i], [samples[i] for i in rep_i]
    fit_set = [samples[i] for i in fit_i] or samples
    return fit_set, tune or fit_set[:1], rep


def train_segmenter(
    data,
    out: str | Path,
    options: SegmenterTrainOptions | None = None,
    *,
    seed: int = 0,
    device=None,
    data_mpp: float | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    command: str = "",
    on_epoch=None,
):
    """Train a binary (nucleus) segmenter on a masks dataset and save weights + card to ``out``.

    ``data``: a masks dataset folder (its ``train`` split) or a list of ``MaskSample`` at ``data_mpp``
    (annotations from the viewer); ``data_mpp``: µm per pixel of the dataset (None: ``MONUSEG_MPP``).
    All ``train`` images are used; ``options.tune_images`` of them select the checkpoint and the
    post-processing thresholds and ``options.report_images`` more are held out untouched for the card's
    metrics (``evaluate --split heldout``); the other knobs: :class:`SegmenterTrainOptions`. ``seed``:
    held-out choice, weights and augmentation; ``device``: ``weights.choose_device``'s name;
    ``progress``, ``cancel``, ``on_epoch``: see ``train.fit``; ``command``: recorded in the card.
    Returns ``(model, card)``.
    """
    import torch

    opts = options or SegmenterTrainOptions()
    data_mpp = MONUSEG_MPP if data_mpp is None else data_mpp
    rng = seed_everything(seed)
    dev = choose_device(device)
    samples = load_masks_dataset(data, "train") if isinstance(data, (str, Path)) else list(data)
    if not samples:
        raise InputError("no annotated images to train on")
    data_desc = str(data) if isinstance(data, (str, Path)) else "in-memory: " + ", ".join(s.name for s in samples)[:300]
    check_new_architecture(opts.init, opts.widths)
    model, cfg, base = _initial_model(opts, dev)
    model = model.to(memory_format=torch.channels_last)
    run = _Run(opts, out, command, data_desc, data_mpp, seed, dev, rng, *_split(samples, rng, opts))
    _stain_normalise(run, base)
    run.dataset = MultiScaleTiles(run.fit_set, opts.tile, per_grid=opts.per_grid)
    run.card = card = _new_card(out, cfg, _model_mpp(opts, base, run.fit_set, data_mpp))
    run.steps = max(1, len(run.dataset.cells(np.random.default_rng(0))) // opts.batch_size)
    tcfg = TrainConfig(
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        lr=opts.lr,
        seed=seed,
        device=str(dev),
        ema=opts.ema,
        amp=opts.amp,
    )
    t0 = time.time()
    loss = lambda m, b: segmenter_loss(m, b, opts.lovasz)
    res = fit(model, loss, run.batches, run.validate, tcfg, run.steps, progress, cancel, on_epoch, run.checkpoint)
    model.load_state_dict(res.best_state)
    model.eval()
    maps = [predict_maps(model, card, s.image, data_mpp) for s in run.tune]
    card.params.update(tune_params(maps, run.tune, data_mpp, SegmentParams()), stain_reference=run.reference)
    train_seconds = round(time.time() - t0, 1)
    card.metrics = run.heldout_metrics(model)
    card.training = run.record(res, train_seconds)
    save_model(model, card, out)
    return model, card
