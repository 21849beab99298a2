"""Plain results -> napari layer data tuples (numpy only; no Qt, no torch).

Every layer of one slide shares the slide layer's scale (µm per level-0 pixel) and translate, so they
line up whatever the slide's resolution.
"""

from __future__ import annotations

import numpy as np


def hex_to_rgba(color: str, alpha: float = 1.0) -> np.ndarray:
    h = color.lstrip("#")
    return np.array([int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [alpha], np.float32)


def points_layer_data(points, name: str, scale=(1.0, 1.0), translate=(0.0, 0.0), size_um: float = 4.0):
    """CellPoints -> ("points") LayerData: coloured by class, features table (class, score, p_*)."""
    from ..backend.weights import class_colors

    colors = points.colors or class_colors(points.classes)
    table = points.table()
    face = np.array([hex_to_rgba(colors.get(str(c), "#ffffff")) for c in table["class"]], np.float32).reshape(-1, 4)
    mpp = points.mpp
    size = size_um / mpp if mpp else 8.0
    kwargs = {
        "name": name,
        "scale": tuple(scale),
        "translate": tuple(translate),
        "features": table,
        "face_color": face,
        "border_color": "black",
        "border_width": 0.1,
        "size": size,
        "metadata": {
            "classes": list(points.classes),
            "colors": colors,
            "mpp": mpp,
            "source": points.source,
            "threshold": points.threshold,
            "adapted": points.adapted,
            "pathreview": "cells",
            # detector feature vectors (N, F), for the enhancer; dropped if the points are edited
            "cell_features": None if points.features is None else np.asarray(points.features),
        },
    }
    return (np.asarray(points.yx, np.float32).reshape(-1, 2), kwargs, "points")


def legend_html(classes, colors, counts=None) -> str:
    """A small HTML legend: a coloured square and the class name (and count) per class."""
    rows = []
    for i, c in enumerate(classes):
        n = f" ({counts[i]})" if counts is not None else ""
        rows.append(f'<span style="color:{colors.get(c, "#ffffff")}">&#9632;</span> {c}{n}')
    return "<br>".join(rows)


def rgba_to_hex(rgba) -> str:
    return "#" + "".join(f"{int(round(float(v) * 255)):02x}" for v in list(rgba)[:3])


def points_from_layer_data(data, features=None, metadata=None, face_color=None):
    """Points layer data (N, D) + features table + metadata -> CellPoints (inverse of ``points_layer_data``).

    The class of each point is the ``class`` feature (else "cell"); classes and colours come from the
    layer's metadata (a plugin layer) or else from the class names and the points' face colours.
    Coordinates are the last two axes of the layer data (row, col); ``mpp`` the metadata's.
    """
    from ..backend.points import CellPoints
    from ..backend.weights import class_colors

    metadata = dict(metadata or {})
    yx = np.asarray(data, np.float32).reshape(len(data), -1)[:, -2:] if len(data) else np.zeros((0, 2), np.float32)
    cols = {} if features is None else {str(k): np.asarray(features[k]) for k in features}
    names = [str(v) for v in cols["class"]] if "class" in cols else ["cell"] * len(yx)
    classes = [str(c) for c in metadata.get("classes") or []]
    for n in dict.fromkeys(names):
        if n not in classes:
            classes.append(n)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[n] for n in names], np.int64)
    scores = np.asarray(cols.get("score", np.ones(len(yx))), np.float32).reshape(-1)
    probs = np.zeros((len(yx), len(classes)), np.float32)
    have = [f"p_{c}" in cols for c in classes]
    for k, c in enumerate(classes):
        if have[k]:
            probs[:, k] = np.nan_to_num(np.asarray(cols[f"p_{c}"], np.float32))
    no_probs = probs.sum(1) == 0
    probs[no_probs, labels[no_probs]] = 1.0
    colors = {**class_colors(classes), **dict(metadata.get("colors") or {})}
    if face_color is not None and len(face_color) == len(yx) and not metadata.get("colors"):
        fc = np.asarray(face_color)
        for n in dict.fromkeys(names):
            colors[n] = rgba_to_hex(fc[names.index(n)])
    return CellPoints(
        yx, labels, scores, probs, classes, metadata.get("mpp"), None, str(metadata.get("source", "")), colors
    )


