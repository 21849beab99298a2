"""Class probabilities and heat maps of classifiers (CAM, Grad-CAM, LRP, ViT rollout), and the batch
over files with the memory check that refuses a run before it starts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from ..atomic import atomic_path
from ..batch import run_batch
from ..classification import input_mpp
from ..errors import ProgressFn
from ..explain import MAX_PIXELS, explain_image, method_fn, target_indices, write_explanation
from ..explain.files import overlay_source
from ..memory import explain_bytes, require_memory
from ..regions import as_xywh, from_level
from ..slides import Slide, open_slide
from .models import at_precision, get_classifier, per_slide, refuse_file_as_folder, sibling
from .views import region_view, view_key


@dataclass
class ExplainOptions:
    """How to explain. ``weights``: classifier or ViT name/path (None: shipped classifier).
    ``method``: cam, gradcam, lrp-epsilon, lrp-gamma, lrp-a1b0, lrp-a2b1 or rollout (ViT); ``classes``:
    class names or indices to explain (None: all); ``layer``: Grad-CAM layer name (default: last conv).
    ``mpp``: the input's microns per pixel when the file does not say. ``precision``: fp32 / bf16 /
    fp16 / auto for the network's forward and backward passes (maps are accumulated in float32; LRP
    always runs in float32, see ``explain.images.FP32_METHODS``). ``level``: the pyramid level to explain
    (None: the coarsest at least as fine as the model's); ``region``: (x, y, w, h) in level-0 pixels (or
    ``"X,Y,W,H"``), widened to the pyramid's grid; maps and overlays are then of that level / box, and the
    result's ``downsample`` (level-0 pixels per map pixel) and ``extra["origin_yx"]`` place them on the slide."""

    weights: str | None = None
    method: str = "gradcam"
    classes: object = None
    mpp: float | None = None
    device: str | None = None
    layer: str | None = None
    precision: str | None = None
    level: int | None = None
    region: object = None


def explain_view(image, o: ExplainOptions, name: str = "image"):
    """What ``explain`` reads of ``image`` for ``o.level`` / ``o.region`` -> ``(view, origin_yx, downsample)``:
    a Slide whose level 0 is the level asked (of the region's crop, ``views.region_view`` without context);
    ``downsample``: level-0 pixels of ``image`` per pixel of the view's level 0."""
    view, origin, _ = region_view(image, o.region, o.level, o.mpp, name, context_um=0.0)
    if o.level is None:
        return view, origin, 1.0
    down = float(view.downsamples[o.level])
    return from_level(view, o.level), origin, down


def explain_memory_check(
    image, card, mpp: float | None = None, classes=None, write: bool = False, name: str = "image"
) -> None:
    """Refuse (InputError) an explanation that cannot fit in memory, before any pixel is read: estimated
    (``memory.explain_bytes``) from the level ``classification.to_model_scale`` would read, the model's
    scale, the number of maps and their output grid; ``write``: also the overlays ``explain_files`` writes
    on the level that covers the maps (``explain.files.overlay_source``)."""
    import numpy as np

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
    n = len(target_indices(classes, card))
    under = overlay_source(image.levels, out)[1] if isinstance(image, Slide) else full  # what overlays are drawn on
    need = explain_bytes(read, channels, factor, n, out, under if write else None)
    require_memory(
        need,
        f"{name}: explaining {full[0]} x {full[1]} px ({n} maps)",
        "explain a region (the dock's region row) or a downsampled copy of the slide (export one from QuPath or "
        "napari), or fewer --classes",
    )


def explain(
    image, options: ExplainOptions | None = None, progress: ProgressFn | None = None, cancel=None, name: str = "image"
):
    """Class probabilities + heat maps of an (H, W, C) array or a Slide -> ``explain.ExplainResult``.

    Maps come back at the input's pixel grid (see ``ExplainResult.downsample`` for huge slides). A run
    that cannot fit in memory is refused before any pixel is read (``explain_memory_check``).
    """

    o = options or ExplainOptions()
    model, card = get_classifier(o.weights, o.device)
    image, origin, down = explain_view(image, o, name)
    mpp = None if o.mpp is None else o.mpp * down
    explain_memory_check(image, card, mpp, o.classes, name=name)
    with at_precision(o.precision, model, card):
        r = explain_image(
            image,
            model,
            card,
            method=o.method,
            classes=o.classes,
            mpp=mpp,
            layer=o.layer,
            progress=progress,
            cancel=cancel,
            name=name,
        )
    r.downsample *= down
    if o.region is not None or o.level is not None:
        r.extra |= {"origin_yx": [int(origin[0]), int(origin[1])], "level": o.level}
    return r


