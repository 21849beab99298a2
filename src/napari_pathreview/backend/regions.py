"""Regions of interest: run a pipeline on the part of a slide a user outlined (rectangles, polygons).

Polygons are ``(N, 2)`` arrays of (row, col) vertices in **level-0 pixels** of the slide. A run reads the
bounding box of all polygons (clipped to the slide) and keeps what falls inside a polygon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass
class Region:
    """The polygons of a region and their bounding box ``(y0, y1, x0, x1)`` in level-0 pixels (end exclusive)."""

    polygons: list[np.ndarray]
    box: tuple[int, int, int, int]

    @property
    def offset(self) -> np.ndarray:
        """(row, col) of the box's top-left pixel: add it to results computed on the crop."""
        return np.array([self.box[0], self.box[2]], np.float32)

    def contains(self, yx: np.ndarray) -> np.ndarray:
        """(N,) bool: which level-0 points ``yx`` (N, 2) lie inside any polygon (edges count as inside)."""
        from skimage.measure import points_in_poly

        yx = np.asarray(yx, np.float64).reshape(-1, 2)
        inside = np.zeros(len(yx), bool)
        for poly in self.polygons:
            inside |= points_in_poly(yx, poly)
        return inside

    def mask(self) -> np.ndarray:
        """(h, w) bool over the box: pixels whose centre lies inside a polygon."""
        from skimage.draw import polygon as fill

        y0, y1, x0, x1 = self.box
        out = np.zeros((y1 - y0, x1 - x0), bool)
        for poly in self.polygons:
            rr, cc = fill(poly[:, 0] - y0, poly[:, 1] - x0, out.shape)
            out[rr, cc] = True
        return out


def build_region(polygons, shape_yx: tuple[int, int], name: str = "region") -> Region:
    """A :class:`Region` from polygons in level-0 pixels of a slide of ``shape_yx``; InputError when no
    polygon has three vertices or none overlaps the slide."""
    polys = [np.asarray(p, np.float64).reshape(-1, 2) for p in polygons]
    polys = [p for p in polys if len(p) >= 3 and np.isfinite(p).all()]
    if not polys:
        raise InputError(f"{name}: draw a rectangle or polygon (a line or a point outlines no region)")
    allv = np.concatenate(polys)
    h, w = shape_yx
    y0, x0 = np.floor(allv.min(0)).astype(int)
    y1, x1 = np.ceil(allv.max(0)).astype(int) + 1
    y0, x0, y1, x1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
    if y1 - y0 < 2 or x1 - x0 < 2:
        raise InputError(f"{name}: the region lies outside the image; draw it over the tissue")
    return Region(polys, (int(y0), int(y1), int(x0), int(x1)))


def crop_level0(levels, region: Region):
    """The region's box of level 0 of ``levels`` (a numpy, dask or zarr array; nothing else is read)."""
    y0, y1, x0, x1 = region.box
    return levels[0][y0:y1, x0:x1]


def cells_inside(cells, region: Region):
    """Cells detected on the region's box (pixels of the crop) -> those inside its shapes, in level-0 pixels."""
    cells.yx = cells.yx + region.offset
    return cells.select(region.contains(cells.yx))


def segmentation_inside(res, region: Region):
    """A segmentation of the region's box with the nuclei whose centroid lies outside its shapes removed
    (labels set to 0, table rows dropped) and the table's centroids moved to level-0 pixels of the slide."""
    table = {k: np.asarray(v) for k, v in res.table.items()}
    yx = np.stack([table["centroid_y"], table["centroid_x"]], 1) + region.offset
    keep = region.contains(yx) if len(yx) else np.zeros(0, bool)
    drop = table["label"][~keep]
    if len(drop):
        res.labels[np.isin(res.labels, drop)] = 0
    table["centroid_y"], table["centroid_x"] = yx[:, 0], yx[:, 1]
    res.table = {k: v[keep] for k, v in table.items()}
    return res


# ---- rectangles of the command line (``--region X,Y,W,H``) and views of a slide ----

# context read around a region by detection / segmentation, µm each side (about the detector's tile overlap;
# on 144 cells of three regions, 32 µm lost 1 cell the whole slide found, 64 µm none: docs/reliability.md)
REGION_CONTEXT_UM = 64.0


