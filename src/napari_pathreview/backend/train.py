"""One training loop for every task: epochs, validation, best-checkpoint keeping, progress and cancel."""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .errors import ProgressFn, check_cancel, report


@dataclass
class TrainConfig:
    """Optimisation settings shared by all tasks. lr schedule: "cosine", "step" or "cosine-restarts".

    ``ema`` > 0: validate, checkpoint and return an exponential moving average of the weights (and batch-norm
    statistics), updated after every step with this decay (0.99 ≈ a 100-step memory); 0 keeps the raw weights.
    ``amp``: run the training forward passes under bfloat16 autocast (weights, optimiser and validation stay
    float32; the loss functions cast the network's outputs back to float32). Pays on CPUs with AMX /
    AVX512-BF16 and on GPUs; elsewhere it can be slower. ``freeze_bn``: batch-norm layers stay in eval
    mode while training (their running mean / variance are not re-estimated on the training crops; their
    affine weights still learn), what a fine-tune on a few images needs to keep its base's statistics."""

    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    seed: int = 0
    device: str | None = None
    ema: float = 0.0
    amp: bool = False
    freeze_bn: bool = False


@dataclass
class FitResult:
    """Best weights (by validation ``score``), the epoch they came from, and per-epoch history."""

    best_state: dict
    best_epoch: int
    best_val: dict
    history: list = field(default_factory=list)
    seconds: float = 0.0


def check_new_architecture(init, widths) -> None:
    """``widths`` builds a new model; a model to fine-tune (``init``) already has its architecture."""
    from .errors import InputError

    if init is not None and widths:
        raise InputError(f"--widths sets the architecture of a new model; {init} already has one: drop one of them")


def freeze_batchnorm(model) -> int:
    """Put every batch-norm layer of ``model`` in eval mode (running statistics used, not updated);
    -> how many layers. Call after ``model.train()``, which turns them back."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.eval()
    return len(bns)


def seed_everything(seed: int) -> np.random.Generator:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def build_scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    import torch

    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, total // 3), gamma=0.3)
    if cfg.schedule == "cosine-restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=max(1, total // 3))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )


def fit(
    model,
    loss_fn: Callable,
    batches: Callable[[int], Iterable],
    validate: Callable[[object], dict],
    cfg: TrainConfig,
    steps_per_epoch: int,
    progress: ProgressFn | None = None,
    cancel=None,
    on_epoch: Callable[[dict], None] | None = None,
    on_best: Callable[[object, dict], None] | None = None,
) -> FitResult:
    """Train ``model`` and keep the weights with the best validation score.

    loss_fn(model, batch) -> scalar tensor; batches(epoch) -> iterable of ``steps_per_epoch`` batches;
    validate(model) -> dict with a ``score`` (higher is better); on_best(model, row) runs at each new best
    (a checkpoint). With ``cfg.ema`` both receive the averaged model, and the best state is the average's.
    Raises Cancelled when ``cancel`` is set.
    """
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    ema = None
    if cfg.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    scored = model if ema is None else ema.module
    dev_type = next(model.parameters()).device.type
    autocast = (lambda: torch.autocast(dev_type, dtype=torch.bfloat16)) if cfg.amp else contextlib.nullcontext
    best, history, t0 = None, [], time.time()
    for epoch in range(cfg.epochs):
        model.train()
        if cfg.freeze_bn:
            freeze_batchnorm(model)
        losses = []
        for batch in batches(epoch):
            check_cancel(cancel)
            with autocast():
                loss = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            losses.append(float(loss.detach()))
        scored.eval()
        with torch.no_grad():
            val = validate(scored)
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": opt.param_groups[0]["lr"],
            "seconds": round(time.time() - t0, 1),
            **val,
        }
        history.append(row)
        if best is None or val["score"] > best.best_val["score"]:
            best = FitResult(
                copy.deepcopy({k: v.detach().cpu() for k, v in scored.state_dict().items()}), epoch + 1, val
            )
            if on_best:
                on_best(scored, row)
        if on_epoch:
            on_epoch(row)
        report(
            progress,
            epoch + 1,
            cfg.epochs,
            f"epoch {epoch + 1}/{cfg.epochs} loss {row['loss']:.4f} val {val['score']:.4f}",
        )
    best.history, best.seconds = history, time.time() - t0
    return best
