"""From blended maps to instances: marker-controlled watershed, per-instance table, table CSV.

Maps are the network's foreground probability (and, for several classes, per-class probabilities)
and a normalised distance map; instances are split by a watershed whose markers are the connected
parts of ``distance > marker_threshold`` inside the foreground.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .params import SegmentParams

TABLE_COLUMNS = ("label", "area_px", "area_um2", "centroid_y", "centroid_x", "mean_intensity")


def label_instances(
    prob: np.ndarray, distance: np.ndarray, threshold: float = 0.5, marker_threshold: float = 0.5, min_area_px: int = 0
) -> np.ndarray:
    """Instances from a foreground probability and a normalised distance map, both (H, W) in [0, 1].

    Foreground = ``prob > threshold``; markers = connected parts of ``distance > marker_threshold``
    within it; marker-controlled watershed of ``-distance`` restricted to the foreground; foreground
    parts that hold no marker become one instance each; instances under ``min_area_px`` are dropped.
    Returns int32 (H, W), labels 1..N in raster order of their first pixel.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    fg = prob > threshold
    if not fg.any():
        return np.zeros(prob.shape, np.int32)
    markers, n = ndimage.label(fg & (distance > marker_threshold))
    lab = watershed(-distance, markers, mask=fg) if n else np.zeros(prob.shape, np.int32)
    rest, m = ndimage.label(fg & (lab == 0))
    if m:
        lab = np.where(rest > 0, rest + n, lab)
    lab = lab.astype(np.int32)
    if min_area_px > 0:
        area = np.bincount(lab.ravel())
        small = area < min_area_px
        small[0] = False
        lab[small[lab]] = 0
    return _raster_relabel(lab)


def _raster_relabel(lab: np.ndarray) -> np.ndarray:
    """Relabel 1..N in raster order of each instance's first pixel (a canonical numbering)."""
    flat = lab.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids > 0
    ids, first = ids[keep], first[keep]
    lut = np.zeros(int(flat.max()) + 1 if flat.size else 1, np.int32)
    lut[ids[np.argsort(first)]] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[lab]


def postprocess_maps(maps: np.ndarray, n_fg: int, params: SegmentParams, level_mpp: float):
    """Blended maps (K + 2, H, W) -> (prob, distance, labels, semantic, grey).

    ``n_fg``: foreground channels (1, or classes + background); ``level_mpp``: µm per map pixel, for
    ``params.min_area_um2``."""
    if n_fg == 1:
        prob, semantic = maps[0], None
    else:
        prob = 1.0 - maps[0]
        semantic = np.where(prob > params.threshold, maps[1:n_fg].argmax(0) + 1, 0).astype(np.int32)
        if params.majority_class and (semantic > 0).any():
            semantic[semantic > 0] = np.bincount(semantic[semantic > 0]).argmax()
    dist, grey = maps[n_fg], maps[n_fg + 1]
    min_px = int(round(params.min_area_um2 / level_mpp**2))
    labels = label_instances(prob, dist, params.threshold, params.marker_threshold, min_px)
    return prob, dist, labels, semantic, grey


def _empty_table() -> dict:
    z = np.zeros(0, np.float32)
    return {
        "label": np.zeros(0, np.int64),
        "area_px": np.zeros(0, np.int64),
        "area_um2": z,
        "centroid_y": z,
        "centroid_x": z,
        "mean_intensity": z,
    }


def instance_table(
    labels: np.ndarray,
    intensity: np.ndarray | None = None,
    mpp: float | None = None,
    y0: int = 0,
    downsample: float = 1.0,
    x0: int = 0,
) -> dict:
    """Per-instance features of a label image: ``label, area_px, area_um2, centroid_y, centroid_x,
    mean_intensity`` (numpy columns). ``intensity``: (H, W) grey values (mean of RGB, 0..255) or None;
    ``y0``, ``x0``: row / column offset of ``labels``; centroids are scaled by ``downsample`` to level-0 pixels and
    ``area_um2`` uses ``mpp`` (level-0 µm per pixel; NaN when unknown)."""
    flat = labels.ravel()
    ids = np.unique(flat)
    ids = ids[ids > 0]
    if ids.size == 0:
        return _empty_table()
    idx = np.searchsorted(ids, flat)
    inside = flat > 0
    idx, n = idx[inside], ids.size
    yy, xx = np.divmod(np.flatnonzero(inside), labels.shape[1])
    area = np.bincount(idx, minlength=n)
    cy = np.bincount(idx, yy, minlength=n) / area + y0
    cx = np.bincount(idx, xx, minlength=n) / area + x0
    mi = (
        np.bincount(idx, intensity.ravel()[inside], minlength=n) / area if intensity is not None else np.full(n, np.nan)
    )
    px_um2 = (mpp * downsample) ** 2 if mpp else np.nan
    return {
        "label": ids.astype(np.int64),
        "area_px": area.astype(np.int64),
        "area_um2": (area * px_um2).astype(np.float32),
        "centroid_y": ((cy + 0.5) * downsample - 0.5).astype(np.float32),
        "centroid_x": ((cx + 0.5) * downsample - 0.5).astype(np.float32),
        "mean_intensity": mi.astype(np.float32),
    }


def write_table_csv(table: dict, path: Path) -> None:
    """An instance table as CSV: integers as they are, floats with 6 significant digits."""
    keys = list(table)
    with open(path, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(keys)
        for row in zip(*(table[k] for k in keys)):
            wr.writerow([int(v) if isinstance(v, (np.integer,)) else (f"{float(v):.6g}") for v in row])


def read_table_csv(path: Path) -> dict:
    """The ``instances.csv`` of a segmentation store as numpy columns."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    ints = {"label", "area_px"}
    return {k: np.array([float(r[k]) for r in rows], np.int64 if k in ints else np.float32) for k in TABLE_COLUMNS}
