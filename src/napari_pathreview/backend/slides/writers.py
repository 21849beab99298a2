"""Writing pyramids: an OME-Zarr tile by tile (atomic, bounded memory) and a tiled SubIFD OME-TIFF (in memory)."""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, ProgressFn, check_cancel, report
from .pyramid import _as_yxc, _default_levels, _down2, _level_shapes, _remove
from .slide import _display_name, validate_mpp


@dataclass
class ZarrLayout:
    """How :func:`write_ome_zarr` lays a pyramid out.

    n_levels: pyramid levels (None: halve until the largest side fits in one chunk).
    chunks: tile size of the stored chunks (px).
    labels: a label image: integer data, 2x downsampling by taking every other pixel (never mixing
        labels), and ``image-label`` metadata so readers show it as labels.
    name: the multiscale's name (None: the folder name).
    fill_value: the arrays' fill value; chunks holding only it are not stored (e.g. 255 or the glass
        colour for a slide that is mostly glass).
    """

    n_levels: int | None = None
    chunks: int = 512
    labels: bool = False
    name: str | None = None
    fill_value: int = 0


def _checked_input(path: str, image, mpp, layout: ZarrLayout):
    """(mpp, arr, channels, level shapes) of a write, validated (InputError names ``path``)."""
    if mpp is not None:
        mpp = validate_mpp(mpp, path)
    arr, nch = _as_yxc(image, path, int(layout.chunks))
    if layout.labels:
        if nch != 1 or arr.dtype.kind not in "uib":
            raise InputError(f"{path}: labels must be a 2-D integer image, got shape {arr.shape} dtype {arr.dtype}")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
    chunks = int(layout.chunks)
    if chunks < 16:
        raise InputError(f"{path}: chunks={chunks} is too small; use 64 or more")
    shape = arr.shape[:2]
    n_levels = int(_default_levels(shape, chunks) if layout.n_levels is None else layout.n_levels)
    if n_levels < 1:
        raise InputError(f"{path}: n_levels must be at least 1, got {n_levels}")
    shapes = _level_shapes(shape, n_levels)
    if min(shapes[-1]) < 1:
        raise InputError(f"{path}: {n_levels} levels is too many for an image of shape {shape}")
    return mpp, arr, nch, shapes


def _create_arrays(root, shapes, nch: int, dtype, layout: ZarrLayout) -> list:
    """One zarr array per level (``c, y, x`` for multichannel data, else ``y, x``), nothing written yet."""
    chunks, zarrs = int(layout.chunks), []
    for k, (ly, lx) in enumerate(shapes):
        zshape = (nch, ly, lx) if nch > 1 else (ly, lx)
        zchunks = (nch, min(chunks, ly), min(chunks, lx)) if nch > 1 else (min(chunks, ly), min(chunks, lx))
        zarrs.append(
            root.create_array(
                str(k),
                shape=zshape,
                chunks=zchunks,
                dtype=dtype,
                chunk_key_encoding={"name": "v2", "separator": "/"},
                fill_value=layout.fill_value,
            )
        )
    return zarrs


def _level_tile(arr, zarrs, k: int, yx: tuple, hw: tuple, labels: bool) -> np.ndarray:
    """The ``(h, w[, C])`` tile at ``(y, x)`` of level ``k``: read from the input (level 0) or 2x
    downsampled from the level above, already written."""
    (y, x), (h, w) = yx, hw
    if k == 0:
        return np.asarray(arr[y : y + h, x : x + w])
    prev = zarrs[k - 1]
    multi = prev.ndim == 3
    py, px = prev.shape[-2:]
    sl = (slice(2 * y, min(py, 2 * (y + h))), slice(2 * x, min(px, 2 * (x + w))))
    src = prev[(slice(None),) + sl] if multi else prev[sl]
    if multi:
        src = np.moveaxis(src, 0, -1)
    return _down2(np.asarray(src), labels)


