"""Thresholds from out-of-fold probabilities: k models, each trained without one fold of the training
images, predict that fold; the per-class thresholds are searched on all of them.

The tune images (10 for GlaS) are usually separated at any threshold, so they do not choose one; the
out-of-fold probabilities of every training image (44 for GlaS), plus stain-shifted copies, do.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import ProgressFn, check_cancel, report
from .metrics import classification_metrics, search_thresholds
from .model_input import predict_probs, stain_shifted

_KEYS = ("accuracy", "balanced_accuracy", "auc", "f1", "n_images")


def stratified_folds(targets: np.ndarray, k: int, rng) -> list[np.ndarray]:
    """``k`` disjoint index arrays covering every image, each class spread evenly (by first label)."""
    key = targets.argmax(1)
    folds = [[] for _ in range(k)]
    offset = 0
    for c in np.unique(key):
        for j, i in enumerate(rng.permutation(np.flatnonzero(key == c))):
            folds[(offset + j) % k].append(int(i))
        offset += int((key == c).sum())
    return [np.sort(np.asarray(f, int)) for f in folds]


def _fold_probs(model, run, idx: np.ndarray, shift: float) -> np.ndarray:
    """Probabilities ``(n, K)`` (TTA) of the images ``idx``, then ``(3 n, K)`` stain-shifted copies when
    ``shift`` > 0 (seeds as ``_Run.tune_probs``)."""
    copies = [(i, 0.0, 0) for i in idx]
    if shift > 0:
        copies += [(i, shift, 100 * r + int(i)) for r in (1, 2, 3) for i in idx]
    return np.concatenate(
        [predict_probs(model, run.card, stain_shifted(run.pix[i], seed, s)[None], tta=True) for i, s, seed in copies]
    )


def fold_thresholds(images, run, train_fn, progress: ProgressFn | None = None, cancel=None) -> dict:
    """Train ``run.opts.threshold_folds`` fold models (the run's options, nothing held out inside a fold,
    seed ``opts.seed + 1 + f``), set ``run.card.params["thresholds"]`` from their out-of-fold
    probabilities (+ ``tune_shift`` copies) and record ``metrics["out_of_fold"]`` (at those thresholds,
    images as they are, with each image's last-class probability) and ``["out_of_fold_shifted"]``.
    With ``init`` every fold fine-tunes the same base: out of fold only if the base never saw these
    images. ``train_fn``: ``train_classifier`` (passed in: this module sits below ``train``). Returns the
    out-of-fold metrics."""
    opts, k = run.opts, int(run.opts.threshold_folds)
    shift = opts.tune_shift if run.card.in_channels == 3 else 0.0
    folds = stratified_folds(run.targets, k, np.random.default_rng(opts.seed + 1000))
    plain, shifted = np.zeros(run.targets.shape, np.float32), np.zeros((3, *run.targets.shape), np.float32)
    for f, idx in enumerate(folds):
        check_cancel(cancel)
        keep = [images[i] for i in np.setdiff1d(np.arange(len(images)), idx)]
        fold_opts = replace(opts, seed=opts.seed + 1 + f, tune_images=0, threshold_folds=0, checkpoints=False)
        with tempfile.TemporaryDirectory() as tmp:  # fold models are not kept
            model, _ = train_fn(keep, Path(tmp) / f"fold{f}", fold_opts, device=run.dev, cancel=cancel)
        p = _fold_probs(model, run, idx, shift)
        plain[idx] = p[: len(idx)]
        if shift > 0:
            shifted[:, idx] = p[len(idx) :].reshape(3, len(idx), -1)
        report(progress, f + 1, k, f"threshold fold {f + 1}/{k}")
    probs = np.concatenate([plain, *shifted]) if shift > 0 else plain
    targets = np.tile(run.targets, (len(probs) // len(plain), 1))
    run.card.params["thresholds"] = search_thresholds(probs, targets, run.multi)
    m = classification_metrics(plain, run.targets, run.card)
    oof = [round(float(x), 4) for x in plain[:, -1]]
    run.card.metrics["out_of_fold"] = {**{k_: m[k_] for k_ in _KEYS}, "folds": k, "probabilities": oof}
    if shift > 0:
        ms = classification_metrics(probs[len(plain) :], targets[len(plain) :], run.card)
        run.card.metrics["out_of_fold_shifted"] = {**{k_: ms[k_] for k_ in _KEYS}, "stain_shift": shift}
    return run.card.metrics["out_of_fold"]
