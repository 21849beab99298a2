"""Open slides as lazy pyramids with their pixel size, and write pyramids back.

Backend module: numpy / tifffile / zarr / dask / scikit-image only (never Qt, napari or torch).

A :class:`Slide` is a list of dask arrays (level 0 first), each ``(Y, X)`` or ``(Y, X, C)``
(channel-last, whatever the file's own axis order), plus the microns per pixel (``mpp``) of level 0
when the file says it or the user gives it.

Formats read by :func:`open_slide`:

- PNG / JPEG / BMP: one level (read into memory, wrapped as dask);
- TIFF, OME-TIFF (SubIFD or multi-series pyramids), SVS / Aperio TIFF: lazily, through
  ``tifffile.imread(path, aszarr=True)`` + zarr; mpp from the OME-XML ``PhysicalSizeX``, the Aperio
  description (``MPP = 0.2527``) or the TIFF ``XResolution`` / ``ResolutionUnit`` tags;
- zarr (v2 or v3 stores): OME-Zarr multiscales (NGFF 0.4 attributes, or 0.5 under ``"ome"``), mpp
  from the level-0 ``coordinateTransformations`` scale and the axis unit; or a plain zarr array.

Writers: :func:`write_ome_zarr` (tile by tile, atomic, bounded memory) and :func:`write_tiff_pyramid`
(a tiled SubIFD OME-TIFF, in memory; for tests and sample data).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import threading
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from .errors import InputError, ProgressFn, check_cancel, report

__all__ = [
    "Slide",
    "open_slide",
    "validate_mpp",
    "to_rgb_uint8",
    "write_ome_zarr",
    "write_tiff_pyramid",
    "IMAGE_EXTENSIONS",
    "TIFF_EXTENSIONS",
    "ZARR_EXTENSIONS",
    "SLIDE_EXTENSIONS",
    "is_zarr_path",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_EXTENSIONS = (".tif", ".tiff", ".svs", ".btf", ".tf8")
ZARR_EXTENSIONS = (".zarr", ".ome.zarr")
SLIDE_EXTENSIONS = IMAGE_EXTENSIONS + TIFF_EXTENSIONS + ZARR_EXTENSIONS

MPP_MIN = 0.01  # exclusive
MPP_MAX = 100.0  # inclusive

_UNIT_TO_UM = {
    # OME-XML symbols
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "nm": 1e-3,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "Å": 1e-4,
    "pm": 1e-6,
    # NGFF (UDUNITS-2) names
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "meter": 1e6,
    "metre": 1e6,
    "angstrom": 1e-4,
    "picometer": 1e-6,
}


# --------------------------------------------------------------------------------------------------
# the Slide
# --------------------------------------------------------------------------------------------------


@dataclass
class Slide:
    """A lazily read image pyramid.

    Attributes:
        levels: dask arrays, level 0 (full resolution) first; each ``(Y, X)`` or ``(Y, X, C)``.
        mpp: microns per pixel at level 0, or ``None`` when unknown.
        path: where it was read from ("" for in-memory slides).
        name: a short display name (the file name without its extensions).
        is_labels: True for a label image (an OME-Zarr with ``image-label`` metadata).
    """

    levels: list
    mpp: float | None
    path: str
    name: str
    is_labels: bool = False

    @property
    def shape(self) -> tuple:
        """Level-0 ``(Y, X)``."""
        return tuple(int(s) for s in self.levels[0].shape[:2])

    @property
    def channels(self) -> int:
        """Number of channels (1 for a 2-D grey or label image)."""
        a = self.levels[0]
        return 1 if a.ndim == 2 else int(a.shape[2])

    @property
    def dtype(self) -> np.dtype:
        return self.levels[0].dtype

    @property
    def downsamples(self) -> list:
        """Downsample factor of each level relative to level 0 (mean of the Y and X ratios)."""
        y0, x0 = self.shape
        out = []
        for lev in self.levels:
            out.append(float((y0 / lev.shape[0] + x0 / lev.shape[1]) / 2.0))
        return out

    def level_mpp(self, i: int) -> float | None:
        """Microns per pixel at level ``i`` (``None`` when the slide's mpp is unknown)."""
        if self.mpp is None:
            return None
        return float(self.mpp * self.downsamples[i])

    def read_region(self, level: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Read ``h`` x ``w`` pixels at ``(y0, x0)`` of ``level`` as numpy, clipped to the image.

        The result can be smaller than asked (or empty) where the window runs off the image.
        """
        arr = self.levels[level]
        ny, nx = arr.shape[:2]
        ya, xa = max(0, int(y0)), max(0, int(x0))
        yb, xb = min(ny, int(y0) + int(h)), min(nx, int(x0) + int(w))
        yb, xb = max(ya, yb), max(xa, xb)
        return np.asarray(arr[ya:yb, xa:xb])

    def with_mpp(self, mpp: float | None) -> Slide:
        """A copy of this slide with ``mpp`` set (validated; ``None`` makes it unknown)."""
        new = None if mpp is None else validate_mpp(mpp, self.path or self.name)
        return replace(self, mpp=new, levels=list(self.levels))


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def validate_mpp(mpp: Any, source: str | None = None) -> float:
    """Return ``mpp`` as a float if it is a plausible microns-per-pixel value, else raise InputError."""
    where = f"{source}: " if source else ""
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise InputError(
            f"{where}mpp {mpp!r} is not a number; give --mpp as microns per pixel between {MPP_MIN:g} and "
            f"{MPP_MAX:g} (e.g. 0.25 for 40x, 0.5 for 20x)"
        ) from None
    if not math.isfinite(value) or not (MPP_MIN < value <= MPP_MAX):
        raise InputError(
            f"{where}mpp {mpp!r} is not a plausible microns-per-pixel value; give --mpp between {MPP_MIN:g} "
            f"and {MPP_MAX:g} (e.g. 0.25 for 40x, 0.5 for 20x)"
        )
    return value


MAX_MODEL_SCALE = 16.0


def check_model_scale(mpp: float, model_mpp: float | None, source: str = "image") -> float:
    """``mpp / model_mpp`` (model pixels per input pixel) when it lies within 1/16…16, else an InputError:
    a pixel size that far from the model's would leave a nucleus (~8 µm) a pixel or two across, or
    hundreds, and is almost always a wrong ``--mpp``. A model without an mpp gives 1.0."""
    if not model_mpp:
        return 1.0
    scale = float(mpp) / float(model_mpp)
    if not 1.0 / MAX_MODEL_SCALE <= scale <= MAX_MODEL_SCALE:
        raise InputError(
            f"{source}: {mpp:g} µm/px is {max(scale, 1 / scale):.0f}x {'coarser' if scale > 1 else 'finer'} than "
            f"the model's {model_mpp:g} µm/px (a nucleus would be ~{8.0 / mpp:.1f} px across); check --mpp "
            "(e.g. 0.25 for 40x, 0.5 for 20x)"
        )
    return scale


def _plausible(value: float | None) -> float | None:
    """Metadata values outside the plausible range are treated as unknown (None)."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if math.isfinite(v) and MPP_MIN < v <= MPP_MAX:
        return v
    return None


def _display_name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    low = base.lower()
    for ext in (".ome.zarr", ".ome.tiff", ".ome.tif") + SLIDE_EXTENSIONS:
        if low.endswith(ext):
            return base[: -len(ext)] or base
    return os.path.splitext(base)[0] or base


def is_zarr_path(path: str) -> bool:
    """True if ``path`` names a zarr store (``*.zarr`` or a folder holding zarr metadata)."""
    p = Path(path)
    if p.name.lower().endswith(".zarr"):
        return True
    return p.is_dir() and any((p / m).exists() for m in (".zgroup", ".zarray", "zarr.json"))


def _arrange(arr, axes: str, source: str):
    """Index away singleton extra axes and move the channel axis last; returns (Y, X) or (Y, X, C).

    ``axes`` is a lower-case string, one letter per dimension: ``y`` and ``x`` are space, ``c`` / ``s``
    are channels; anything else (``t``, ``z``, ``q``, ``i``...) must have size 1.
    """
    axes = axes.lower()
    if len(axes) != arr.ndim or "y" not in axes or "x" not in axes:
        raise InputError(
            f"{source}: cannot tell the image axes (shape {tuple(arr.shape)}, axes {axes!r}); "
            "save it as a 2-D RGB or grey image (Y, X[, C])"
        )
    chan = [i for i, a in enumerate(axes) if a in "cs" and arr.shape[i] > 1]
    others = [i for i, a in enumerate(axes) if a not in "yxcs" and arr.shape[i] > 1]
    if not chan and len(others) == 1 and axes[others[0]] in "qi" and arr.shape[others[0]] <= 4:
        chan, others = others, []  # an unnamed small axis is the channels
    if others or len(chan) > 1:
        raise InputError(
            f"{source}: has more than one plane (shape {tuple(arr.shape)}, axes {axes!r}); "
            "pathreview reads 2-D slides only: export a single plane (Y, X[, C])"
        )
    index = []
    keep = []
    for i, a in enumerate(axes):
        if a in "yx" or (chan and i == chan[0]):
            index.append(slice(None))
            keep.append(i)
        else:
            index.append(0)
    if any(not isinstance(ix, slice) for ix in index):
        arr = arr[tuple(index)]
    kept_axes = [axes[i] for i in keep]
    order = [kept_axes.index("y"), kept_axes.index("x")]
    if chan:
        order.append(keep.index(chan[0]))
    if order != list(range(len(order))):
        arr = da.transpose(arr, order)
    return arr


def _guess_axes(shape: Sequence[int]) -> str:
    nd = len(shape)
    if nd == 2:
        return "yx"
    if nd == 3:
        if shape[-1] <= 4:
            return "yxc"
        if shape[0] <= 4:
            return "cyx"
        return "yxc" if shape[-1] < shape[0] else "cyx"  # the smaller end is the channels
    return "tczyx"[-nd:] if nd <= 5 else "q" * (nd - 2) + "yx"


# --------------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------------


def _open_plain_image(path: str) -> list:
    import imageio.v3 as iio

    try:
        img = _read_cmyk_as_rgb(path)
        if img is None:
            img = np.asarray(iio.imread(path))
    except Exception as e:
        raise InputError(
            f"{path}: cannot read this image ({type(e).__name__}: {e}); the file may be truncated or "
            "not really a PNG/JPEG/BMP - re-export it"
        ) from e
    if img.ndim == 3 and img.shape[2] == 2:  # grey + alpha (PNG "LA"): keep the grey
        img = img[..., 0]
    if img.ndim not in (2, 3) or img.size == 0:
        raise InputError(f"{path}: unexpected image shape {img.shape}; expected a 2-D grey or RGB(A) image")
    arr = da.from_array(img, chunks=(1024, 1024) + img.shape[2:])
    return [_arrange(arr, "yx" if img.ndim == 2 else "yxc", path)]


def _read_cmyk_as_rgb(path: str) -> np.ndarray | None:
    """A CMYK (or YCCK) JPEG/PNG/BMP converted to RGB by Pillow; None for any other colour mode (read as
    usual). Without this, the four ink channels would be taken for RGBA."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode != "CMYK":
            return None
        return np.asarray(im.convert("RGB"))


def _ome_mpp(xml: str) -> float | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels"):
            val = el.get("PhysicalSizeX")
            if val is None:
                return None
            unit = el.get("PhysicalSizeXUnit", "µm")
            factor = _UNIT_TO_UM.get(unit)
            if factor is None:
                return None
            try:
                return _plausible(float(val) * factor)
            except ValueError:
                return None
    return None


def _tiff_tag_mpp(page) -> float | None:
    try:
        xres = page.tags["XResolution"].value
        unit = int(page.tags["ResolutionUnit"].value)
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(xres, tuple):
        if len(xres) != 2 or xres[1] == 0:
            return None
        xres = xres[0] / xres[1]
    try:
        xres = float(xres)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(xres) or xres <= 0:
        return None
    if unit == 3:  # centimetre
        return _plausible(1e4 / xres)
    if unit == 2:  # inch
        return _plausible(25400.0 / xres)
    return None  # NONE / unknown units carry no physical size


def _svs_mpp(description: str) -> float | None:
    m = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", description or "")
    if not m:
        return None
    try:
        return _plausible(float(m.group(1)))
    except ValueError:
        return None


def _open_tiff(path: str) -> tuple:
    import tifffile
    import zarr

    size = os.path.getsize(path)
    try:
        with tifffile.TiffFile(path) as tf:
            if not tf.series:
                raise InputError(f"{path}: the TIFF holds no image; re-export it")
            series = tf.series[0]
            axes = series.axes
            page0 = tf.pages[0]
            mpp = None
            if tf.is_ome and tf.ome_metadata:
                mpp = _ome_mpp(tf.ome_metadata)
            if mpp is None and tf.is_svs:
                mpp = _svs_mpp(page0.description)
            if mpp is None:
                mpp = _tiff_tag_mpp(series.levels[0].keyframe if series.levels else page0)
            # a truncated file usually still opens; check every level's data lies inside the file
            for lev in series.levels:
                for page in lev.pages:
                    if page is None:
                        continue
                    offs, counts = page.dataoffsets, page.databytecounts
                    if offs and max(o + c for o, c in zip(offs, counts)) > size:
                        raise InputError(
                            f"{path}: the TIFF is truncated (image data runs past the end of the "
                            f"{size}-byte file); copy or export it again"
                        )
        store = tifffile.imread(path, aszarr=True, series=0)
        node = zarr.open(store, mode="r")
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"{path}: cannot read as TIFF ({type(e).__name__}: {e}); the file may be corrupt, "
            "truncated or not a TIFF - check it opens in another viewer or export it again"
        ) from e
    if hasattr(node, "shape"):
        arrays = [node]
    else:
        keys = sorted(node.array_keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
        arrays = [node[k] for k in keys]
    levels = [_arrange(da.from_zarr(a), axes, path) for a in arrays]
    levels.sort(key=lambda a: -a.shape[0] * a.shape[1])
    return levels, mpp


def _ngff_multiscales(attrs: dict) -> list | None:
    if "multiscales" in attrs:
        return attrs["multiscales"]
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return None


def _scale_of(transforms) -> list | None:
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and "scale" in t:
            return [float(v) for v in t["scale"]]
    return None


def _open_zarr(path: str) -> tuple:
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except Exception as e:
        raise InputError(
            f"{path}: cannot open as zarr ({type(e).__name__}: {e}); it needs .zgroup/.zarray "
            "(zarr v2) or zarr.json (zarr v3) metadata - check the path points at the store's root"
        ) from e
    is_labels = False
    try:
        if hasattr(node, "shape"):  # a plain zarr array
            arr = da.from_zarr(node)
            _warn_missing_chunks(node, path)
            return [_arrange(arr, _guess_axes(arr.shape), path)], None, False
        attrs = dict(node.attrs)
        ms = _ngff_multiscales(attrs)
        is_labels = "image-label" in attrs or "image-label" in (attrs.get("ome") or {})
        if not ms:
            arrays = sorted(node.array_keys())
            if len(arrays) == 1:
                arr = da.from_zarr(node[arrays[0]])
                return [_arrange(arr, _guess_axes(arr.shape), path)], None, is_labels
            raise InputError(
                f"{path}: the zarr group has no OME-Zarr 'multiscales' metadata and "
                f"{len(arrays)} arrays; open one array (e.g. {path}/0) or write an OME-Zarr"
            )
        m = ms[0]
        datasets = m["datasets"]
        arrays = [node[d["path"]] for d in datasets]
        axes_meta = m.get("axes")
        ndim = len(arrays[0].shape)
        if axes_meta:
            names = [(a["name"] if isinstance(a, dict) else str(a)).lower() for a in axes_meta]
            types = [(a.get("type") if isinstance(a, dict) else None) for a in axes_meta]
            letters = ""
            for n, t in zip(names, types):
                if n in ("y", "x"):
                    letters += n
                elif t == "channel" or n in ("c", "channel"):
                    letters += "c"
                elif n in ("t", "z"):
                    letters += n
                else:
                    letters += "q"
            units = [(a.get("unit") if isinstance(a, dict) else None) for a in axes_meta]
        else:
            letters = _guess_axes(arrays[0].shape) if ndim <= 3 else "tczyx"[-ndim:]
            units = [None] * ndim
        levels = [_arrange(da.from_zarr(a), letters, path) for a in arrays]
        # largest level first, whatever order the metadata lists them in
        order = sorted(range(len(levels)), key=lambda i: -levels[i].shape[0] * levels[i].shape[1])
        levels, arrays, datasets = ([x[i] for i in order] for x in (levels, arrays, datasets))
        mpp = None
        scale = _scale_of(datasets[0].get("coordinateTransformations"))
        if scale is not None and "x" in letters:
            xi = letters.index("x")
            sx = scale[xi]
            glob = _scale_of(m.get("coordinateTransformations"))
            if glob is not None:
                sx *= glob[xi]
            unit = units[xi]
            factor = _UNIT_TO_UM.get(unit) if unit else None
            if factor is not None:  # without a unit the scale says nothing physical
                mpp = _plausible(sx * factor)
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"{path}: the zarr metadata is broken or incomplete ({type(e).__name__}: {e}); "
            "write it again (e.g. with napari-pathreview's OME-Zarr writer)"
        ) from e
    if not is_labels:
        _warn_missing_chunks(arrays[0], path)
    return levels, mpp, is_labels


def _warn_missing_chunks(arr, path: str) -> None:
    """Warn when chunks of the full-resolution level are not stored and its fill value is 0: they read
    as black. Writers skip chunks that hold only the fill value (so it can be fine), but a partial copy
    looks the same."""
    try:
        fill = arr.fill_value
        n, stored = int(arr.nchunks), int(arr.nchunks_initialized)
    except Exception:
        return
    if stored < n and not fill:
        import warnings

        warnings.warn(
            f"{path}: {n - stored} of {n} chunks of the full-resolution level are not stored and "
            f"read as {fill} (black); fine if its writer skipped empty chunks, otherwise the copy is "
            "incomplete - copy the store again",
            UserWarning,
            stacklevel=3,
        )


def open_slide(path, mpp: float | None = None) -> Slide:
    """Open an image or slide as a lazy pyramid.

    Args:
        path: a PNG/JPEG/BMP, TIFF/OME-TIFF/SVS file, or a zarr / OME-Zarr store.
        mpp: microns per pixel at level 0; overrides what the file says.

    Raises:
        InputError: the file is missing, of an unsupported kind, corrupt or truncated, or ``mpp``
            is not plausible. The message names the file and the problem.
    """
    path = os.fspath(path)
    if path.endswith(("/", os.sep)) and len(path) > 1:
        path = path.rstrip("/" + os.sep)
    user_mpp = None if mpp is None else validate_mpp(mpp, path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or folder; check the path")
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(
            f"{path}: is not a regular file (a pipe, device or socket); give an image file or a .zarr folder"
        )
    low = path.lower()
    is_labels = False
    if is_zarr_path(path):
        levels, file_mpp, is_labels = _open_zarr(path)
    elif os.path.isdir(path):
        raise InputError(f"{path}: is a folder but not a zarr store; give an image file or a .zarr folder")
    elif low.endswith(IMAGE_EXTENSIONS):
        levels, file_mpp = _open_plain_image(path), None
    elif low.endswith(TIFF_EXTENSIONS):
        levels, file_mpp = _open_tiff(path)
    else:
        raise InputError(f"{path}: unsupported file type; give one of " + ", ".join(SLIDE_EXTENSIONS))
    if not levels or any(min(a.shape[:2]) == 0 for a in levels):
        raise InputError(f"{path}: the image is empty")
    return Slide(
        levels=levels,
        mpp=user_mpp if user_mpp is not None else file_mpp,
        path=path,
        name=_display_name(path),
        is_labels=is_labels,
    )


# --------------------------------------------------------------------------------------------------
# display conversion
# --------------------------------------------------------------------------------------------------


def to_rgb_uint8(
    array,
    source: str = "image",
    lo: float | None = None,
    hi: float | None = None,
) -> np.ndarray:
    """Convert a tile to ``(Y, X, 3)`` uint8 RGB.

    - ``(Y, X)`` / ``(Y, X, 1)`` grey is repeated to RGB; RGBA drops alpha; 2 or more than 4
      channels raise :class:`InputError`.
    - uint8 is kept; bool becomes 0/255; floats within [0, 1] are multiplied by 255; other data
      (uint16, ints, floats beyond [0, 1]) are stretched from the 0.5th to the 99.5th percentile of
      this array, or from ``lo`` to ``hi`` when given (pass slide-wide values to avoid tile seams).
    - NaN or infinite values raise :class:`InputError` (``source`` names the data in the message).
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[..., None]
    elif a.ndim != 3:
        raise InputError(f"{source}: expected a 2-D grey or RGB image (Y, X[, C]) but got shape {a.shape}")
    c = a.shape[2]
    if c == 2 or c > 4:
        raise InputError(
            f"{source}: has {c} channels; pathreview needs grey, RGB or RGBA (H&E brightfield) - export an RGB image"
        )
    if c == 4:
        a = a[..., :3]
    if a.dtype == np.uint8:
        out = a
    elif a.dtype == bool:
        out = a.astype(np.uint8) * 255
    else:
        if a.dtype.kind not in "uif":
            raise InputError(f"{source}: unsupported pixel type {a.dtype}; export uint8 RGB")
        af = a.astype(np.float64) if a.dtype.kind == "f" else a
        if a.dtype.kind == "f" and not np.all(np.isfinite(af)):
            raise InputError(f"{source}: contains NaN or infinite pixel values; fix or mask them before analysis")
        if lo is None and hi is None and a.dtype.kind == "f" and a.size and af.min() >= 0 and af.max() <= 1:
            out = np.clip(np.rint(af * 255.0), 0, 255).astype(np.uint8)
        else:
            if a.size == 0:
                return np.zeros(a.shape[:2] + (3,), np.uint8)
            l = float(np.percentile(af, 0.5)) if lo is None else float(lo)
            h = float(np.percentile(af, 99.5)) if hi is None else float(hi)
            if h <= l:
                h = float(af.max())
                l = min(l, float(af.min()))
            if h <= l:
                out = np.zeros(a.shape, np.uint8)
            else:
                scaled = (af.astype(np.float64) - l) * (255.0 / (h - l))
                out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def lazy_rgb_uint8(level, small, source: str = "image"):
    """A slide level (dask ``(Y, X[, C])``, any dtype) as a lazy uint8 RGB dask array ``(Y, X, 3)``.

    uint8 levels are only reshaped per block; other data get one slide-wide stretch whose limits come
    from ``small`` (a coarse level, read whole: 0..1 floats map to 0..255, else the 0.5th..99.5th
    percentiles), so tiles have no seams and the level is never read whole. NaN/Inf in ``small`` raise
    :class:`InputError` at once; elsewhere, when the tile holding them is read.
    """
    arr = level if isinstance(level, da.Array) else da.asarray(level)
    lo = hi = None
    if arr.dtype != np.uint8 and arr.dtype != bool:
        s = np.asarray(small, np.float64)
        if not np.isfinite(s).all():
            raise InputError(f"{source}: contains NaN or infinite pixel values; fix or mask them before analysis")
        if arr.dtype.kind == "f" and s.size and s.min() >= 0 and s.max() <= 1:
            lo, hi = 0.0, 1.0
        elif s.size:
            lo, hi = (float(v) for v in np.percentile(s, [0.5, 99.5]))
    if arr.ndim == 3:
        arr = arr.rechunk({2: -1})
    chunks = (arr.chunks[0], arr.chunks[1], (3,))
    return arr.map_blocks(
        to_rgb_uint8, source, lo, hi, dtype=np.uint8, chunks=chunks, **({"new_axis": 2} if arr.ndim == 2 else {})
    )


# --------------------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------------------


def _down2(block: np.ndarray, labels: bool) -> np.ndarray:
    """2x downsample over the first two axes: mean of 2x2 (edges replicated) or stride for labels."""
    if labels:
        return block[::2, ::2]
    h, w = block.shape[:2]
    if h % 2:
        block = np.concatenate([block, block[-1:]], axis=0)
    if w % 2:
        block = np.concatenate([block, block[:, -1:]], axis=1)
    work = np.float64 if block.dtype == np.float64 else np.float32
    b = block.astype(work)
    m = (b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]) * 0.25
    if block.dtype.kind in "ui":
        info = np.iinfo(block.dtype)
        return np.clip(np.rint(m), info.min, info.max).astype(block.dtype)
    if block.dtype == bool:
        return m >= 0.5
    return m.astype(block.dtype)


def _default_levels(shape: Sequence[int], chunks: int) -> int:
    n = 1
    y, x = int(shape[0]), int(shape[1])
    while max(y, x) > chunks and min(y, x) > 1:
        y, x = (y + 1) // 2, (x + 1) // 2
        n += 1
    return n


def _level_shapes(shape: Sequence[int], n_levels: int) -> list:
    y, x = int(shape[0]), int(shape[1])
    out = [(y, x)]
    for _ in range(n_levels - 1):
        y, x = (y + 1) // 2, (x + 1) // 2
        out.append((y, x))
    return out


def _as_yxc(image, source: str, chunks: int | None = None):
    """(arr, channels) with arr a dask array (Y, X) or (Y, X, C); a non-dask input is wrapped with
    ``chunks``-sized blocks (reading one tile then reads one block, not dask's ~128 MB default)."""
    if isinstance(image, da.Array):
        arr = image
    elif chunks is not None and getattr(image, "ndim", 0) in (2, 3):
        arr = da.from_array(image, chunks=(chunks, chunks) + tuple(image.shape[2:]))
    else:
        arr = da.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) == 0:
        raise InputError(f"{source}: expected a 2-D image (Y, X[, C]) but got shape {arr.shape}")
    return arr, (1 if arr.ndim == 2 else int(arr.shape[2]))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def write_ome_zarr(
    path,
    image,
    mpp: float | None,
    n_levels: int | None = None,
    chunks: int = 512,
    labels: bool = False,
    name: str | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    fill_value: int = 0,
) -> str:
    """Write ``image`` as an OME-Zarr (NGFF 0.4, zarr v2) pyramid; return the path written.

    Args:
        path: the ``.zarr`` folder to create.
        image: numpy, dask or zarr array, ``(Y, X)`` or ``(Y, X, C)`` (channel-last). It is read one
            ``chunks`` x ``chunks`` tile at a time, so a lazy dask input never sits whole in memory.
        mpp: microns per pixel of ``image`` (``None``: unknown; the axes then carry no unit).
        n_levels: pyramid levels (default: halve until the largest side fits in one chunk).
        chunks: tile size of the stored chunks.
        labels: a label image: integer data, 2x downsampling by taking every other pixel (never
            mixing labels), and ``image-label`` metadata so readers show it as labels.
        name: the multiscale's name (default: the folder name).
        overwrite: replace an existing ``path``; otherwise an existing path raises InputError.
        fill_value: the arrays' fill value; chunks holding only it are not stored (e.g. 255 or the
            glass colour for a slide that is mostly glass).

    Storage order follows NGFF 0.4 (channel axis before space): ``c, y, x`` for multichannel data,
    ``y, x`` for grey and labels; :func:`open_slide` gives it back channel-last. The store is built
    at ``path + ".partial"`` and renamed into place only once complete.
    """
    import zarr

    path = os.fspath(path).rstrip("/" + os.sep)
    if os.path.lexists(path) and not overwrite:
        raise InputError(f"{path}: already exists; choose another output path or pass overwrite=True (--overwrite)")
    if mpp is not None:
        mpp = validate_mpp(mpp, path)
    arr, nch = _as_yxc(image, path, int(chunks))
    if labels:
        if nch != 1 or arr.dtype.kind not in "uib":
            raise InputError(f"{path}: labels must be a 2-D integer image, got shape {arr.shape} dtype {arr.dtype}")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
    chunks = int(chunks)
    if chunks < 16:
        raise InputError(f"{path}: chunks={chunks} is too small; use 64 or more")
    shape = arr.shape[:2]
    if n_levels is None:
        n_levels = _default_levels(shape, chunks)
    n_levels = int(n_levels)
    if n_levels < 1:
        raise InputError(f"{path}: n_levels must be at least 1, got {n_levels}")
    shapes = _level_shapes(shape, n_levels)
    if min(shapes[-1]) < 1:
        raise InputError(f"{path}: {n_levels} levels is too many for an image of shape {shape}")
    name = name or _display_name(path)

    partial = path + ".partial"
    _remove(partial)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"{path}: the folder {parent} does not exist; create it first")

    tiles_per_level = [math.ceil(s[0] / chunks) * math.ceil(s[1] / chunks) for s in shapes]
    total = sum(tiles_per_level)
    done = 0
    try:
        root = zarr.open_group(partial, mode="w", zarr_format=2)
        zarrs = []
        for k, (ly, lx) in enumerate(shapes):
            zshape = (nch, ly, lx) if nch > 1 else (ly, lx)
            zchunks = (nch, min(chunks, ly), min(chunks, lx)) if nch > 1 else (min(chunks, ly), min(chunks, lx))
            zarrs.append(
                root.create_array(
                    str(k),
                    shape=zshape,
                    chunks=zchunks,
                    dtype=arr.dtype,
                    chunk_key_encoding={"name": "v2", "separator": "/"},
                    fill_value=fill_value,
                )
            )
        for k, (ly, lx) in enumerate(shapes):
            z = zarrs[k]
            for y in range(0, ly, chunks):
                for x in range(0, lx, chunks):
                    check_cancel(cancel)
                    h, w = min(chunks, ly - y), min(chunks, lx - x)
                    if k == 0:
                        block = np.asarray(arr[y : y + h, x : x + w])
                    else:
                        prev = zarrs[k - 1]
                        py, px = prev.shape[-2:]
                        sl = (slice(2 * y, min(py, 2 * (y + h))), slice(2 * x, min(px, 2 * (x + w))))
                        src = prev[(slice(None),) + sl] if nch > 1 else prev[sl]
                        if nch > 1:
                            src = np.moveaxis(src, 0, -1)
                        block = _down2(np.asarray(src), labels)
                    if nch > 1:
                        z[:, y : y + h, x : x + w] = np.moveaxis(block, -1, 0)
                    else:
                        z[y : y + h, x : x + w] = block
                    done += 1
                    report(progress, done, total, f"writing level {k} of {n_levels}")
        unit = {"unit": "micrometer"} if mpp is not None else {}
        axes = [{"name": "y", "type": "space", **unit}, {"name": "x", "type": "space", **unit}]
        if nch > 1:
            axes.insert(0, {"name": "c", "type": "channel"})
        base = mpp if mpp is not None else 1.0
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
        root.attrs.update(attrs)
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
