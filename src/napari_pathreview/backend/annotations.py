"""Annotations drawn in the viewer -> training samples at a model's scale (numpy only).

A region someone annotated is taken to be annotated *completely*: the training crop is the bounding box
of the annotated cells plus a margin, so cells outside the annotated region are not taught as background.
"""
from __future__ import annotations

import numpy as np

from .compare import class_index
from .datasets import PointsSample
from .errors import InputError


def points_sample(image, yx, names, classes, mpp: float | None, model_mpp: float | None,
                  name: str = "viewer", margin_um: float = 8.0, min_size: int = 256) -> PointsSample:
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
