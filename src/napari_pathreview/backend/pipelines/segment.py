"""Nucleus segmentation: in memory for an image or region, tile by tile into OME-Zarr for a slide, and
the batch over files."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..atomic import refuse_input_as_output, writable_folder
from ..batch import run_batch
from ..errors import InputError, ProgressFn
from ..segmentation import SegmentSettings, ZarrTarget, segment_to_zarr
from ..segmentation import segment as _segment
from ..slides import open_slide
from ..weights import default_model
from .models import at_precision, common_card, get_models, sibling, validate_inputs


@dataclass
class SegmentOptions:
    """How to segment. ``weights``: a model name/path, a list of them (an ensemble, combined by
    ``ensemble``: ``"mean"`` or ``"union"``), or None (shipped). ``mpp``: the input's microns per pixel
    when the file does not say. ``tile`` (model pixels) / ``overlap`` (fraction) / ``tta``: None takes
    the card's. ``stain_norm``: False ignores the card's hematoxylin reference (non-H&E images).
    ``precision``: fp32 / bf16 / fp16 / auto for the network(s) (``auto``: verified by every card);
    blending and watershed stay float32. ``compile``: ``torch.compile`` the network for a slide
    (faster per tile after a ~20-30 s first call)."""

    weights: object = None
    mpp: float | None = None
    device: str | None = None
    tile: int | None = None
    overlap: float | None = None
    tta: bool | None = None
    ensemble: str = "mean"
    stain_norm: bool | None = None
    precision: str | None = None
    compile: bool = False


def settings(o: SegmentOptions, name: str) -> SegmentSettings:
    """The numerics' settings (``segmentation.SegmentSettings``) of a pipeline's options."""
    return SegmentSettings(
        tile=o.tile,
        overlap=o.overlap,
        tta=o.tta,
        stain_norm=o.stain_norm,
        ensemble=o.ensemble,
        compile=o.compile,
        name=name,
    )


def segment(
    image, options: SegmentOptions | None = None, progress: ProgressFn | None = None, cancel=None, name: str = "image"
):
    """Segment an (H, W, 3) array or a Slide in memory -> SegmentationResult (instances + probabilities)."""

    o = options or SegmentOptions()
    models, cards = get_models(o.weights, "segmenter", o.device)
    with at_precision(o.precision, models[0], common_card(cards)):
        return _segment(image, models, cards, mpp=o.mpp, options=settings(o, name), progress=progress, cancel=cancel)


def segment_file(
    input, out: str | Path, options: SegmentOptions | None = None, overwrite: bool = False, progress=None, cancel=None
) -> Path:
    """Segment one slide/image file tile by tile into an OME-Zarr labels store at ``out`` (bounded memory)."""

    o, out = options or SegmentOptions(), Path(out)
    refuse_input_as_output(out, [input])
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; choose another output or pass --overwrite")
    writable_folder(out.absolute().parent, "--out")
    slide = open_slide(input, mpp=o.mpp)
    models, cards = get_models(o.weights, "segmenter", o.device)
    with at_precision(o.precision, models[0], common_card(cards)):
        target = ZarrTarget(out, overwrite=overwrite)
        return segment_to_zarr(
            slide, target, models, cards, options=settings(o, slide.path), progress=progress, cancel=cancel
        )


def _segment_outputs(stem: Path) -> list[Path]:
    return [sibling(stem, ".zarr")]


def _segment_one(path: str, stem: Path, options: SegmentOptions) -> list[Path]:
    """One slide of ``segment_files``: ``stem.zarr``, replaced when it exists: ``run_batch`` has checked
    it is ours (listed in the slide's record) or that ``--overwrite`` was given, and not the input."""
    return [segment_file(path, sibling(stem, ".zarr"), options, overwrite=True)]


def segment_job_key(o: SegmentOptions) -> dict:
    """What makes two segment runs the same job (a rerun with the same key skips finished slides)."""

    refs = list(o.weights) if isinstance(o.weights, (list, tuple)) else [o.weights]
    key = {"job": "segment", "weights": [str(r) if r else default_model("segmenter") for r in refs], "mpp": o.mpp}
    key |= {"tile": o.tile, "overlap": o.overlap, "tta": o.tta, "ensemble": o.ensemble}
    if o.stain_norm is False:
        key["stain_norm"] = False
    if o.precision not in (None, "fp32"):
        key["precision"] = o.precision
    return key


def segment_files(
    inputs,
    out: str | Path,
    options: SegmentOptions | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel=None,
) -> dict:
    """Segment many slides into ``OUT/<name>.zarr`` each (tile by tile, bounded memory), one idempotent
    task per slide on this process or a Dask cluster; reruns skip slides already done by the same job
    (see ``backend.batch``). An existing store pathreview did not write (its record does not list it) is
    refused unless ``overwrite``; a store that is one of the inputs is refused always."""

    o = options or SegmentOptions()
    refs = o.weights if isinstance(o.weights, (list, tuple)) else [o.weights]
    validate_inputs(inputs, o.mpp, [(r, "segmenter") for r in refs], o.device)
    run = partial(_segment_one, options=o)
    return run_batch(
        inputs, out, run, segment_job_key(o), workers, scheduler, progress, cancel, _segment_outputs, overwrite
    )
