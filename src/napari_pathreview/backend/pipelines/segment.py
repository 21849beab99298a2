"""Nucleus segmentation: in memory for an image or region, tile by tile into OME-Zarr for a slide, and
the batch over files."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..atomic import _remove, refuse_input_as_output, writable_folder
from ..batch import run_batch
from ..errors import InputError, ProgressFn
from ..regions import as_xywh
from ..segmentation import SegmentSettings, ZarrTarget, segment_to_zarr
from ..segmentation import segment as _segment
from ..slides import open_slide
from ..weights import default_model
from .models import at_precision, common_card, get_models, sibling, validate_inputs
from .views import place_store, region_view, view_key


@dataclass
class SegmentOptions:
    """How to segment. ``weights``: a model name/path, a list of them (an ensemble, combined by
    ``ensemble``: ``"mean"`` or ``"union"``), or None (shipped). ``mpp``: the input's microns per pixel
    when the file does not say. ``tile`` (model pixels) / ``overlap`` (fraction) / ``tta``: None takes
    the card's. ``stain_norm``: False ignores the card's hematoxylin reference (non-H&E images).
    ``precision``: fp32 / bf16 / fp16 / auto for the network(s) (``auto``: verified by every card);
    blending and watershed stay float32. ``compile``: ``torch.compile`` the network for a slide
    (faster per tile after a ~20-30 s first call). ``level``: the pyramid level to read (None: the
    coarsest at least as fine as the model's). ``region``: (x, y, w, h) in level-0 pixels (or
    ``"X,Y,W,H"``), for ``segment_file`` / ``segment_files``: the store holds the region with 64 µm of
    context around it (widened to the pyramid's grid), placed on the slide by a translation
    (``place_store``); in memory (``segment``), crop first (``regions.crop_level0``)."""

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
    level: int | None = None
    region: object = None


def settings(o: SegmentOptions, name: str) -> SegmentSettings:
    """The numerics' settings (``segmentation.SegmentSettings``) of a pipeline's options."""
    return SegmentSettings(
        tile=o.tile,
        overlap=o.overlap,
        tta=o.tta,
        stain_norm=o.stain_norm,
        ensemble=o.ensemble,
        compile=o.compile,
        level=o.level,
        name=name,
    )


def segment(
    image, options: SegmentOptions | None = None, progress: ProgressFn | None = None, cancel=None, name: str = "image"
):
    """Segment an (H, W, 3) array or a Slide in memory -> SegmentationResult (instances + probabilities).
    ``options.level`` is read; ``options.region`` is refused here (crop first: ``regions.crop_level0``)."""

    o = options or SegmentOptions()
    if o.region is not None:
        raise InputError(f"{name}: segment a region in memory by cropping it first, or give it to segment_file")
    models, cards = get_models(o.weights, "segmenter", o.device)
    with at_precision(o.precision, models[0], common_card(cards)):
        return _segment(image, models, cards, mpp=o.mpp, options=settings(o, name), progress=progress, cancel=cancel)


def segment_file(
    input, out: str | Path, options: SegmentOptions | None = None, overwrite: bool = False, progress=None, cancel=None
) -> Path:
    """Segment one slide/image file tile by tile into an OME-Zarr labels store at ``out`` (bounded memory);
    with ``options.region``, the region's store built under ``.OUT.region`` and placed on the slide
    (:func:`place_store`) before it is renamed to ``out``."""

    o, out = options or SegmentOptions(), Path(out)
    refuse_input_as_output(out, [input])
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; choose another output or pass --overwrite")
    writable_folder(out.absolute().parent, "--out")
    slide = open_slide(input, mpp=o.mpp)
    view, origin, box = region_view(slide, o.region, o.level, o.mpp, slide.path)
    models, cards = get_models(o.weights, "segmenter", o.device)
    target = ZarrTarget(out if box is None else out.with_name(f".{out.name}.region"), overwrite=overwrite or bool(box))
    with at_precision(o.precision, models[0], common_card(cards)):
        store = segment_to_zarr(
            view, target, models, cards, options=settings(o, slide.path), progress=progress, cancel=cancel
        )
    if box is None:
        return store
    place_store(store, origin, as_xywh(o.region), out.name.replace(".ome.zarr", "").replace(".zarr", ""))
    if out.exists():
        _remove(out)  # only reached with overwrite
    store.rename(out)
    return out


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
    key |= {"tile": o.tile, "overlap": o.overlap, "tta": o.tta, "ensemble": o.ensemble, **view_key(o.region, o.level)}
    if o.stain_norm is False:
        key["stain_norm"] = False
    if o.precision not in (None, "fp32"):
        key["precision"] = o.precision
    return key


def segment_files(inputs, out, options=None, batch=None, progress=None, cancel=None) -> dict:
    """Segment many slides into ``OUT/<name>.zarr`` each (tile by tile, bounded memory), one idempotent
    task per slide on this process or a Dask cluster; reruns skip slides already done by the same job
    (see ``backend.batch``; ``batch``: workers, scheduler, overwrite). An existing store pathreview did not
    write (its record does not list it) is refused unless ``overwrite``; a store that is one of the inputs
    is refused always. ``options``: :class:`SegmentOptions` (None: the defaults); ``batch``:
    :class:`~..batch.BatchOptions` (None: here, no overwrite)."""

    o = options or SegmentOptions()
    refs = o.weights if isinstance(o.weights, (list, tuple)) else [o.weights]
    validate_inputs(inputs, o.mpp, [(r, "segmenter") for r in refs], o.device, (o.region, o.level))
    run = partial(_segment_one, options=o)
    return run_batch(inputs, out, run, segment_job_key(o), batch, progress, cancel, _segment_outputs)
