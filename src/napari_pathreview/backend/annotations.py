"""Annotations drawn in the viewer -> training samples at a model's scale (numpy only).

A region someone annotated is taken to be annotated *completely*: the training crop is the bounding box
of the annotated cells plus a margin, so cells outside the annotated region are not taught as background.
"""

from __future__ import annotations

import numpy as np

from .compare import class_index
from .datasets import PointsSample
from .errors import InputError


def points_sample(
    image,
    yx,
    names,
    classes,
    mpp: float | None,
    model_mpp: float | None,
    name: str = "viewer",
    margin_um: float = 8.0,
    min_size: int = 256,
) -> PointsSample:
    """One annotated image region as a PointsSample at the model's pixel size.

    Args:
        image: (H, W, 3) array (numpy or dask; level 0 of a slide), any dtype ``to_rgb_uint8`` accepts.
        yx: (N, 2) annotated cell centres, (row, col) pixels of ``image``.
        names: (N,) class names; names not in ``classes`` (e.g. "unlabeled") count as cells without class.
        mpp: microns per pixel of ``image`` (None: assume ``model_mpp``); model_mpp: the model's.
        margin_um: context kept around the annotated cells' bounding box.
        min_size: the crop is at least this many model pixels on each side (within the image).
    """
    from skimage.transform import resize

    from .slides import to_rgb_uint8

    yx = np.asarray(yx, np.float64).reshape(-1, 2)
    if len(yx) == 0:
        raise InputError(f"{name}: no annotated cells; add points to the annotation layer first")
    if len(names) != len(yx):
        raise InputError(f"{name}: {len(yx)} points but {len(names)} class values")
    h, w = image.shape[:2]
    inside = (yx[:, 0] >= -0.5) & (yx[:, 0] < h - 0.5) & (yx[:, 1] >= -0.5) & (yx[:, 1] < w - 0.5)
    if not inside.any():
        raise InputError(f"{name}: no annotated cell lies on the image; are the layers aligned?")
    yx, names = yx[inside], [n for n, k in zip(names, inside) if k]
    mpp = float(mpp) if mpp else float(model_mpp or 1.0)
    scale = mpp / float(model_mpp or mpp)  # model pixels per image pixel
    margin = margin_um / mpp
    half_min = 0.5 * min_size / scale
    lo, hi = yx.min(0) - margin, yx.max(0) + margin
    centre = (lo + hi) / 2
    lo, hi = np.minimum(lo, centre - half_min), np.maximum(hi, centre + half_min)
    y0, x0 = int(max(0, np.floor(lo[0]))), int(max(0, np.floor(lo[1])))
    y1, x1 = int(min(h, np.ceil(hi[0]) + 1)), int(min(w, np.ceil(hi[1]) + 1))
    crop = to_rgb_uint8(np.asarray(image[y0:y1, x0:x1]))
    pts = yx - [y0, x0]
    if abs(scale - 1) > 0.02:
        th, tw = crop.shape[:2]
        mh, mw = max(1, int(round(th * scale))), max(1, int(round(tw * scale)))
        crop = resize(crop, (mh, mw), order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.uint8)
        pts = (pts + 0.5) * [mh / th, mw / tw] - 0.5
    labels = class_index(names, classes)
    return PointsSample(name, "train", crop, pts.astype(np.float32), labels)


