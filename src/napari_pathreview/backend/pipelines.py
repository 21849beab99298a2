"""Pipelines: image in, plain results out. The widgets, the CLI and the tests call these same functions."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .errors import InputError, ProgressFn, check_cancel
from .points import CellPoints


@lru_cache(maxsize=8)
def _cached_model(ref, task, device):
    from .weights import load_model

    return load_model(ref, task, device)


def get_model(ref: str | None, task: str, device: str | None = None):
    """(model, card) for a name/path (shipped default when None), cached per (ref, device)."""
    from .weights import default_model

    return _cached_model(str(ref) if ref else default_model(task), task, device or None)


def _at_precision(precision: str | None, model, card):
    """The scope a network runs in: ``precision`` (fp32 / bf16 / fp16 / auto, see ``backend.precision``)
    resolved for the model's device and card; None keeps the scope already set (fp32 by default)."""
    import contextlib

    from .precision import resolve, use

    if precision is None:
        return contextlib.nullcontext()
    return use(resolve(precision, next(model.parameters()).device, card))


def detect(
    image,
    weights: str | None = None,
    mpp: float | None = None,
    device: str | None = None,
    threshold: float | None = None,
    min_distance_um: float | None = None,
    tta: bool | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
    precision: str | None = None,
) -> CellPoints:
    """Detect cells in an (H, W, 3) array or a Slide -> CellPoints in level-0 pixels of the input.

    ``tta``: average the 8 rotations / flips of every tile (8x slower; None: the card's setting).
    ``precision``: fp32 / bf16 / fp16 / auto for the network (decoding stays float32)."""
    from .detection import DetectParams
    from .detection import detect as _detect

    model, card = get_model(weights, "detector", device)
    params = DetectParams.from_card(card, threshold=threshold, min_distance_um=min_distance_um, tta=tta)
    with _at_precision(precision, model, card):
        return _detect(image, model, card, mpp=mpp, params=params, progress=progress, cancel=cancel, name=name)


def _sibling(stem: Path, suffix: str) -> Path:
    """``OUT/<stem><suffix>`` (``with_suffix`` would cut a dotted stem such as ``img.v2``)."""
    return stem.with_name(stem.name + suffix)


def _detect_outputs(stem: Path) -> list[Path]:
    return [_sibling(stem, ".csv"), _sibling(stem, ".geojson")]


def _detect_one(
    path: str, stem: Path, weights=None, mpp=None, device=None, threshold=None, tta=None, precision=None
) -> list[Path]:
    """One slide of ``detect_files``: ``stem.csv`` + ``stem.geojson`` (each written atomically)."""
    from .exchange import write_geojson, write_points_csv
    from .slides import open_slide

    s = open_slide(path, mpp=mpp)
    pts = detect(s, weights, device=device, threshold=threshold, tta=tta, name=s.path, precision=precision)
    csv_path, geojson = _detect_outputs(stem)
    return [write_points_csv(pts, csv_path), write_geojson(pts, geojson)]


def detect_files(
    inputs,
    out: str | Path,
    weights=None,
    mpp=None,
    device=None,
    threshold=None,
    tta=None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    overwrite: bool = False,
    precision: str | None = None,
) -> dict:
    """Detect cells in each input file; write ``OUT/<name>.csv`` and ``OUT/<name>.geojson`` per input.

    Every input is opened (validated) before any work. Slides already done by the same job (model,
    threshold, mpp, unchanged input) are skipped, so a rerun after a crash only does what is left;
    ``workers``/``scheduler`` run the slides on a Dask cluster (see ``backend.batch``). An existing
    output pathreview did not write (e.g. the user's QuPath ``NAME.geojson`` beside the slide) is refused
    before any work unless ``overwrite``. Returns ``{"written", "skipped", "ran"}``.
    """
    from functools import partial

    from .batch import run_batch
    from .slides import open_slide
    from .weights import default_model

    for p in inputs:
        open_slide(p, mpp=mpp)
    name = str(weights) if weights else default_model("detector")
    key = {"job": "detect", "weights": name, "mpp": mpp, "threshold": threshold}
    if tta:
        key["tta"] = True  # keeps the key of earlier non-TTA jobs unchanged
    if precision not in (None, "fp32"):
        key["precision"] = precision
    run = partial(
        _detect_one, weights=weights, mpp=mpp, device=device, threshold=threshold, tta=tta, precision=precision
    )
    return run_batch(
        inputs,
        out,
        run,
        key,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        cancel=cancel,
        planned=_detect_outputs,
        overwrite=overwrite,
    )


