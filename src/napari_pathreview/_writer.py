"""npe2 writers: an image or labels layer -> OME-Zarr pyramid (via ``backend.slides.write_ome_zarr``).

The pixel size is taken from ``meta["metadata"]["mpp"]`` (set by this plugin's reader) or else from
the layer's scale when it is not ``(1, 1)`` (napari layers scaled in microns). napari asks before
replacing an existing file, so these writers overwrite.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .backend.errors import InputError
from .backend.slides import MPP_MAX, MPP_MIN, ZarrLayout, write_ome_zarr


def _layer_mpp(meta: dict) -> float | None:
    mpp = (meta.get("metadata") or {}).get("mpp")
    if mpp is not None:
        return float(mpp)
    scale = meta.get("scale")
    if scale is not None and len(scale) >= 2:
        sy, sx = float(scale[-2]), float(scale[-1])
        if math.isfinite(sx) and sx != 1.0 and abs(sy - sx) <= 1e-6 * abs(sx) and MPP_MIN < sx <= MPP_MAX:
            return sx
    return None


def write_ome_zarr_layer(path: str, data: Any, meta: dict, layer_type: str = "image") -> list[str]:
    """Write one layer's data as an OME-Zarr at ``path``; returns ``[path]``.

    ``data`` is an array or a list of arrays (multiscale; level 0 is written and the pyramid rebuilt).
    Images must be 2-D grey or RGB(A) ``(Y, X[, C])``; labels 2-D integer.
    """
    path = os.fspath(path)
    if isinstance(data, (list, tuple)):
        data = data[0]
    labels = layer_type == "labels"
    ndim = len(data.shape)
    rgb = bool(meta.get("rgb", False))
    if ndim != 2 and not (ndim == 3 and rgb and not labels):
        raise InputError(
            f"{path}: can only write 2-D {'labels' if labels else 'grey or RGB images'} as OME-Zarr, "
            f"but the layer {meta.get('name', '')!r} has shape {tuple(data.shape)}; "
            "select a single plane first"
        )
    write_ome_zarr(
        path, data, _layer_mpp(meta), ZarrLayout(labels=labels, name=meta.get("name") or None), overwrite=True
    )
    return [path]


def write_image_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for image layers."""
    return write_ome_zarr_layer(path, data, meta, layer_type="image")


def write_labels_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for labels layers."""
    return write_ome_zarr_layer(path, data, meta, layer_type="labels")


# ---- points layers -> QuPath GeoJSON / CSV ------------------------------------------------------


def _layer_points(data: Any, meta: dict):
    from .widgets.layers import points_from_layer_data

    metadata = dict(meta.get("metadata") or {})
    if metadata.get("mpp") is None:
        metadata["mpp"] = _layer_mpp(meta)
    return points_from_layer_data(data, meta.get("features"), metadata, meta.get("face_color"))


def write_points_geojson(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a Points layer -> QuPath-compatible GeoJSON (Point features, class + colour,
    measurements); the plugin's reader opens it again with the same positions and classes."""
    from .backend.exchange import write_geojson

    return [os.fspath(write_geojson(_layer_points(data, meta), os.fspath(path)))]


def write_points_csv_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a Points layer -> CSV (``x,y,x_um,y_um,class,score,p_<class>``)."""
    from .backend.exchange import write_points_csv

    return [os.fspath(write_points_csv(_layer_points(data, meta), os.fspath(path)))]


def write_labels_geojson_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a Labels layer -> QuPath GeoJSON polygons (one per instance)."""
    import numpy as np

    from .backend.exchange import write_labels_geojson

    if isinstance(data, (list, tuple)):
        data = data[0]
    return [os.fspath(write_labels_geojson(np.asarray(data), os.fspath(path), _layer_mpp(meta)))]