def mask_sample(
    image,
    labels,
    mpp: float,
    data_mpp: float,
    name: str = "viewer",
    offset=(0, 0),
    margin_um: float = 4.0,
    max_pixels: float = 1e8,
):
    """Nuclei painted in a Labels array -> one ``segmentation.MaskSample`` at ``data_mpp``.

    The training region is the bounding box of the painted pixels plus ``margin_um`` (taken to be
    annotated completely: unpainted pixels in it are background).

    Args:
        image: (H, W, 3) array (numpy or dask; level 0 of a slide).
        labels: (h, w) integer array (numpy, dask or zarr): instance ids, 0 = background. One id over
            several separate blobs is a foreground-only (``binary``) mask: nothing to split instances with.
        mpp: µm per pixel of ``image`` (and ``labels``); data_mpp: the training samples' µm per pixel.
        offset: (row, col) of ``labels[0, 0]`` in ``image`` pixels (layers translated against each other).
    """
    from scipy import ndimage
    from skimage.transform import resize

    from .segmentation import MaskSample
    from .slides import to_rgb_uint8

    if len(labels.shape) != 2:
        raise InputError(f"{name}: labels of shape {tuple(labels.shape)}; paint nuclei in a 2-D Labels layer")
    if float(np.prod(labels.shape)) > max_pixels:
        raise InputError(
            f"{name}: a {labels.shape[0]}x{labels.shape[1]} Labels layer is too large to read; "
            "paint the nuclei in a Labels layer of a region (crop the image first)"
        )
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
        raise InputError(f"{name}: labels must be integers (instance ids), got {lab.dtype}")
    rows, cols = np.flatnonzero(lab.any(1)), np.flatnonzero(lab.any(0))
    if len(rows) == 0:
        raise InputError(f"{name}: no annotated nuclei; paint nuclei (one label per nucleus) first")
    h, w = image.shape[:2]
    oy, ox = int(round(offset[0])), int(round(offset[1]))
    m = margin_um / float(mpp)
    y0, x0 = int(max(0, rows[0] + oy - m)), int(max(0, cols[0] + ox - m))
    y1, x1 = int(min(h, rows[-1] + oy + 1 + m)), int(min(w, cols[-1] + ox + 1 + m))
    if y1 - y0 < 8 or x1 - x0 < 8:
        raise InputError(f"{name}: the painted nuclei do not lie on the image; are the layers aligned?")
    crop = to_rgb_uint8(np.asarray(image[y0:y1, x0:x1]), name)
    ly0, lx0 = max(0, y0 - oy), max(0, x0 - ox)
    ly1, lx1 = min(lab.shape[0], y1 - oy), min(lab.shape[1], x1 - ox)
    region = np.zeros((y1 - y0, x1 - x0), np.int32)
    region[ly0 + oy - y0 : ly1 + oy - y0, lx0 + ox - x0 : lx1 + ox - x0] = lab[ly0:ly1, lx0:lx1]
    ids = np.unique(region[region > 0])
    instances = not (len(ids) == 1 and ndimage.label(region > 0)[1] > 1)
    scale = float(mpp) / float(data_mpp)
    if abs(scale - 1) > 0.02:
        th, tw = max(8, int(round(crop.shape[0] * scale))), max(8, int(round(crop.shape[1] * scale)))
        crop = resize(crop, (th, tw), order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.uint8)
        region = resize(region, (th, tw), order=0, anti_aliasing=False, preserve_range=True).astype(np.int32)
    if not instances:
        region = (region > 0).astype(np.int32)
    return MaskSample(name, "train", crop, region, instances)


def labelled_region(
    image, label: str, mpp: float | None, model_mpp: float, name: str = "viewer", box=None, max_pixels: float = 16e6
):
    """An image (or a ``box`` of it) with one class -> ``classification.LabelledImage`` for training.

    Args:
        image: (H, W, C) array or a ``slides.Slide`` (its level 0 when ``box`` is given).
        mpp: µm per pixel of ``image`` (None: the model's training-data scale is assumed later).
        model_mpp: the classifier's µm per pixel, to refuse regions too large to hold at its scale.
        box: (y0, x0, y1, x1) in image pixels, clipped to the image; None: the whole image.
    """
    from pathlib import Path

    from .classification import LabelledImage
    from .slides import Slide

    shape = image.shape[:2] if not isinstance(image, Slide) else image.shape
    if box is not None:
        y0, x0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
        y1, x1 = min(shape[0], int(np.ceil(box[2]))), min(shape[1], int(np.ceil(box[3])))
        if y1 - y0 < 8 or x1 - x0 < 8:
            raise InputError(f"{name}: the region lies off the image or is under 8 pixels wide")
        level0 = image.levels[0] if isinstance(image, Slide) else image
        image, shape = np.asarray(level0[y0:y1, x0:x1]), (y1 - y0, x1 - x0)
    f = (float(mpp) / float(model_mpp)) if mpp else 1.0
    if shape[0] * shape[1] * f * f > max_pixels:
        raise InputError(
            f"{name}: {shape[0]}x{shape[1]} px is too large to train on as one image; draw "
            "rectangles over the regions to use in a Shapes layer with a 'class' feature"
        )
    return LabelledImage(name, Path(name), "train", [str(label)], image=image, mpp=mpp)
