"""The models pipelines run: cached loading by name or path, ensembles, and the precision scope."""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

from ..errors import InputError
from ..precision import resolve as resolve_precision
from ..precision import use, verified
from ..slides import open_slide
from ..weights import choose_device, default_model, load_model, resolve
from .views import region_view

CLASSIFIER_TASKS = ("classifier", "vit")


@lru_cache(maxsize=8)
def _cached_model(ref, task, device, stamp):

    return load_model(ref, task, device)


def _stamp(ref: str, task: str) -> tuple | None:
    """(mtime ns, size) of the weights file and its card: a model saved again under the same path (the
    Train dock's output, a re-tuned card) is loaded again. None when ``ref`` does not resolve (loading
    then says why)."""
    try:
        path = Path(resolve(ref, task)[0])
    except InputError:
        return None
    return tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in (path, path.with_suffix(".json")) if f.exists())


def get_model(ref: str | None, task: str, device: str | None = None):
    """(model, card) for a name/path (shipped default when None), cached per (ref, device) while its files
    are unchanged."""
    ref = str(ref) if ref else default_model(task)
    return _cached_model(ref, task, device or None, _stamp(ref, task))


def get_models(weights, task: str, device):
    """(models, cards) for one weights ref or a list of them (an ensemble)."""
    refs = list(weights) if isinstance(weights, (list, tuple)) and weights else [weights]
    pairs = [get_model(r, task, device) for r in refs]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def get_classifier(ref: str | None = None, device: str | None = None):
    """(model, card) of a CNN classifier or ViT by name/path (shipped classifier when None), cached."""

    if not ref:
        return get_model(None, "classifier", device)
    _, card = resolve(ref)
    if card.task not in CLASSIFIER_TASKS:
        raise InputError(f"{ref}: is a {card.task} model; explain needs a classifier or vit model")
    return get_model(ref, card.task, device)


def common_card(cards):
    """One card for an ensemble's precision check: verified only where every member's card says so."""
    from types import SimpleNamespace

    if len(cards) == 1:
        return cards[0]
    common = set.intersection(*(set(verified(c)) for c in cards))
    return SimpleNamespace(training={"precision": {"verified": sorted(common)}})


def at_precision(precision: str | None, model, card):
    """The scope a network runs in: ``precision`` (fp32 / bf16 / fp16 / auto, see ``backend.precision``)
    resolved for the model's device and card; None keeps the scope already set (fp32 by default)."""

    if precision is None:
        return contextlib.nullcontext()
    return use(resolve_precision(precision, next(model.parameters()).device, card))


def sibling(stem: Path, suffix: str) -> Path:
    """``OUT/<stem><suffix>`` (``with_suffix`` would cut a dotted stem such as ``img.v2``)."""
    return stem.with_name(stem.name + suffix)


def per_slide(progress, name: str):
    """A progress callback that prefixes each message with the slide's name (None stays None)."""
    return None if progress is None else (lambda a, b, m: progress(a, b, f"{name}: {m}"))


def validate_inputs(inputs, mpp, models=(), device: str | None = None, view=(None, None)) -> None:
    """Before any work: open every input (refusing an unreadable one with its own message, and a
    ``view`` = (region, level) it does not hold, see ``views.region_view``), find each ``(ref, task)`` of
    ``models`` (a name or path that is no model is refused) and the device."""
    for p in inputs:
        s = open_slide(p, mpp=mpp)
        region_view(s, *view, mpp, str(p))
    for ref, task in models:
        if ref:
            resolve(ref, task)
    choose_device(device)


def refuse_file_as_folder(out: Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give --out a folder")
    return out


def model_digest(weights, task: str) -> str:
    """12 hex digits that change when the model's weights file or its card's ``params`` (decoding, per-image
    rules) change: a rerun after an upgrade or a re-tuned card is another job, not a finished one."""
    import hashlib
    import json

    path, card = resolve(weights or default_model(task), task)
    h = hashlib.sha1(json.dumps(card.params or {}, sort_keys=True, default=str).encode())
    h.update(Path(path).read_bytes())
    return h.hexdigest()[:12]


def job_key(job: str, weights, task: str, precision: str | None = None, **fields) -> dict:
    """What makes two batch runs the same job (a rerun with the same key skips finished slides): the
    job, the model's name (the shipped default's when None) and :func:`model_digest`, ``fields``, and a
    reduced precision."""
    name = str(weights) if weights else default_model(task)
    key = {"job": job, "weights": name, "model": model_digest(weights, task), **fields}
    if precision not in (None, "fp32"):
        key["precision"] = precision
    return key
