"""npe2 reader: slides and images (PNG/JPEG/BMP, TIFF/OME-TIFF/SVS, zarr/OME-Zarr) as napari layers.

Every layer is scaled in microns (``scale = (mpp, mpp)``) so layers of one slide, and results
computed at another resolution, line up; when the file gives no pixel size the scale is ``(1, 1)``
(pixels) and ``metadata["mpp"]`` is ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .backend.slides import SLIDE_EXTENSIONS, Slide, is_zarr_path, open_slide, zarr_translation

PathLike = str | Path
PathOrPaths = PathLike | Sequence[PathLike]


def _can_read(path: PathLike) -> bool:
    p = os.fspath(path)
    low = p.lower().rstrip("/" + os.sep)
    return low.endswith(SLIDE_EXTENSIONS) or is_zarr_path(p)


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list] | None:
    """Return :func:`read_slides` if every path is a kind this plugin reads, else ``None``."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_can_read(p) for p in paths):
        return None
    return read_slides


def slide_to_layer_data(slide: Slide, name: str | None = None) -> tuple:
    """One napari LayerData tuple for ``slide`` (multiscale when it has more than one level)."""
    data = list(slide.levels) if len(slide.levels) > 1 else slide.levels[0]
    scale = (slide.mpp, slide.mpp) if slide.mpp is not None else (1.0, 1.0)
    meta = {
        "name": name or slide.name,
        "scale": scale,
        "multiscale": len(slide.levels) > 1,
        "metadata": {"mpp": slide.mpp, "path": slide.path},
    }
    shift = zarr_translation(slide.path) if slide.path and is_zarr_path(slide.path) else None
    if shift is not None:  # a store cut from a region of a slide (``segment --region``) lies where it was cut
        meta["translate"] = shift
    if slide.is_labels:
        return (data, meta, "labels")
    channels = slide.channels
    meta["rgb"] = channels in (3, 4)
    if channels == 2 or channels > 4:
        meta["channel_axis"] = 2  # one layer per channel (fluorescence and the like)
    return (data, meta, "image")


def read_slides(path: PathOrPaths) -> list[tuple]:
    """Read one or more paths; returns a list of napari LayerData tuples.

    Raises :class:`~napari_pathreview.backend.errors.InputError` (naming the file and the problem)
    for missing, corrupt or unsupported files.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [slide_to_layer_data(open_slide(os.fspath(p))) for p in paths]


# ---- cell points: QuPath / pathreview GeoJSON and CSV ---------------------------------------------
POINTS_EXTENSIONS = (".geojson", ".csv", ".tsv")


def get_points_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list] | None:
    """Return :func:`read_points` for GeoJSON / CSV / TSV cell-point files, else ``None``."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(os.fspath(p).lower().endswith(POINTS_EXTENSIONS) for p in paths):
        return None
    return read_points


def read_points(path: PathOrPaths) -> list[tuple]:
    """GeoJSON (QuPath / pathreview) or points CSV -> one Points layer per file (per image of a
    dataset ``points.csv``), coloured by class with a ``class`` feature; scaled in µm when the file
    gives the pixel size (as the slide reader does), else in pixels."""
    from .backend.exchange import read_points_file
    from .widgets.layers import points_layer_data

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out = []
    for p in paths:
        for name, pts in _one_image_per_open_slide(os.fspath(p), read_points_file(os.fspath(p))).items():
            scale = (pts.mpp, pts.mpp) if pts.mpp else (1.0, 1.0)
            data, kwargs, kind = points_layer_data(pts, name, scale=scale)
            kwargs["metadata"].update({"path": os.fspath(p), "pathreview": "annotation"})
            out.append((data, kwargs, kind))
            if os.fspath(p).lower().endswith(".geojson"):
                out += _polygon_layers(os.fspath(p), name, scale)
    return out


def _one_image_per_open_slide(path: str, tables: dict) -> dict:
    """A dataset CSV lists many images (``points.csv``: image,split,x,y,label): open the points of the images
    that are open in the viewer (an image layer named like them, or opened from a file of that name), else
    of the first image only, with a warning that says how to get another's; one layer, not one per image."""
    if len(tables) <= 1:
        return tables
    import warnings

    stem = Path(path).stem
    images = {k[len(stem) + 1 :] if k.startswith(stem + " ") else k: k for k in tables}
    open_names = set()
    try:
        import napari

        viewer = napari.current_viewer()
        for ly in viewer.layers if viewer is not None else []:
            open_names.add(ly.name)
            src = (ly.metadata or {}).get("path") or getattr(getattr(ly, "source", None), "path", None)
            if src:
                open_names.add(Path(str(src)).stem)
    except Exception:  # no viewer (a script): the first image
        pass
    chosen = [k for img, k in images.items() if img in open_names]
    if chosen:
        return {k: tables[k] for k in chosen}
    first = next(iter(images))
    warnings.warn(
        f"{Path(path).name} lists {len(images)} images; opened the points of '{first}' only. Open the image "
        "you want to review first (a layer named like it), then this file, to get its points",
        stacklevel=2,
    )
    return {images[first]: tables[images[first]]}


def _polygon_layers(path: str, name: str, scale) -> list[tuple]:
    """Polygon features of a GeoJSON as a Shapes layer (edge colour by class), when there are any."""
    from .backend.exchange import read_geojson_polygons
    from .backend.weights import class_colors
    from .widgets.layers import hex_to_rgba

    rings, names, colors = read_geojson_polygons(path)
    if not rings:
        return []
    colors = {**class_colors(list(dict.fromkeys(names))), **colors}
    edge = [hex_to_rgba(colors[n]) for n in names]
    return [
        (
            rings,
            {
                "name": f"{name} polygons",
                "shape_type": "polygon",
                "scale": scale,
                "edge_color": edge,
                "face_color": "transparent",
                "edge_width": 1.0,
                "features": {"class": names},
                "metadata": {"path": path, "pathreview": "annotation", "colors": colors},
            },
            "shapes",
        )
    ]