def _common_card(cards):
    """One card for an ensemble's precision check: verified only where every member's card says so."""
    from types import SimpleNamespace

    from .precision import verified

    if len(cards) == 1:
        return cards[0]
    common = set.intersection(*(set(verified(c)) for c in cards))
    return SimpleNamespace(training={"precision": {"verified": sorted(common)}})


def _models(weights, task: str, device):
    """(models, cards) for one weights ref or a list of them (an ensemble)."""
    refs = list(weights) if isinstance(weights, (list, tuple)) and weights else [weights]
    pairs = [get_model(r, task, device) for r in refs]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def segment(
    image,
    weights=None,
    mpp: float | None = None,
    device: str | None = None,
    tile: int | None = None,
    overlap: float | None = None,
    tta: bool | None = None,
    ensemble: str = "mean",
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
    stain_norm: bool | None = None,
    precision: str | None = None,
):
    """Segment an (H, W, 3) array or a Slide in memory -> SegmentationResult (instances + probabilities).

    ``weights``: a model name/path, a list of them (ensemble: ``"mean"`` or ``"union"``), or None (shipped).
    ``stain_norm``: False ignores the card's hematoxylin reference (non-H&E images).
    ``precision``: fp32 / bf16 / fp16 / auto for the network(s) (``auto``: verified by every card);
    blending and watershed stay float32.
    """
    from .segmentation import segment as _segment

    models, cards = _models(weights, "segmenter", device)
    with _at_precision(precision, models[0], _common_card(cards)):
        return _segment(
            image,
            models,
            cards,
            mpp=mpp,
            tile=tile,
            overlap=overlap,
            tta=tta,
            ensemble=ensemble,
            progress=progress,
            cancel=cancel,
            name=name,
            stain_norm=stain_norm,
        )


def segment_file(
    input,
    out: str | Path,
    weights=None,
    mpp: float | None = None,
    device: str | None = None,
    tile: int | None = None,
    overlap: float | None = None,
    tta: bool | None = None,
    ensemble: str = "mean",
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel=None,
    compile: bool = False,
    stain_norm: bool | None = None,
    precision: str | None = None,
) -> Path:
    """Segment one slide/image file tile by tile into an OME-Zarr labels store at ``out`` (bounded memory).
    ``compile``: ``torch.compile`` the network (faster per tile after a ~20-30 s first call);
    ``stain_norm``: False ignores the card's hematoxylin reference; ``precision``: see :func:`segment`."""
    from .atomic import refuse_input_as_output, writable_folder
    from .segmentation import segment_to_zarr
    from .slides import open_slide

    out = Path(out)
    refuse_input_as_output(out, [input])
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; choose another output or pass --overwrite")
    writable_folder(out.absolute().parent, "--out")
    slide = open_slide(input, mpp=mpp)
    models, cards = _models(weights, "segmenter", device)
    with _at_precision(precision, models[0], _common_card(cards)):
        return segment_to_zarr(
            slide,
            out,
            models,
            cards,
            tile=tile,
            overlap=overlap,
            tta=tta,
            ensemble=ensemble,
            overwrite=overwrite,
            progress=progress,
            cancel=cancel,
            name=slide.path,
            compile=compile,
            stain_norm=stain_norm,
        )


def _segment_outputs(stem: Path) -> list[Path]:
    return [_sibling(stem, ".zarr")]


def _segment_one(path: str, stem: Path, **kw) -> list[Path]:
    """One slide of ``segment_files``: ``stem.zarr``, replaced when it exists: ``run_batch`` has checked
    it is ours (listed in the slide's record) or that ``--overwrite`` was given, and not the input."""
    return [segment_file(path, _sibling(stem, ".zarr"), overwrite=True, **kw)]


def segment_files(
    inputs,
    out: str | Path,
    weights=None,
    mpp=None,
    device=None,
    tile=None,
    overlap=None,
    tta=None,
    ensemble: str = "mean",
    overwrite: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    compile: bool = False,
    stain_norm: bool | None = None,
    precision: str | None = None,
) -> dict:
    """Segment many slides into ``OUT/<name>.zarr`` each (tile by tile, bounded memory), one idempotent
    task per slide on this process or a Dask cluster; reruns skip slides already done by the same job
    (see ``backend.batch``). An existing store pathreview did not write (its record does not list it) is
    refused unless ``overwrite``; a store that is one of the inputs is refused always."""
    from functools import partial

    from .batch import run_batch
    from .slides import open_slide
    from .weights import default_model

    for p in inputs:
        open_slide(p, mpp=mpp)
    refs = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    names = [str(r) if r else default_model("segmenter") for r in refs]
    key = {
        "job": "segment",
        "weights": names,
        "mpp": mpp,
        "tile": tile,
        "overlap": overlap,
        "tta": tta,
        "ensemble": ensemble,
        **({"stain_norm": False} if stain_norm is False else {}),
        **({"precision": precision} if precision not in (None, "fp32") else {}),
    }
    run = partial(
        _segment_one,
        weights=weights,
        mpp=mpp,
        device=device,
        tile=tile,
        overlap=overlap,
        tta=tta,
        ensemble=ensemble,
        compile=compile,
        stain_norm=stain_norm,
        precision=precision,
    )
    return run_batch(
        inputs,
        out,
        run,
        key,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        cancel=cancel,
        planned=_segment_outputs,
        overwrite=overwrite,
    )