def _write_levels(arr, zarrs, shapes, layout: ZarrLayout, progress, cancel) -> None:
    """Fill every level tile by tile, level 0 first (each level reads only the one above it)."""
    chunks = int(layout.chunks)
    total = sum(math.ceil(s[0] / chunks) * math.ceil(s[1] / chunks) for s in shapes)
    done = 0
    for k, (ly, lx) in enumerate(shapes):
        z = zarrs[k]
        for y in range(0, ly, chunks):
            for x in range(0, lx, chunks):
                check_cancel(cancel)
                h, w = min(chunks, ly - y), min(chunks, lx - x)
                block = _level_tile(arr, zarrs, k, (y, x), (h, w), layout.labels)
                if z.ndim == 3:
                    z[:, y : y + h, x : x + w] = np.moveaxis(block, -1, 0)
                else:
                    z[y : y + h, x : x + w] = block
                done += 1
                report(progress, done, total, f"writing level {k} of {len(shapes)}")


def _ngff_attrs(shapes, nch: int, mpp, name: str, labels: bool) -> dict:
    """NGFF 0.4 ``multiscales`` (and ``image-label``) attributes; scales in µm when ``mpp`` is known."""
    unit = {"unit": "micrometer"} if mpp is not None else {}
    axes = [{"name": "y", "type": "space", **unit}, {"name": "x", "type": "space", **unit}]
    if nch > 1:
        axes.insert(0, {"name": "c", "type": "channel"})
    base = mpp if mpp is not None else 1.0
    shape = shapes[0]
    datasets = []
    for k, (ly, lx) in enumerate(shapes):
        sy, sx = base * shape[0] / ly, base * shape[1] / lx
        sc = [1.0, sy, sx] if nch > 1 else [sy, sx]
        datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": sc}]})
    attrs = {
        "multiscales": [
            {
                "version": "0.4",
                "name": name,
                "axes": axes,
                "datasets": datasets,
                "type": "stride" if labels else "mean",
                "metadata": {"method": "napari_pathreview.backend.slides.write_ome_zarr", "mpp": mpp},
            }
        ]
    }
    if labels:
        attrs["image-label"] = {"version": "0.4"}
    return attrs


def _is_zarr_store(path: str) -> bool:
    """True for a zarr v2 / v3 store (its root holds ``.zgroup``, ``.zarray`` or ``zarr.json``): the only
    thing ``write_ome_zarr(overwrite=True)`` may replace; never a user's file or other folder."""
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    return any(os.path.isfile(os.path.join(path, m)) for m in (".zgroup", ".zarray", "zarr.json"))


