"""Evaluating a classifier on a labels.csv split: scores and the faithfulness of its explanations.

Sits above ``explain`` and ``classification`` (it uses both); neither imports it.
"""

from __future__ import annotations

import numpy as np

from .classification import (
    ClassifierEvalOptions,
    classification_metrics,
    decide,
    load_classifier,
    load_split,
    predict_probs,
    stain_shifted,
    targets_of,
    to_model_scale,
)
from .errors import InputError, ProgressFn, check_cancel, report
from .explain import faithfulness as explanation_faithfulness
from .explain import methods_for
from .slides import open_slide
from .weights import default_model


def _score_image(model, card, img, i: int, opts: ClassifierEvalOptions, methods) -> tuple:
    """(probabilities ``(1, K)``, {method: faithfulness row} or None) of one model-scale image."""
    p = predict_probs(model, card, img[None], tta=bool(card.params.get("tta")))
    if not opts.faithfulness:
        return p, None
    return p, explanation_faithfulness(model, card, img, int(np.argmax(decide(p, card)[0])), methods, seed=i)


def evaluate_classifier(
    data,
    split: str | None = "testA",
    weights=None,
    options: ClassifierEvalOptions | None = None,
    *,
    device=None,
    progress: ProgressFn | None = None,
    cancel=None,
    task: str = "classifier",
) -> dict:
    """Score a classifier on a labels.csv split (TTA and thresholds as its card says).

    ``options`` (:class:`ClassifierEvalOptions`: ``mpp``, ``faithfulness``, ``methods``, ``limit``,
    ``stain_shift``; None: its defaults). Returns ``{accuracy, balanced_accuracy, auc, f1, per_class,
    n_images, faithfulness}``; ``faithfulness[method] = {deletion_auc, random_deletion_auc,
    insertion_auc, random_insertion_auc}`` (means over images, explaining the predicted class; see
    ``backend.explain.faithfulness``). ``weights=None``: the shipped model of ``task`` (``classifier``
    or ``vit``).
    """
    opts = options or ClassifierEvalOptions()
    model, card = load_classifier(weights or default_model(task), device)
    images, classes, _ = load_split(data, split)
    images = images[: opts.limit] if opts.limit else images
    unknown = sorted({c for s in images for c in s.labels} - set(card.classes))
    if unknown:
        raise InputError(f"{data}: labels {unknown} are not classes of {card.name} ({card.classes})")
    targets = targets_of(images, list(card.classes))
    methods = list(opts.methods or methods_for(card))
    probs, curves = [], {m: [] for m in methods}
    for i, s in enumerate(images):
        check_cancel(cancel)
        img = to_model_scale(open_slide(s.path), card, opts.mpp or card.params.get("input_mpp"))
        img = stain_shifted(img, i, opts.stain_shift)
        p, faith = _score_image(model, card, img, i, opts, methods)
        probs.append(p)
        for m in methods if faith else ():
            curves[m].append(faith[m])
        report(progress, i + 1, len(images), f"{s.name}")
    out = classification_metrics(np.concatenate(probs), targets, card)
    out["model"] = card.name
    out["split"] = split
    if opts.stain_shift:
        out["stain_shift"] = float(opts.stain_shift)
    if opts.faithfulness:
        out["faithfulness"] = {m: {k: float(np.mean([c[k] for c in curves[m]])) for k in curves[m][0]} for m in methods}
    return out
