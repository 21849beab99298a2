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

Modules: :mod:`.slide` (the Slide, mpp checks, file kinds), :mod:`.readers` (images, TIFF, ``open_slide``),
:mod:`.zarr_io` (zarr / OME-Zarr), :mod:`.axes`, :mod:`.display` (uint8 RGB), :mod:`.pyramid` and
:mod:`.writers`.
"""

from .display import lazy_rgb_uint8, to_rgb_uint8
from .pyramid import _default_levels  # noqa: F401 (backend.segmentation imports it)
from .readers import open_slide
from .slide import (
    IMAGE_EXTENSIONS,
    MAX_MODEL_SCALE,
    MPP_MAX,
    MPP_MIN,
    SLIDE_EXTENSIONS,
    TIFF_EXTENSIONS,
    ZARR_EXTENSIONS,
    Slide,
    check_model_scale,
    is_zarr_path,
    validate_mpp,
)
from .writers import ZarrLayout, write_ome_zarr, write_tiff_pyramid
from .zarr_io import zarr_translation

__all__ = [
    "Slide",
    "open_slide",
    "validate_mpp",
    "check_model_scale",
    "to_rgb_uint8",
    "lazy_rgb_uint8",
    "write_ome_zarr",
    "write_tiff_pyramid",
    "zarr_translation",
    "ZarrLayout",
    "IMAGE_EXTENSIONS",
    "TIFF_EXTENSIONS",
    "ZARR_EXTENSIONS",
    "SLIDE_EXTENSIONS",
    "MAX_MODEL_SCALE",
    "MPP_MIN",
    "MPP_MAX",
    "is_zarr_path",
]
