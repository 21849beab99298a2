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