def enhance(
    image=None,
    points: CellPoints | None = None,
    weights: str | None = None,
    detector: str | None = None,
    mpp: float | None = None,
    device: str | None = None,
    return_attention: bool = True,
    tta: bool | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
    precision: str | None = None,
):
    """Correct cell classes with the enhancer -> ``enhancement.EnhanceResult`` (base, enhanced, changed,
    attention edges).

    With ``points`` (CellPoints, e.g. a detector layer's cells) the enhancer runs on them; points without
    feature vectors get them sampled from ``image`` with the enhancer's detector. Without ``points``, the
    enhancer's detector first detects the cells in ``image`` (an (H, W, 3) array or a Slide), with the
    8-fold rotation / flip test-time augmentation when ``tta``. ``precision``: fp32 / bf16 / fp16 / auto for
    the detector's and the enhancer's networks (each resolved against its own card).
    """
    model, card = get_model(weights, "enhancer", device)
    det = detector or card.params.get("detector")
    if precision is not None:  # the detector and the enhancer each at what their own card verifies
        from .precision import resolve, use

        with use(resolve(precision, next(model.parameters()).device, card)):
            return _enhance(
                image, points, model, card, det, mpp, device, return_attention, tta, progress, cancel, name, precision
            )
    return _enhance(image, points, model, card, det, mpp, device, return_attention, tta, progress, cancel, name, None)


def _enhance(image, points, model, card, det, mpp, device, return_attention, tta, progress, cancel, name, precision):
    import numpy as np

    from .enhancement import enhance_points, features_at_points

    if points is None:
        if image is None:
            raise InputError("enhance: give an image or detected points")
        points = detect(
            image,
            det,
            mpp=mpp,
            device=device,
            tta=tta,
            progress=progress,
            cancel=cancel,
            name=name,
            precision=precision,
        )
    elif points.features is None:
        if image is None:
            raise InputError("these points carry no detector features: give their image so they can be sampled")
        dm, dc = get_model(det, "detector", device)
        feats, probs = features_at_points(image, points.yx, dm, dc, mpp or points.mpp, progress, cancel)
        if not len(points) or not np.any(points.probs):
            points.probs = probs
        points.features = feats
        points.mpp = points.mpp or mpp or dc.mpp
    check_cancel(cancel)
    return enhance_points(points, model, card, return_attention=return_attention)


def _enhance_outputs(stem: Path) -> list[Path]:
    return [_sibling(stem, ".csv"), _sibling(stem, ".geojson"), _sibling(stem, ".base.csv")]


def _enhance_one(
    path: str,
    stem: Path,
    weights=None,
    detector=None,
    mpp=None,
    device=None,
    tta=None,
    progress=None,
    cancel=None,
    precision=None,
) -> list[Path]:
    """One slide of ``enhance_files``: ``stem.csv``, ``stem.geojson`` (enhanced) and ``stem.base.csv``."""
    from .exchange import write_geojson, write_points_csv
    from .slides import open_slide

    s = open_slide(path, mpp=mpp)
    r = enhance(
        s,
        weights=weights,
        detector=detector,
        device=device,
        return_attention=False,
        tta=tta,
        cancel=cancel,
        name=s.path,
        precision=precision,
        progress=None if progress is None else (lambda a, b, m: progress(a, b, f"{s.name}: {m}")),
    )
    csv_path, geojson, base = _enhance_outputs(stem)
    written = [
        write_points_csv(r.enhanced, csv_path),
        write_geojson(r.enhanced, geojson),
        write_points_csv(r.base, base),
    ]
    if progress is not None:
        progress(1, 1, f"{s.name}: {len(r.enhanced)} cells, {int(r.changed.sum())} changed")
    return written


