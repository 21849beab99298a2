"""Plain results -> napari layer data tuples (numpy only; no Qt, no torch).

Every layer of one slide shares the slide layer's scale (µm per level-0 pixel) and translate, so they
line up whatever the slide's resolution.
"""
from __future__ import annotations

import numpy as np


def hex_to_rgba(color: str, alpha: float = 1.0) -> np.ndarray:
    h = color.lstrip("#")
    return np.array([int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)] + [alpha], np.float32)


def points_layer_data(points, name: str, scale=(1.0, 1.0), translate=(0.0, 0.0), size_um: float = 4.0):
    """CellPoints -> ("points") LayerData: coloured by class, features table (class, score, p_*)."""
    from .backend.weights import class_colors

    colors = points.colors or class_colors(points.classes)
    table = points.table()
    face = np.array([hex_to_rgba(colors.get(str(c), "#ffffff")) for c in table["class"]], np.float32).reshape(-1, 4)
    mpp = points.mpp
    size = size_um / mpp if mpp else 8.0
    kwargs = {
        "name": name, "scale": tuple(scale), "translate": tuple(translate), "features": table,
        "face_color": face, "border_color": "black", "border_width": 0.1, "size": size,
        "metadata": {"classes": list(points.classes), "colors": colors, "mpp": mpp, "source": points.source,
                     "pathreview": "cells"},
    }
    return (np.asarray(points.yx, np.float32).reshape(-1, 2), kwargs, "points")


def legend_html(classes, colors, counts=None) -> str:
    """A small HTML legend: a coloured square and the class name (and count) per class."""
    rows = []
    for i, c in enumerate(classes):
        n = f" ({counts[i]})" if counts is not None else ""
        rows.append(f'<span style="color:{colors.get(c, "#ffffff")}">&#9632;</span> {c}{n}')
    return "<br>".join(rows)