def write_ome_zarr(
    path,
    image,
    mpp: float | None,
    layout: ZarrLayout | None = None,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Write ``image`` as an OME-Zarr (NGFF 0.4, zarr v2) pyramid; return the path written.

    Args:
        path: the ``.zarr`` folder to create.
        image: numpy, dask or zarr array, ``(Y, X)`` or ``(Y, X, C)`` (channel-last). It is read one
            ``chunks`` x ``chunks`` tile at a time, so a lazy dask input never sits whole in memory.
        mpp: microns per pixel of ``image`` (``None``: unknown; the axes then carry no unit).
        layout: levels, chunk size, labels, name and fill value (:class:`ZarrLayout`; None: its defaults).
        overwrite: replace an existing zarr store at ``path``; otherwise an existing path raises InputError.
            Anything else at ``path`` (a file, a folder that is not a zarr store) is never replaced.

    Storage order follows NGFF 0.4 (channel axis before space): ``c, y, x`` for multichannel data,
    ``y, x`` for grey and labels; :func:`open_slide` gives it back channel-last. The store is built
    at ``path + ".partial"`` and renamed into place only once complete.
    """
    import zarr

    layout = layout or ZarrLayout()
    path = os.fspath(path).rstrip("/" + os.sep)
    if os.path.lexists(path) and not overwrite:
        raise InputError(f"{path}: already exists; choose another output path or pass overwrite=True (--overwrite)")
    if os.path.lexists(path) and not _is_zarr_store(path):
        raise InputError(
            f"{path}: exists and is not a zarr store (a file, or a folder without .zgroup / .zarray / zarr.json); "
            "nothing was replaced - choose another name ending in .zarr"
        )
    mpp, arr, nch, shapes = _checked_input(path, image, mpp, layout)
    name = layout.name or _display_name(path)
    partial = path + ".partial"
    _remove(partial)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"{path}: the folder {parent} does not exist; create it first")
    try:
        root = zarr.open_group(partial, mode="w", zarr_format=2)
        zarrs = _create_arrays(root, shapes, nch, arr.dtype, layout)
        _write_levels(arr, zarrs, shapes, layout, progress, cancel)
        root.attrs.update(_ngff_attrs(shapes, nch, mpp, name, layout.labels))
        if os.path.lexists(path):
            _remove(path)  # only reached with overwrite=True
        os.rename(partial, path)
    except BaseException:
        _remove(partial)
        raise
    return path


def write_tiff_pyramid(
    path,
    image,
    mpp: float | None,
    n_levels: int = 3,
    tile: int = 256,
    compression: str = "zlib",
    overwrite: bool = False,
) -> str:
    """Write ``image`` as a tiled pyramidal OME-TIFF (levels in SubIFDs); return the path.

    ``image`` (numpy or dask, ``(Y, X)`` or ``(Y, X, C)``) is held in memory: this is for tests,
    sample data and modest images, not whole slides. Levels are 2x means. ``mpp`` is written as
    OME ``PhysicalSizeX/Y`` (µm) and as TIFF resolution (pixels per centimetre).
    ``compression``: ``"zlib"`` (lossless), ``"jpeg"`` (small, lossy, uint8 only) or ``None``.
    """
    import tifffile

    path = os.fspath(path)
    if os.path.lexists(path) and not overwrite:
        raise InputError(f"{path}: already exists; choose another output path or pass overwrite=True")
    if mpp is not None:
        mpp = validate_mpp(mpp, path)
    arr, nch = _as_yxc(image, path)
    img = np.asarray(arr)
    n_levels = int(n_levels)
    if n_levels < 1:
        raise InputError(f"{path}: n_levels must be at least 1, got {n_levels}")
    levels = [img]
    for _ in range(n_levels - 1):
        levels.append(_down2(levels[-1], labels=False))
    rgb = nch in (3, 4) and img.dtype == np.uint8
    if rgb:
        axes, photometric, planar = "YXS", "rgb", None
    elif nch == 1:
        axes, photometric, planar = "YX", "minisblack", None
    else:
        axes, photometric, planar = "CYX", "minisblack", "separate"
        levels = [np.ascontiguousarray(np.moveaxis(lv, -1, 0)) for lv in levels]
    meta: dict = {"axes": axes}
    if mpp is not None:
        meta.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
    opts: dict = dict(tile=(tile, tile), photometric=photometric, compression=compression)
    if planar:
        opts["planarconfig"] = planar
    if compression == "zlib":
        opts["predictor"] = True
    extra = {"extrasamples": ["unassalpha"]} if rgb and nch == 4 else {}
    tmp = path + ".partial"
    try:
        with tifffile.TiffWriter(tmp, ome=True, bigtiff=img.nbytes > 2**31) as tw:
            for k, lv in enumerate(levels):
                res = {}
                if mpp is not None:
                    f = 2**k
                    res = dict(resolution=(1e4 / (mpp * f), 1e4 / (mpp * f)), resolutionunit="CENTIMETER")
                if k == 0:
                    tw.write(lv, subifds=n_levels - 1, metadata=meta, **res, **opts, **extra)
                else:
                    tw.write(lv, subfiletype=1, metadata=None, **res, **opts, **extra)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path
