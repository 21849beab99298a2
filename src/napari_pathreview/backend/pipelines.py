"""Pipelines: image in, plain results out. The widgets, the CLI and the tests call these same functions."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .errors import InputError, ProgressFn, check_cancel, report
from .points import CellPoints


@lru_cache(maxsize=8)
def _cached_model(ref, task, device):
    from .weights import load_model

    return load_model(ref, task, device)


def get_model(ref: str | None, task: str, device: str | None = None):
    """(model, card) for a name/path (shipped default when None), cached per (ref, device)."""
    from .weights import default_model

    return _cached_model(str(ref) if ref else default_model(task), task, device or None)


def detect(image, weights: str | None = None, mpp: float | None = None, device: str | None = None,
           threshold: float | None = None, min_distance_um: float | None = None,
           progress: ProgressFn | None = None, cancel=None, name: str = "image") -> CellPoints:
    """Detect cells in an (H, W, 3) array or a Slide -> CellPoints in level-0 pixels of the input."""
    from .detection import DetectParams, detect as _detect

    model, card = get_model(weights, "detector", device)
    params = DetectParams.from_card(card, threshold=threshold, min_distance_um=min_distance_um)
    return _detect(image, model, card, mpp=mpp, params=params, progress=progress, cancel=cancel, name=name)


def detect_files(inputs, out: str | Path, weights=None, mpp=None, device=None, threshold=None,
                 progress: ProgressFn | None = None, cancel=None) -> list[Path]:
    """Detect cells in each input file; write ``OUT/<name>.csv`` and ``OUT/<name>.geojson`` per input."""
    from .exchange import write_geojson, write_points_csv
    from .slides import open_slide

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give --out a folder")
    slides = [open_slide(p, mpp=mpp) for p in inputs]  # validate every input before writing anything
    written = []
    for i, s in enumerate(slides):
        check_cancel(cancel)
        pts = detect(s, weights, device=device, threshold=threshold, cancel=cancel, name=s.path,
                     progress=None if progress is None else
                     (lambda a, b, m, i=i: progress(i, len(slides), f"{s.name}: {m}")))
        stem = out / Path(s.name).stem.replace(".ome", "")
        written += [write_points_csv(pts, stem.with_suffix(".csv")), write_geojson(pts, stem.with_suffix(".geojson"))]
        report(progress, i + 1, len(slides), f"{s.name}: {len(pts)} cells")
    return written