def enhance_files(
    inputs,
    out: str | Path,
    weights=None,
    detector=None,
    mpp=None,
    device=None,
    tta=None,
    progress: ProgressFn | None = None,
    cancel=None,
    overwrite: bool = False,
    precision: str | None = None,
) -> dict:
    """Detect + enhance each input file; write ``OUT/<name>.csv`` and ``OUT/<name>.geojson`` (enhanced
    classes; the base detector's classes are in ``OUT/<name>.base.csv``). One idempotent task per slide
    (``backend.batch``): reruns skip slides already done by the same job; an existing output pathreview
    did not write is refused before any work unless ``overwrite``. Returns ``{"written", "skipped", "ran"}``.
    """
    from functools import partial

    from .batch import run_batch
    from .slides import open_slide
    from .weights import default_model

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give --out a folder")
    for p in inputs:
        open_slide(p, mpp=mpp)
    key = {
        "job": "enhance",
        "weights": str(weights) if weights else default_model("enhancer"),
        "detector": detector,
        "mpp": mpp,
        **({"tta": True} if tta else {}),
        **({"precision": precision} if precision not in (None, "fp32") else {}),
    }
    run = partial(
        _enhance_one,
        weights=weights,
        detector=detector,
        mpp=mpp,
        device=device,
        tta=tta,
        progress=progress,
        cancel=cancel,
        precision=precision,
    )
    return run_batch(
        inputs, out, run, key, progress=progress, cancel=cancel, planned=_enhance_outputs, overwrite=overwrite
    )


# ---------------------------------------------------------------- classifiers and their heat maps

CLASSIFIER_TASKS = ("classifier", "vit")


def get_classifier(ref: str | None = None, device: str | None = None):
    """(model, card) of a CNN classifier or ViT by name/path (shipped classifier when None), cached."""
    from .weights import resolve

    if not ref:
        return get_model(None, "classifier", device)
    _, card = resolve(ref)
    if card.task not in CLASSIFIER_TASKS:
        raise InputError(f"{ref}: is a {card.task} model; explain needs a classifier or vit model")
    return get_model(ref, card.task, device)


def explain_memory_check(
    image, card, mpp: float | None = None, classes=None, write: bool = False, name: str = "image"
) -> None:
    """Refuse (InputError) an explanation that cannot fit in memory, before any pixel is read: estimated
    (``memory.explain_bytes``) from the level ``classification.to_model_scale`` would read, the model's
    scale, the number of maps and their output grid; ``write``: also the overlays ``explain_files`` writes
    at the full resolution."""
    import numpy as np

    from .classification import input_mpp
    from .explain import MAX_PIXELS, _targets
    from .memory import explain_bytes, require_memory
    from .slides import Slide

    if isinstance(image, Slide):
        full, m, level = image.shape, mpp or image.mpp, 0
        if m and card.mpp:
            level = max(i for i, d in enumerate(image.downsamples) if i == 0 or m * d <= card.mpp * 1.05)
            m = m * image.downsamples[level]
        read, channels = tuple(image.levels[level].shape[:2]), image.channels
    else:
        shape = np.shape(image)
        full = read = tuple(shape[:2])
        channels, m = (shape[2] if len(shape) > 2 else 1), mpp
    factor = input_mpp(card, m) / float(card.mpp) if card.mpp else 1.0
    model_yx = (read[0] * factor, read[1] * factor)
    out = full if full[0] * full[1] <= MAX_PIXELS else model_yx
    n = len(_targets(classes, card))
    need = explain_bytes(read, channels, factor, n, out, full if write else None)
    require_memory(
        need,
        f"{name}: explaining {full[0]} x {full[1]} px ({n} maps)",
        "explain a region or a downsampled copy of the slide (export one from QuPath or napari), or fewer --classes",
    )


def explain(
    image,
    weights: str | None = None,
    method: str = "gradcam",
    classes=None,
    mpp: float | None = None,
    device: str | None = None,
    layer: str | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
):
    """Class probabilities + heat maps of an (H, W, C) array or a Slide -> ``explain.ExplainResult``.

    ``method``: cam, gradcam, lrp-epsilon, lrp-gamma, lrp-a1b0, lrp-a2b1 or rollout (ViT); ``classes``:
    class names or indices to explain (None: all); ``layer``: Grad-CAM layer name (default: last conv).
    Maps come back at the input's pixel grid (see ``ExplainResult.downsample`` for huge slides). A run
    that cannot fit in memory is refused before any pixel is read (``explain_memory_check``).
    """
    from .explain import explain_image

    model, card = get_classifier(weights, device)
    explain_memory_check(image, card, mpp, classes, name=name)
    return explain_image(
        image, model, card, method, classes=classes, mpp=mpp, layer=layer, progress=progress, cancel=cancel, name=name
    )


