"""Cell detection: an image or slide in, :class:`~..points.CellPoints` out; and the batch over files."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..batch import run_batch
from ..detection import DetectParams
from ..detection import detect as _detect
from ..errors import ProgressFn
from ..exchange import write_geojson, write_points_csv
from ..points import CellPoints
from ..slides import open_slide
from .models import at_precision, get_model, job_key, sibling, validate_inputs
from .views import points_on_slide, region_view, view_key


@dataclass
class DetectOptions:
    """How to detect. ``weights``: detector name or path (None: shipped). ``mpp``: the input's microns
    per pixel when the file does not say. ``threshold`` / ``min_distance_um`` / ``tta``: decoding
    overrides (None: the card's, with its per-image rules if it has them; a threshold given is fixed and
    turns them off; tta averages the 8 rotations / flips of every tile, 8x slower).
    ``precision``: fp32 / bf16 / fp16 / auto for the network (decoding stays float32). ``level``: the
    pyramid level to read (None: the coarsest at least as fine as the model's). ``region``: (x, y, w, h)
    in level-0 pixels (or ``"X,Y,W,H"``): only the cells inside it, read with 64 µm of context around it
    (``views.region_view``); cells stay in level-0 pixels of the whole slide."""

    weights: str | None = None
    mpp: float | None = None
    device: str | None = None
    threshold: float | None = None
    min_distance_um: float | None = None
    tta: bool | None = None
    precision: str | None = None
    level: int | None = None
    region: object = None


def detect(
    image, options: DetectOptions | None = None, progress: ProgressFn | None = None, cancel=None, name: str = "image"
) -> CellPoints:
    """Detect cells in an (H, W, 3) array or a Slide -> CellPoints in level-0 pixels of the input."""

    o = options or DetectOptions()
    model, card = get_model(o.weights, "detector", o.device)
    params = DetectParams.from_card(card, threshold=o.threshold, min_distance_um=o.min_distance_um, tta=o.tta)
    view, origin, box = region_view(image, o.region, o.level, o.mpp, name)
    with at_precision(o.precision, model, card):
        pts = _detect(
            view, model, card, mpp=o.mpp, params=params, progress=progress, cancel=cancel, name=name, level=o.level
        )
    return points_on_slide(pts, origin, box)


def _detect_outputs(stem: Path) -> list[Path]:
    return [sibling(stem, ".csv"), sibling(stem, ".geojson")]


def _detect_one(path: str, stem: Path, options: DetectOptions) -> list[Path]:
    """One slide of ``detect_files``: ``stem.csv`` + ``stem.geojson`` (each written atomically)."""

    s = open_slide(path, mpp=options.mpp)
    pts = detect(s, options, name=s.path)
    csv_path, geojson = _detect_outputs(stem)
    return [write_points_csv(pts, csv_path), write_geojson(pts, geojson)]


def detect_job_key(o: DetectOptions) -> dict:
    """The batch job of ``o`` (``tta`` only when on: the key of earlier non-TTA jobs stays unchanged)."""
    tta = {"tta": True} if o.tta else {}
    view = view_key(o.region, o.level)
    return job_key("detect", o.weights, "detector", o.precision, mpp=o.mpp, threshold=o.threshold, **tta, **view)


def detect_files(inputs, out, options=None, batch=None, progress=None, cancel=None) -> dict:
    """Detect cells in each input file; write ``OUT/<name>.csv`` and ``OUT/<name>.geojson`` per input.

    Every input is opened (validated) before any work. Slides already done by the same job (model,
    threshold, mpp, unchanged input) are skipped, so a rerun after a crash only does what is left;
    ``batch`` (:class:`~..batch.BatchOptions`): ``workers``/``scheduler`` run the slides on a Dask cluster
    (see ``backend.batch``); an existing output pathreview did not write (e.g. the user's QuPath
    ``NAME.geojson`` beside the slide) is refused before any work unless ``overwrite``. Returns
    ``{"written", "skipped", "ran"}``.
    ``options``: :class:`DetectOptions` (None: the defaults); ``batch``: :class:`~..batch.BatchOptions` (workers,
    scheduler, overwrite; None: here, no overwrite).
    """

    o = options or DetectOptions()
    validate_inputs(inputs, o.mpp, [(o.weights, "detector")], o.device, (o.region, o.level))
    run = partial(_detect_one, options=o)
    return run_batch(inputs, out, run, detect_job_key(o), batch, progress, cancel, _detect_outputs)
