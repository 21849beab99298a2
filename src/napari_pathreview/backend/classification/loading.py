"""Which models are classifiers, and loading one."""

from __future__ import annotations

from ..errors import InputError
from ..weights import load_model, resolve

CLASSIFIER_TASKS = ("classifier", "vit")


def classifier_task(ref) -> str:
    """The card task (``classifier`` or ``vit``) of a model name/path; InputError for any other model."""
    _, card = resolve(ref)
    if card.task not in CLASSIFIER_TASKS:
        raise InputError(f"{ref}: is a {card.task} model; explain needs a classifier or vit model")
    return card.task


def load_classifier(ref, device=None):
    """(model, card) of a CNN classifier or ViT by name/path, in eval mode on ``device``."""
    return load_model(ref, classifier_task(ref), device)