def to_pixels_of(layer, ref) -> np.ndarray:
    """(N, 2) float64 positions of ``layer``'s points (the last two axes of its data) in ``ref``'s data
    pixels, through world coordinates (data * scale + translate); (0, 2) for an empty layer."""
    data = np.asarray(layer.data, np.float64)
    yx = data.reshape(len(data), -1)[:, -2:] if len(data) else np.zeros((0, 2))
    world = yx * np.asarray(layer.scale[-2:]) + np.asarray(layer.translate[-2:])
    return (world - np.asarray(ref.translate[-2:])) / np.asarray(ref.scale[-2:])


def edges_layer_data(
    yx,
    edges,
    name: str,
    scale=(1.0, 1.0),
    translate=(0.0, 0.0),
    colormap: str = "magma",
    width: float = 1.0,
    style: str = "line",
    contrast_limits=None,
):
    """Edges (src, dst, weight) between points ``yx`` (N, 2) -> ("vectors") LayerData.

    Vectors data (E, 2, 2): start (yx of src) and direction (yx of dst - yx of src); colour by weight
    through ``colormap``; the weights are in the layer's ``features['weight']``.
    """
    yx = np.asarray(yx, np.float32).reshape(-1, 2)
    src, dst, w = (np.asarray(a) for a in edges[:3])
    data = np.zeros((len(src), 2, 2), np.float32)
    data[:, 0] = yx[src]
    data[:, 1] = yx[dst] - yx[src]
    w = w.astype(np.float32)
    if contrast_limits is None:
        lo, hi = (float(w.min()), float(w.max())) if len(w) else (0.0, 1.0)
        contrast_limits = (lo, hi if hi > lo else lo + 1e-6)
    kwargs = {
        "name": name,
        "scale": tuple(scale),
        "translate": tuple(translate),
        "features": {"weight": w, "src": np.asarray(src, np.int64), "dst": np.asarray(dst, np.int64)},
        "edge_color": "weight",
        "edge_colormap": colormap,
        "edge_contrast_limits": contrast_limits,
        "edge_width": width,
        "vector_style": style,
        "length": 1.0,
        "metadata": {"pathreview": "edges"},
    }
    return (data, kwargs, "vectors")


def labels_layer_data(result, name: str, scale=(1.0, 1.0), translate=(0.0, 0.0)):
    """SegmentationResult (or ``(labels or [levels], table, meta)``) -> ("labels") LayerData.

    ``scale`` / ``translate``: the image layer's (level-0 pixels). A result read at a pyramid level
    with ``downsample`` d gets scale ``d * scale`` and a half-pixel shift so its pixels cover the same
    area as the level-0 pixels they came from. ``data`` may be a list of levels (multiscale, from a
    labels store). The features table holds one row per instance (label, area, centroid, mean
    intensity); napari matches rows to label values through the ``index`` column.
    """
    if isinstance(result, tuple):
        data, table, meta = result
        down = float(meta.get("downsample", 1.0))
    else:
        data, table, down = result.labels, result.table, float(result.downsample)
        meta = {
            "mpp": result.mpp,
            "classes": list(result.classes),
            "source": result.source,
            "params": dict(result.params),
        }
    scale = np.asarray(scale, np.float64)[-2:]
    translate = np.asarray(translate, np.float64)[-2:] + (down - 1) / 2.0 * scale
    features = {"index": np.asarray(table["label"], np.int64)}
    features.update({k: np.asarray(v) for k, v in table.items() if k != "label"})
    kwargs = {
        "name": name,
        "scale": tuple(scale * down),
        "translate": tuple(translate),
        "features": features,
        "opacity": 0.5,
        "metadata": {**meta, "pathreview": "segmentation", "downsample": down},
    }
    if isinstance(data, (list, tuple)):
        kwargs["multiscale"] = len(data) > 1
        data = list(data) if len(data) > 1 else data[0]
    return (data, kwargs, "labels")


# ---------------------------------------------------------------- heat maps (CAM, Grad-CAM, LRP, rollout)