def parse_region(text: str) -> tuple[int, int, int, int]:
    """``"X,Y,W,H"`` (whole level-0 pixels: the top-left column and row, the width and height) -> a tuple;
    InputError naming the text and the fix when it is not four whole numbers or the size is not positive."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise InputError(
            f"--region {text!r}: give X,Y,W,H as four whole numbers of level-0 pixels (left, top, width, height; "
            "e.g. 2048,4096,1024,1024)"
        ) from None
    if x < 0 or y < 0:
        raise InputError(f"--region {text}: X and Y (the top-left corner) must be 0 or more")
    if w <= 0 or h <= 0:
        raise InputError(f"--region {text}: width and height must be positive (e.g. 1024,1024)")
    return x, y, w, h


def as_xywh(region) -> tuple[int, int, int, int]:
    """A region given as text ``"X,Y,W,H"`` or as four numbers -> ``(x, y, w, h)`` (checked as ``parse_region``)."""
    return parse_region(region if isinstance(region, str) else ",".join(str(v) for v in region))


def region_box(region, shape_yx, name: str = "image") -> tuple[int, int, int, int]:
    """``region`` (x, y, w, h) in level-0 pixels -> its box ``(y0, y1, x0, x1)`` (end exclusive), refused
    (InputError) unless it lies inside a slide of level-0 ``shape_yx``."""
    x, y, w, h = as_xywh(region)
    hh, ww = (int(s) for s in shape_yx)
    if x + w > ww or y + h > hh:
        raise InputError(
            f"{name}: --region {x},{y},{w},{h} runs past the image ({ww} x {hh} px, width x height); give X,Y,W,H "
            f"with X + W <= {ww} and Y + H <= {hh}"
        )
    return y, y + h, x, x + w


def check_level(slide, level: int | None, name: str = "image") -> None:
    """Refuse (InputError) a pyramid ``level`` the slide does not have."""
    n = len(slide.levels)
    if level is not None and not 0 <= int(level) < n:
        raise InputError(
            f"{name}: --level {level} does not exist; this image has {n} level{'s' * (n > 1)} "
            f"(give --level from 0 to {n - 1}, or leave it out)"
        )


def inside_box(yx: np.ndarray, box) -> np.ndarray:
    """(N,) bool: which points ``yx`` (N, 2, level-0 pixels) lie in the box ``(y0, y1, x0, x1)`` (end exclusive)."""
    y0, y1, x0, x1 = box
    yx = np.asarray(yx, np.float64).reshape(-1, 2)
    return (yx[:, 0] >= y0) & (yx[:, 0] < y1) & (yx[:, 1] >= x0) & (yx[:, 1] < x1)


def crop_slide(slide, box, margin_px: int = 0):
    """A Slide of the box ``(y0, y1, x0, x1)`` (level-0 pixels) of every level of ``slide`` (lazy: nothing
    is read) -> ``(crop, (oy, ox))``, the crop's origin in level-0 pixels of ``slide``.

    The box is widened by ``margin_px`` each side (cut to the slide) and then outward to multiples of the
    coarsest level's downsample, so each level's crop starts on one of its own pixels and the levels stay
    aligned. Points found on the crop: add the origin."""
    from dataclasses import replace

    hh, ww = slide.shape
    downs = [max(1, int(round(d))) for d in slide.downsamples]
    g = max(downs)
    y0, y1, x0, x1 = box
    y0, x0 = max(0, (y0 - margin_px) // g * g), max(0, (x0 - margin_px) // g * g)
    y1, x1 = min(hh, -(-(y1 + margin_px) // g) * g), min(ww, -(-(x1 + margin_px) // g) * g)
    levels = []
    for lev, d in zip(slide.levels, downs):
        ly, lx = (int(s) for s in lev.shape[:2])
        levels.append(lev[y0 // d : min(ly, -(-y1 // d)), x0 // d : min(lx, -(-x1 // d))])
    return replace(slide, levels=levels), (int(y0), int(x0))


def from_level(slide, level: int):
    """A Slide whose level 0 is ``slide``'s pyramid level ``level`` (mpp scaled by its downsample)."""
    from dataclasses import replace

    if not level:
        return slide
    d = slide.downsamples[level]
    return replace(slide, levels=list(slide.levels[level:]), mpp=None if slide.mpp is None else slide.mpp * d)