def _explain_names(stem: Path, method: str, targets) -> list[Path]:
    """The files ``explain.write_explanation`` writes for ``stem`` (its name without ``.ome``)."""
    base = stem.with_name(stem.name.replace(".ome", ""))
    return [_sibling(base, f".{method}.{c}{ext}") for c in targets for ext in (".tif", ".png")] + [
        _sibling(base, f".{method}.json")
    ]


def _explain_one(
    path: str,
    stem: Path,
    weights=None,
    method="gradcam",
    classes=None,
    mpp=None,
    device=None,
    progress=None,
    cancel=None,
) -> list[Path]:
    """One slide of ``explain_files``: its maps, overlays and JSON (see ``_explain_names``)."""
    from dataclasses import replace

    from .explain import write_explanation
    from .slides import open_slide

    s = open_slide(path, mpp=mpp)
    r = explain(
        s,
        weights,
        method,
        classes=classes,
        device=device,
        cancel=cancel,
        name=s.name,
        progress=None if progress is None else (lambda a, b, m: progress(a, b, f"{s.name}: {m}")),
    )
    written = write_explanation(r, replace(s, name=stem.name + ".x"), stem.parent)
    if progress is not None:
        progress(1, 1, f"{s.name}: " + ", ".join(f"{c} {p:.2f}" for c, p in zip(r.classes, r.probs)))
    return written


def explain_files(
    inputs,
    out: str | Path,
    weights=None,
    method: str = "gradcam",
    classes=None,
    mpp=None,
    device=None,
    progress: ProgressFn | None = None,
    cancel=None,
    overwrite: bool = False,
) -> dict:
    """Explain each input; write ``OUT/<name>.<method>.<class>.tif`` (float32 map at the input grid),
    a ``.png`` overlay per class and ``OUT/<name>.<method>.json`` (probabilities, classes, files).

    Every input is opened and its memory need checked before any work; one idempotent task per slide
    (``backend.batch``): reruns skip slides already done by the same job, and an existing output
    pathreview did not write is refused unless ``overwrite``. Returns ``{"written", "skipped", "ran"}``.
    """
    from functools import partial

    from .batch import run_batch
    from .explain import _targets, method_fn
    from .slides import open_slide

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give --out a folder")
    _, card = get_classifier(weights, device)
    method_fn(method, card)
    targets = [card.classes[t] for t in _targets(classes, card)]
    for p in inputs:  # validate every input before writing anything
        explain_memory_check(open_slide(p, mpp=mpp), card, mpp, classes, write=True, name=str(p))
    key = {"job": f"explain-{method}", "model": card.name, "classes": targets, "mpp": mpp}
    run = partial(
        _explain_one,
        weights=weights,
        method=method,
        classes=classes,
        mpp=mpp,
        device=device,
        progress=progress,
        cancel=cancel,
    )
    return run_batch(
        inputs,
        out,
        run,
        key,
        progress=progress,
        cancel=cancel,
        overwrite=overwrite,
        planned=lambda stem: _explain_names(stem, method, targets),
    )


# ---------------------------------------------------------------- weakly supervised cell types


def weak_cells(
    image,
    weights: str | None = None,
    points: CellPoints | None = None,
    detector: str | None = None,
    mpp: float | None = None,
    device: str | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
):
    """Weakly supervised cell types of an (H, W, 3) array or a Slide (level 0) -> ``weak.WeakCellsResult``
    (per-class CAMs, pseudo-labels, stage-2 map, typed cells), all at the input's pixel grid.

    ``points``: the cells to type (input pixels); None: detect them with ``detector`` (shipped default).
    """
    import numpy as np

    from .weak import infer

    arr = np.asarray(image.levels[0] if hasattr(image, "levels") else image)
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise InputError(f"{name}: weak-cells needs an RGB image (H, W, 3), got shape {arr.shape}")
    arr = arr[..., :3].astype(np.uint8) if arr.dtype != np.uint8 else arr[..., :3]
    if points is None:
        points = detect(arr, detector, mpp=mpp, device=device, cancel=cancel, name=name)
    check_cancel(cancel)
    seg, card, cams = _cached_weak(str(weights or "weak-cells"), device or None)
    return infer(arr, points.yx, seg, card, cams, mpp=mpp, progress=progress, cancel=cancel, name=name)


@lru_cache(maxsize=2)
def _cached_weak(ref, device):
    from .weak import load_weak_cells

    return load_weak_cells(ref, device)
