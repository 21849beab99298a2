"""What a pipeline reads of a slide when given ``--region`` / ``--level``, and its results placed back on
the whole slide (level-0 pixels)."""

from __future__ import annotations

import math

import numpy as np

from ..regions import REGION_CONTEXT_UM, as_xywh, check_level, crop_slide, inside_box, region_box
from ..slides import Slide


def region_view(image, region, level, mpp: float | None, name: str, context_um: float = REGION_CONTEXT_UM):
    """``image`` (an (H, W[, C]) array or a Slide) as a pipeline reads it -> ``(view, origin_yx, box)``.

    ``region``: (x, y, w, h) in level-0 pixels, or None for the whole image; ``level``: a pyramid level
    (checked to exist). With a region the view is a lazy crop of every level around it, with
    ``context_um`` µm of context each side (``mpp``: level-0 µm per pixel when the slide does not say;
    64 px when neither does) widened to the pyramid's grid (``regions.crop_slide``); ``origin_yx`` is the
    crop's top-left in level-0 pixels of ``image`` and ``box`` the region's ``(y0, y1, x0, x1)`` (None
    without a region). Refused (InputError) when the region runs past the image or the level does not exist.
    """
    if region is None and level is None:
        return image, (0, 0), None
    slide = image if isinstance(image, Slide) else Slide([image], mpp, "", name)
    check_level(slide, level, name)
    if region is None:
        return slide, (0, 0), None
    box = region_box(region, slide.shape, name)
    m = mpp or slide.mpp
    margin = int(math.ceil(context_um / m)) if context_um and m else (64 if context_um else 0)
    crop, origin = crop_slide(slide, box, margin)
    return crop, origin, box


def points_on_slide(pts, origin_yx, box):
    """CellPoints found on a view (level-0 pixels of the crop) -> those inside the region's ``box``, in
    level-0 pixels of the whole slide (unchanged without a box)."""
    if box is None:
        return pts
    pts.yx = pts.yx + np.asarray(origin_yx, pts.yx.dtype)
    return pts.select(inside_box(pts.yx, box))


def view_key(region, level) -> dict:
    """The part of a batch job's key a region / level adds (nothing without them, so the keys of earlier
    whole-slide jobs stay unchanged)."""
    key = {} if region is None else {"region": list(as_xywh(region))}
    return key if level is None else {**key, "level": int(level)}


def place_store(store, origin_yx, region, name: str) -> None:
    """Place a labels store segmented from a crop (``segmentation.segment_to_zarr`` of a ``region_view``) on
    the whole slide: every level's ``coordinateTransformations`` gain a ``translation`` of the crop's
    origin (in the store's scale units: µm when its mpp is known, else pixels of the level read), the
    ``instances.csv`` centroids (level-0 pixels) move by the origin, and ``pathreview.json`` records
    ``origin_yx`` (level-0 pixels of the slide) and ``region`` (x, y, w, h asked); ``name``: the
    multiscale's name. Each file is replaced atomically; labels keep their crop's pixel grid."""
    import csv
    import json
    from pathlib import Path

    from ..atomic import atomic_path

    store = Path(store)
    meta = json.loads((store / "pathreview.json").read_text())
    attrs = json.loads((store / ".zattrs").read_text())
    down, ms = float(meta.get("downsample") or 1.0), attrs["multiscales"][0]
    ms["name"] = name
    scale0 = ms["datasets"][0]["coordinateTransformations"][0]["scale"][-2:]
    shift = [round(float(origin_yx[k]) * float(scale0[k]) / down, 9) for k in (0, 1)]
    for ds in ms["datasets"]:
        tr = [t for t in ds["coordinateTransformations"] if t.get("type") != "translation"]
        n = len(tr[0]["scale"])
        ds["coordinateTransformations"] = [*tr, {"type": "translation", "translation": [0.0] * (n - 2) + shift}]
    with open(store / "instances.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    iy, ix = rows[0].index("centroid_y"), rows[0].index("centroid_x")
    for r in rows[1:]:
        r[iy], r[ix] = f"{float(r[iy]) + origin_yx[0]:.6g}", f"{float(r[ix]) + origin_yx[1]:.6g}"
    meta |= {"origin_yx": [int(origin_yx[0]), int(origin_yx[1])], "region": [int(v) for v in region]}
    for name, text in ((".zattrs", json.dumps(attrs, indent=2)), ("pathreview.json", json.dumps(meta, indent=2))):
        with atomic_path(store / name, overwrite=True) as tmp:
            Path(tmp).write_text(text)
    with atomic_path(store / "instances.csv", overwrite=True) as tmp, open(tmp, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
