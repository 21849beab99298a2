"""Opening slides: PNG / JPEG / BMP, TIFF, OME-TIFF and SVS (lazily, through zarr), or a zarr store (:mod:`.zarr_io`)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import stat
import warnings
import xml.etree.ElementTree as ET

import dask.array as da
import numpy as np

from ..errors import InputError
from .axes import _arrange
from .slide import (
    _UNIT_TO_UM,
    IMAGE_EXTENSIONS,
    SLIDE_EXTENSIONS,
    TIFF_EXTENSIONS,
    Slide,
    _display_name,
    _plausible,
    is_zarr_path,
    validate_mpp,
)
from .zarr_io import _open_zarr


def _open_plain_image(path: str) -> list:
    import imageio.v3 as iio
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:
        _check_plain_fits(path)  # Pillow's fixed pixel limit is replaced by the memory this machine has
        Image.MAX_IMAGE_PIXELS = None
        img = _read_cmyk_as_rgb(path)
        if img is None:
            img = np.asarray(iio.imread(path))
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"{path}: cannot read this image ({type(e).__name__}: {e}); the file may be truncated or "
            "not really a PNG/JPEG/BMP - re-export it"
        ) from e
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if img.ndim == 3 and img.shape[2] == 2:  # grey + alpha (PNG "LA"): keep the grey
        img = img[..., 0]
    if img.ndim not in (2, 3) or img.size == 0:
        raise InputError(f"{path}: unexpected image shape {img.shape}; expected a 2-D grey or RGB(A) image")
    arr = da.from_array(img, chunks=(1024, 1024) + img.shape[2:])
    return [_arrange(arr, "yx" if img.ndim == 2 else "yxc", path)]


def _check_plain_fits(path: str) -> None:
    """Refuse (InputError) a PNG / JPEG / BMP whose decoded pixels (from its header, before decoding)
    would not fit in the memory available: such formats are read whole."""
    from PIL import Image

    from ..memory import require_memory

    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            (w, h), bands = im.size, len(im.getbands())
    except Exception:
        return  # not for Pillow (or broken): the reader below says so
    require_memory(
        w * h * bands * 2,  # the decoded image and its RGB copy
        f"{path}: reading this {w} x {h} px image whole",
        "convert it to a tiled, pyramidal OME-TIFF or OME-Zarr (e.g. `vips tiffsave IN OUT.ome.tif --tile "
        "--pyramid`), which is read tile by tile",
    )


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


class _Collect(logging.Handler):
    """A logging handler that keeps the messages it gets (``records``) instead of printing them."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record) -> None:
        self.records.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def _tifffile_log(path: str):
    """Hold tifffile's log lines (it logs each corrupt tag or series it skips to stderr) while a TIFF
    is opened: a refusal already says what is wrong in one line; a file that opens anyway gets one
    warning naming it, the first problem and the fix."""
    log = logging.getLogger("tifffile")
    handler, propagate = _Collect(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
    if handler.records:  # reached only when the file opened
        more = f" (and {len(handler.records) - 1} more)" if len(handler.records) > 1 else ""
        warnings.warn(
            f"{path}: tifffile skipped damaged parts of this TIFF: {handler.records[0]}{more}; check the image "
            "looks right, or copy or export it again",
            stacklevel=3,
        )


def _open_tiff(path: str) -> tuple:
    with _tifffile_log(path):
        return _read_tiff(path)


def _read_tiff(path: str) -> tuple:
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
