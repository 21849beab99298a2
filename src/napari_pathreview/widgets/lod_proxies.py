"""The display-only layers level of detail draws in place of a large layer (``widgets/lod_control.py``):
``<name> (overview)``, an RGBA Image of the density pyramid, and ``<name> (in view)``, a Points or Vectors
layer holding copies of the in-view items. Both carry ``{"pathreview": "lod-proxy"}`` in their metadata."""

from __future__ import annotations

import contextlib

import numpy as np

PROXY = "lod-proxy"


def is_proxy(layer) -> bool:
    return (getattr(layer, "metadata", None) or {}).get("pathreview") == PROXY


def block_refresh(layer):
    """napari's context that defers a layer's refresh while several of its properties are set."""
    block = getattr(layer, "_block_refresh", None)
    return block() if block is not None else contextlib.nullcontext()


def overview_transform(layer, pyr) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, translate) of the pyramid's level 0 in world units: its bins (px of ``layer``'s data)
    through ``layer``'s own scale and translate."""
    (by, bx), (ty, tx) = pyr.image_scale_translate(0)
    s = np.asarray(layer.scale, float)[-2:]
    t = np.asarray(layer.translate, float)[-2:]
    return (by * s[0], bx * s[1]), (t[0] + ty * s[0], t[1] + tx * s[1])


def new_overview(layer, pyr):
    """A hidden RGBA Image (multiscale when the pyramid has several levels) over ``layer``, with its
    opacity and units (µm: napari's scale bar reads them)."""
    from napari.layers import Image

    scale, translate = overview_transform(layer, pyr)
    overview = Image(
        pyr.levels if len(pyr.levels) > 1 else pyr.levels[0],
        rgb=True,
        multiscale=len(pyr.levels) > 1,
        name=f"{layer.name} (overview)",
        scale=scale,
        translate=translate,
        opacity=layer.opacity,
        visible=False,
        metadata={"pathreview": PROXY, "lod_source": layer.name},
    )
    with contextlib.suppress(Exception):
        overview.units = layer.units
    return overview


def set_overview_data(overview, layer, pyr) -> None:
    """Put a re-derived pyramid into an existing overview, with one refresh."""
    scale, translate = overview_transform(layer, pyr)
    levels = pyr.levels if len(pyr.levels) > 1 else pyr.levels[0]
    with block_refresh(overview):
        overview.data = levels
        overview.scale, overview.translate = scale, translate
    overview.refresh()


def new_in_view(layer, kind: str):
    """An empty hidden Points (``kind`` "points") or Vectors layer on ``layer``'s scale, translate and units."""
    from napari.layers import Points, Vectors

    md = {"pathreview": PROXY, "lod_source": layer.name}
    if kind == "points":
        proxy = Points(
            np.zeros((0, layer.ndim)),
            name=f"{layer.name} (in view)",
            scale=layer.scale,
            translate=layer.translate,
            metadata=md,
            visible=False,
        )
    else:
        proxy = Vectors(
            np.zeros((0, 2, layer.ndim)),
            name=f"{layer.name} (in view)",
            scale=layer.scale,
            translate=layer.translate,
            metadata=md,
            visible=False,
        )
    with contextlib.suppress(Exception):
        proxy.units = layer.units
    return proxy


def copy_in_view(proxy, layer, kind: str, idx: np.ndarray) -> None:
    """Copy items ``idx`` (int64) of ``layer`` into ``proxy``: the data first (napari re-slices, so the
    view indices fit), then the per-item styles at once (one refresh)."""
    proxy.data = np.asarray(layer.data)[idx]
    if len(idx) and kind == "points":
        with block_refresh(proxy):
            proxy.face_color = np.asarray(layer.face_color)[idx]
            proxy.border_color = np.asarray(layer.border_color)[idx]
            proxy.size = np.asarray(layer.size)[idx]
            proxy.border_width = np.asarray(layer.border_width)[idx]
            proxy.border_width_is_relative = layer.border_width_is_relative
            proxy.symbol = np.asarray(layer.symbol)[idx]
        proxy.refresh()
    elif len(idx):
        proxy.edge_color = np.asarray(layer.edge_color)[idx]