def _explain_names(stem: Path, method: str, targets) -> list[Path]:
    """The files ``explain.write_explanation`` writes for ``stem`` (its name without ``.ome``)."""
    base = stem.with_name(stem.name.replace(".ome", ""))
    return [sibling(base, f".{method}.{c}{ext}") for c in targets for ext in (".tif", ".png")] + [
        sibling(base, f".{method}.json")
    ]


def _explain_one(path: str, stem: Path, options: ExplainOptions, progress=None, cancel=None) -> list[Path]:
    """One slide of ``explain_files``: its maps, overlays and JSON (see ``_explain_names``)."""

    s = open_slide(path, mpp=options.mpp)
    # the slide's own mpp (or --mpp, given to open_slide) wins over options.mpp inside explain
    o = replace(options, mpp=None)
    view, origin, down = explain_view(s, o, s.path)  # overlays drawn on the level / region explained
    whole = replace(o, level=None, region=None)
    r = explain(view, whole, progress=per_slide(progress, s.name), cancel=cancel, name=s.name)
    r.downsample *= down
    written = write_explanation(r, replace(view, name=stem.name + ".x"), stem.parent)
    if o.level is not None or o.region is not None:
        _place_summary(written[-1], origin, o)
    if progress is not None:
        progress(1, 1, f"{s.name}: " + ", ".join(f"{c} {p:.2f}" for c, p in zip(r.classes, r.probs)))
    return written


def _place_summary(summary: Path, origin_yx, o: ExplainOptions) -> None:
    """Add where the maps lie on the slide to the JSON summary of a level / region: ``origin_yx`` (level-0
    pixels of the slide of the maps' top-left pixel), ``level`` and ``region`` (x, y, w, h asked); its
    ``downsample`` is level-0 pixels of the slide per map pixel."""
    import json

    meta = json.loads(Path(summary).read_text())
    meta |= {"origin_yx": [int(v) for v in origin_yx], "level": o.level}
    meta |= {"region": None if o.region is None else list(as_xywh(o.region))}
    with atomic_path(summary, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))


def explain_files(inputs, out, options=None, batch=None, progress=None, cancel=None) -> dict:
    """Explain each input; write ``OUT/<name>.<method>.<class>.tif`` (float32 map at the input grid),
    a ``.png`` overlay per class and ``OUT/<name>.<method>.json`` (probabilities, classes, files).

    Every input is opened and its memory need checked before any work; one idempotent task per slide
    (``backend.batch``): reruns skip slides already done by the same job, and an existing output
    pathreview did not write is refused unless ``batch.overwrite`` (``batch``: workers, scheduler,
    overwrite). With ``level`` / ``region`` the maps and overlays are of that level / box and the JSON
    records ``origin_yx`` and ``downsample`` (level-0 pixels of the slide per map pixel). Returns
    ``{"written", "skipped", "ran"}``.
    ``options``: :class:`ExplainOptions` (None: the defaults); ``batch``: :class:`~..batch.BatchOptions` (workers,
    scheduler, overwrite; None: here, no overwrite).
    """

    o = options or ExplainOptions()
    out = refuse_file_as_folder(out)
    _, card = get_classifier(o.weights, o.device)
    method_fn(o.method, card)
    targets = [card.classes[t] for t in target_indices(o.classes, card)]
    for p in inputs:  # validate every input before writing anything
        view, _, _ = explain_view(open_slide(p, mpp=o.mpp), replace(o, mpp=None), str(p))
        explain_memory_check(view, card, None, o.classes, write=True, name=str(p))
    key = {"job": f"explain-{o.method}", "model": card.name, "classes": targets, "mpp": o.mpp}
    key |= view_key(o.region, o.level)
    if o.precision not in (None, "fp32"):
        key["precision"] = o.precision
    run = partial(_explain_one, options=o, progress=progress, cancel=cancel)
    planned = partial(_explain_names, method=o.method, targets=targets)
    return run_batch(inputs, out, run, key, batch, progress, cancel, planned)