def heat_colormap(colors, name: str, knee: float = 1.0, start: float = 0.0, display_name: str = "") -> dict:
    """Colours from low to high (``(N, 3|4)`` floats in [0, 1]) -> a napari colormap (dict form) that is
    transparent at the lowest value, its opacity rising linearly to full at ``knee`` of the range, so the
    H&E under a heat map stays visible where the evidence is weak. ``start`` drops that fraction of the low
    end of ``colors`` (the near-black start of inferno / magma would darken the tissue)."""
    colors = np.asarray(colors, np.float64).reshape(-1, np.shape(colors)[-1])[:, :3]
    src = np.linspace(0.0, 1.0, len(colors))
    v = np.linspace(0.0, 1.0, 64)
    pos = start + (1.0 - start) * v
    rgb = np.stack([np.interp(pos, src, colors[:, i]) for i in range(3)], 1)
    alpha = np.clip(v / max(knee, 1e-6), 0.0, 1.0)
    return {
        "colors": np.column_stack([rgb, alpha]).astype(np.float32),
        "controls": v.astype(np.float32),
        "name": name,
        "display_name": display_name or name,
    }


def named_heat_colormap(name: str) -> dict:
    """A napari colormap by name (inferno, turbo, magma, viridis, red, ...) made transparent at low values
    (:func:`heat_colormap`); the dark low end of the perceptual maps is dropped."""
    from napari.utils.colormaps import ensure_colormap  # napari's colour tables; no Qt

    colors = ensure_colormap(name).map(np.linspace(0.0, 1.0, 64, dtype=np.float32))
    start = 0.25 if name in ("inferno", "magma") else 0.0
    return heat_colormap(colors, f"pathreview-heat-{name}", start=start, display_name=f"{name} (clear when low)")


def has_evidence(heat) -> bool:
    """Whether a map has anything to show (a positive value); an LRP alpha-beta map of a class with only
    negative relevance, for instance, has none."""
    heat = np.asarray(heat)
    return bool(heat.size and np.nanmax(heat) > 0)


def heat_layer_data(
    heat,
    name: str,
    colormap: dict,
    scale=(1.0, 1.0),
    translate=(0.0, 0.0),
    contrast_limits=(0.0, 1.0),
    opacity: float = 0.7,
    gamma: float = 1.0,
    metadata=None,
    units=None,
):
    """A heat map ``(H, W)`` -> ("image") LayerData drawn over the slide: translucent blending (additive
    washes pale H&E out to white), ``colormap`` transparent at low values (:func:`heat_colormap`), values
    from ``contrast_limits``; ``units``: the slide layer's (so a scale bar reads the same). The widget turns
    on the layer's colour bar once it is added."""
    lo, hi = (float(c) for c in contrast_limits)
    kwargs = {
        "name": name,
        "colormap": colormap,
        "blending": "translucent",
        "opacity": float(opacity),
        "contrast_limits": (lo, hi if hi > lo else lo + 1e-6),
        "gamma": float(gamma),
        "scale": tuple(scale),
        "translate": tuple(translate),
        "interpolation2d": "linear",
        "metadata": {**dict(metadata or {}), "pathreview": (metadata or {}).get("pathreview", "heat")},
    }
    if units is not None:
        kwargs["units"] = tuple(str(u) for u in units)[-2:]
    return (np.asarray(heat, np.float32), kwargs, "image")


#: where the dark low end of a colour map stops: lines drawn in it over H&E would read as black
LINE_COLORMAP_START = {"magma": 0.4, "inferno": 0.4, "viridis": 0.35, "cividis": 0.45, "turbo": 0.15, "plasma": 0.3}


def line_colormap(name: str) -> dict:
    """A napari colormap by name for lines over H&E (attention, graphs): opaque everywhere, with the
    near-black low end of the perceptual maps dropped (``LINE_COLORMAP_START``) so the weakest line still
    shows on dark nuclei and pink stroma alike."""
    from napari.utils.colormaps import ensure_colormap  # napari's colour tables; no Qt

    colors = ensure_colormap(name).map(np.linspace(0.0, 1.0, 64, dtype=np.float32))
    cmap = heat_colormap(
        colors, f"pathreview-line-{name}", start=LINE_COLORMAP_START.get(name, 0.0), display_name=f"{name} (bright)"
    )
    cmap["colors"][:, 3] = 1.0
    return cmap
