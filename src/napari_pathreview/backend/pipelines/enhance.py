"""Cell-class correction with the enhancer (detect first when given an image), and the batch over files."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from ..batch import run_batch
from ..enhancement import enhance_points, features_at_points
from ..errors import InputError, ProgressFn, check_cancel
from ..exchange import write_geojson, write_points_csv
from ..points import CellPoints
from ..precision import resolve, use
from ..slides import open_slide
from .detect import DetectOptions, detect
from .models import get_model, job_key, model_digest, per_slide, refuse_file_as_folder, sibling, validate_inputs
from .views import view_key


@dataclass
class EnhanceOptions:
    """How to enhance. ``weights``: enhancer name or path (None: shipped); ``detector``: the detector
    whose cells it corrects (None: the one the enhancer's card names). ``mpp``: the input's microns per
    pixel when the file does not say. ``tta``: the detector's 8-fold rotation / flip averaging.
    ``precision``: fp32 / bf16 / fp16 / auto for the detector's and the enhancer's networks (each
    resolved against its own card). ``return_attention``: keep the attention edges for the viewer.
    ``level`` / ``region``: the detector's pyramid level and region (x, y, w, h level-0 pixels), as in
    :class:`DetectOptions` (used when the cells are detected here)."""

    weights: str | None = None
    detector: str | None = None
    mpp: float | None = None
    device: str | None = None
    tta: bool | None = None
    precision: str | None = None
    return_attention: bool = True
    level: int | None = None
    region: object = None


def enhance(
    image=None,
    points: CellPoints | None = None,
    options: EnhanceOptions | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
):
    """Correct cell classes with the enhancer -> ``enhancement.EnhanceResult`` (base, enhanced, changed,
    attention edges).

    With ``points`` (CellPoints, e.g. a detector layer's cells) the enhancer runs on them; points without
    feature vectors get them sampled from ``image`` with the enhancer's detector. Without ``points``, the
    enhancer's detector first detects the cells in ``image`` (an (H, W, 3) array or a Slide).
    """

    o = options or EnhanceOptions()
    model, card = get_model(o.weights, "enhancer", o.device)
    o = replace(o, detector=o.detector or card.params.get("detector"))
    # the detector and the enhancer each at what their own card verifies
    scope = contextlib.nullcontext() if o.precision is None else use(resolve(o.precision, _device(model), card))
    with scope:
        points = _cells(image, points, o, progress, cancel, name)
        check_cancel(cancel)
        return enhance_points(points, model, card, return_attention=o.return_attention)


def _device(model):
    return next(model.parameters()).device


def _cells(image, points: CellPoints | None, o: EnhanceOptions, progress, cancel, name: str) -> CellPoints:
    """The cells to correct, with the detector's feature vectors: detected in ``image`` when no
    ``points`` are given, else ``points`` with their features sampled from ``image`` when missing."""
    import numpy as np

    if points is None:
        if image is None:
            raise InputError("enhance: give an image or detected points")
        det = DetectOptions(
            o.detector, o.mpp, o.device, tta=o.tta, precision=o.precision, level=o.level, region=o.region
        )
        return detect(image, det, progress=progress, cancel=cancel, name=name)
    if points.features is None:
        if image is None:
            raise InputError("these points carry no detector features: give their image so they can be sampled")
        dm, dc = get_model(o.detector, "detector", o.device)
        feats, probs = features_at_points(image, points.yx, dm, dc, o.mpp or points.mpp, progress, cancel)
        if not len(points) or not np.any(points.probs):
            points.probs = probs
        points.features = feats
        points.mpp = points.mpp or o.mpp or dc.mpp
    return points


def _enhance_outputs(stem: Path) -> list[Path]:
    return [sibling(stem, ".csv"), sibling(stem, ".geojson"), sibling(stem, ".base.csv")]


def _enhance_one(path: str, stem: Path, options: EnhanceOptions, progress=None, cancel=None) -> list[Path]:
    """One slide of ``enhance_files``: ``stem.csv``, ``stem.geojson`` (enhanced) and ``stem.base.csv``."""

    s = open_slide(path, mpp=options.mpp)
    # the slide's own mpp (or --mpp, given to open_slide) wins over options.mpp inside enhance
    o = replace(options, mpp=None, return_attention=False)
    r = enhance(s, options=o, progress=per_slide(progress, s.name), cancel=cancel, name=s.path)
    csv_path, geojson, base = _enhance_outputs(stem)
    written = [
        write_points_csv(r.enhanced, csv_path),
        write_geojson(r.enhanced, geojson),
        write_points_csv(r.base, base),
    ]
    if progress is not None:
        progress(1, 1, f"{s.name}: {len(r.enhanced)} cells, {int(r.changed.sum())} changed")
    return written


def enhance_job_key(o: EnhanceOptions) -> dict:
    tta = {"tta": True} if o.tta else {}
    view = view_key(o.region, o.level)
    detector = {"detector": o.detector, "detector_model": model_digest(o.detector, "detector")}
    return job_key("enhance", o.weights, "enhancer", o.precision, mpp=o.mpp, **detector, **tta, **view)


def enhance_files(inputs, out, options=None, batch=None, progress=None, cancel=None) -> dict:
    """Detect + enhance each input file; write ``OUT/<name>.csv`` and ``OUT/<name>.geojson`` (enhanced
    classes; the base detector's classes are in ``OUT/<name>.base.csv``). One idempotent task per slide
    (``backend.batch``): reruns skip slides already done by the same job; an existing output pathreview
    did not write is refused before any work unless ``batch.overwrite`` (``batch``: workers, scheduler,
    overwrite). Returns ``{"written", "skipped", "ran"}``.
    ``options``: :class:`EnhanceOptions` (None: the defaults); ``batch``: :class:`~..batch.BatchOptions` (workers,
    scheduler, overwrite; None: here, no overwrite).
    """

    o = options or EnhanceOptions()
    out = refuse_file_as_folder(out)
    validate_inputs(inputs, o.mpp, [(o.weights, "enhancer"), (o.detector, "detector")], o.device, (o.region, o.level))
    run = partial(_enhance_one, options=o, progress=progress, cancel=cancel)
    return run_batch(inputs, out, run, enhance_job_key(o), batch, progress, cancel, _enhance_outputs)
