"""Heat maps to files: float32 TIFF maps, PNG overlays (inferno-like colours) and a JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..slides import to_rgb_uint8
from .images import ExplainResult


def display_range(heat: np.ndarray) -> float:
    """Upper display limit of a map: the 99th percentile of its positive values (1 when none).

    Pixel-level LRP maps are heavy-tailed, so a lower percentile and a gamma of 0.5 (see
    :func:`heat_rgb`; the widget sets the layer's gamma) keep the weaker evidence visible."""
    pos = heat[heat > 0]
    hi = float(np.percentile(pos, 99)) if pos.size else 1.0
    return hi if hi > 0 else 1.0


def heat_rgb(heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A map ``(H, W)`` -> (RGB uint8 ``(H, W, 3)`` inferno-like colours, alpha float ``(H, W)`` in [0, 1]).

    Scaled from 0 to :func:`display_range` with gamma 0.5 (negative evidence is not shown).
    """
    anchors = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)
    v = np.sqrt(np.clip(heat / display_range(heat), 0, 1))
    idx = v * (len(anchors) - 1)
    lo = np.floor(idx).astype(int).clip(0, len(anchors) - 2)
    f = (idx - lo)[..., None]
    rgb = anchors[lo] * (1 - f) + anchors[lo + 1] * f
    return rgb.astype(np.uint8), v


def overlay_source(levels, map_yx) -> tuple:
    """What the overlays of a ``map_yx`` map are drawn on: the smallest level of ``levels`` (level 0 first,
    each ``(Y, X[, C])``) that covers the map in both axes, read every s-th pixel where that level is still
    s >= 2 times the map -> ``(array, shape)``, lazy. A map at the model grid of a big slide then costs a
    read of about its own size, not the slide's level 0."""
    map_yx = (max(1, int(round(map_yx[0]))), max(1, int(round(map_yx[1]))))
    covering = [a for a in levels if a.shape[0] >= map_yx[0] and a.shape[1] >= map_yx[1]] or [levels[0]]
    level = min(covering, key=lambda a: a.shape[0] * a.shape[1])
    step = max(1, min(int(level.shape[0]) // map_yx[0], int(level.shape[1]) // map_yx[1]))
    level = level[::step, ::step] if step > 1 else level
    return level, tuple(int(v) for v in level.shape[:2])


def write_explanation(result: ExplainResult, slide, out) -> list[Path]:
    """Write ``OUT/<name>.<method>.<class>.tif`` (float32 map), ``.png`` (overlay on the image) and
    ``OUT/<name>.<method>.json`` (probabilities, classes, mpp, downsample, files)."""
    import imageio.v3 as iio
    import tifffile
    from skimage.transform import resize

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(slide.name if hasattr(slide, "name") else result.name).stem.replace(".ome", "")
    levels = list(slide.levels) if hasattr(slide, "levels") else [slide]
    rgb = to_rgb_uint8(np.asarray(overlay_source(levels, result.maps.shape[-2:])[0]), stem)
    written = []
    for k, cls in enumerate(result.targets):
        heat = result.maps[k]
        base = rgb if rgb.shape[:2] == heat.shape else resize(rgb, heat.shape, preserve_range=True).astype(np.uint8)
        colour, alpha = heat_rgb(heat)
        a = 0.6 * alpha[..., None]
        overlay = (base * (1 - a) + colour * a).astype(np.uint8)
        tif, png = (out / f"{stem}.{result.method}.{cls}{ext}" for ext in (".tif", ".png"))
        with atomic_path(tif) as tmp:
            tifffile.imwrite(tmp, heat.astype(np.float32))
        with atomic_path(png) as tmp:
            iio.imwrite(tmp, overlay, extension=".png")
        written += [tif, png]
    meta = {
        "image": result.name,
        "model": result.model,
        "method": result.method,
        "mpp": result.mpp,
        "downsample": result.downsample,
        "classes": result.classes,
        "probabilities": {c: float(p) for c, p in zip(result.classes, result.probs)},
        "explained": result.targets,
        "files": [w.name for w in written],
    }
    j = out / f"{stem}.{result.method}.json"
    with atomic_path(j) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))
    return written + [j]
