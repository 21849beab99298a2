"""Level of detail for very large cell and line layers (numpy only: no Qt, no napari, no torch).

napari draws every point of a Points layer and every line of a Vectors layer on every frame, whatever
the zoom: 10⁶ cells + 10⁶ attention lines take ~20 s per frame on software GL (see
``pathreview bench viewer``). A slide seen whole on a ~1000-pixel canvas cannot show 10⁶ cells as
points anyway (one screen pixel holds dozens of them), so this module decides, for the current view,
what is worth drawing:

- **cells, zoomed out** (the view holds more than ``budget`` cells, or more than one cell per
  ``screen_px_per_cell`` screen pixels): a *density image*: for every bin of the slide the colour of
  its most frequent class (the class colours of the layer) with an opacity that grows with the number
  of cells in the bin; empty bins are transparent. It is computed once as a small pyramid (level 0 at
  most ``max_raster`` bins per side, each level half the previous one, down to ~256) so that zooming
  only picks a level (:meth:`DensityPyramid.level_for`, or napari's multiscale machinery).
- **cells, zoomed in**: only the cells inside the view plus a margin, as points, at full detail.
- **lines**: those with an end in the view (plus margin); where more than ``budget`` of them, the
  ``budget`` of highest weight; where a typical line would be shorter than ``min_line_px`` screen
  pixels (zoomed far out), none.

What stays true of the data (the policy the viewer controller follows, see
``widgets/lod_control.py``): the user's layer is never truncated. Its data, features table, selection,
colours and ``shown`` mask keep all N cells; it stays the layer that widgets, the features table, the
writers and editing act on. Only what is *drawn* changes: the full layer's own markers are not drawn
and two display-only layers draw the density image or the in-view subset, recomputed from the full
layer whenever the view, its data, its colours or its ``shown`` mask change. Cells hidden through
``shown`` (a score filter, "only changed") are left out of both the density image and the in-view
points.

Coordinates are the layer's data pixels (row, col); a view is the axis-aligned data rectangle that
the canvas shows plus the canvas size in screen pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_POINT_BUDGET = 50_000
DEFAULT_LINE_BUDGET = 20_000


@dataclass(frozen=True)
class View:
    """The visible data rectangle [y0, y1) x [x0, x1) (layer data pixels) and the canvas size (screen px)."""

    y0: float
    x0: float
    y1: float
    x1: float
    height: int = 600
    width: int = 800

    @property
    def data_per_screen_px(self) -> float:
        """Data pixels per screen pixel (the larger of the two axes)."""
        return max((self.y1 - self.y0) / max(self.height, 1), (self.x1 - self.x0) / max(self.width, 1))

    @property
    def screen_area(self) -> float:
        return float(max(self.height, 1) * max(self.width, 1))

    def expanded(self, margin: float) -> View:
        """The rectangle grown by ``margin`` of its size on every side (same canvas)."""
        dy, dx = (self.y1 - self.y0) * margin, (self.x1 - self.x0) * margin
        return View(self.y0 - dy, self.x0 - dx, self.y1 + dy, self.x1 + dx, self.height, self.width)

    def contains(self, other: View) -> bool:
        return self.y0 <= other.y0 and self.x0 <= other.x0 and self.y1 >= other.y1 and self.x1 >= other.x1


def in_view(yx: np.ndarray, view: View) -> np.ndarray:
    """(N,) bool: which of the (N, 2) points lie in the view's rectangle."""
    yx = np.asarray(yx)
    y, x = yx[:, 0], yx[:, 1]
    return (y >= view.y0) & (y < view.y1) & (x >= view.x0) & (x < view.x1)


def palette_codes(colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3|4) float RGB(A) in [0, 1] -> (codes (N,) int64, palette (K, 4) float32) of the distinct colours."""
    c = np.asarray(colors, np.float32).reshape(len(colors), -1)
    if c.shape[1] == 3:
        c = np.concatenate([c, np.ones((len(c), 1), np.float32)], 1)
    q = np.clip(np.rint(c[:, :4] * 255), 0, 255).astype(np.uint32)
    packed = (q[:, 0] << 24) | (q[:, 1] << 16) | (q[:, 2] << 8) | q[:, 3]
    uniq, codes = np.unique(packed, return_inverse=True)
    pal = np.stack([(uniq >> s) & 255 for s in (24, 16, 8, 0)], 1).astype(np.float32) / 255.0
    return codes.reshape(-1).astype(np.int64), pal


@dataclass
class DensityPyramid:
    """RGBA uint8 density images of the cells: ``levels[k]`` has bins of ``bin * 2**k`` data pixels;
    bin (i, j) of level k covers data rows [origin_y + i b_k, origin_y + (i + 1) b_k) (same for columns)."""

    levels: list
    bin: float
    origin: tuple
    counts: np.ndarray  # level-0 cell counts (H, W), int32

    def bin_of(self, k: int) -> float:
        return self.bin * 2**k

    def level_for(self, view: View) -> int:
        """The coarsest level whose bins are still no larger than ~2 screen pixels in this view."""
        k = int(np.floor(np.log2(max(2 * view.data_per_screen_px / self.bin, 1.0))))
        return int(min(max(k, 0), len(self.levels) - 1))

    def image_scale_translate(self, k: int = 0) -> tuple[tuple, tuple]:
        """Scale and translate (in the points' data pixels) that put level k's bins where their cells are
        (napari puts pixel centres at ``translate + i * scale``)."""
        b = self.bin_of(k)
        return (b, b), (self.origin[0] + b / 2.0, self.origin[1] + b / 2.0)


def density_pyramid(
    yx: np.ndarray,
    codes: np.ndarray,
    palette: np.ndarray,
    *,
    bin: float | None = None,
    max_raster: int = 2048,
    min_side: int = 256,
    extent=None,
    min_alpha: float = 0.3,
    max_classes: int = 16,
) -> DensityPyramid:
    """Class-colour density pyramid of N cells.

    yx: (N, 2) data pixels; codes: (N,) index into ``palette`` (K, 4) float RGBA of each cell's class
    colour. ``extent`` ((y0, x0), (y1, x1)) defaults to the cells' bounding box (cells outside it are
    left out, those on its far edge fall in the last bin); ``bin`` (data pixels
    per level-0 bin) defaults to the smallest that keeps level 0 within ``max_raster`` bins a side.
    Each bin takes the colour of its most frequent class (the mean colour of its cells where the cells
    have more than ``max_classes`` distinct colours); its alpha goes from ``min_alpha`` (one cell) to 1
    (the 99th percentile of the non-empty bins' counts at that level, or more).
    """
    yx = np.asarray(yx, np.float64).reshape(-1, 2)
    codes = np.asarray(codes, np.int64).reshape(-1)
    palette = np.asarray(palette, np.float32).reshape(-1, 4) if len(palette) else np.ones((1, 4), np.float32)
    if extent is None:
        lo, hi = (yx.min(0), yx.max(0)) if len(yx) else (np.zeros(2), np.ones(2))
    else:
        lo, hi = np.asarray(extent[0], np.float64), np.asarray(extent[1], np.float64)
    span = np.maximum(hi - lo, 1.0)
    if bin is None:
        bin = float(max(1.0, np.ceil(float(span.max()) / max_raster)))
    shape0 = np.maximum(np.ceil(span / bin).astype(np.int64), 1)
    keep = ((yx >= lo) & (yx <= hi)).all(1)  # the extent's far edge falls in the last bin
    rel = np.minimum(np.floor((yx[keep] - lo) / bin).astype(np.int64), shape0 - 1)
    codes = codes[keep]
    # levels 1..top halve exactly: level 0 is padded to a multiple of 2**top bins
    top = int(max(0, np.ceil(np.log2(max(int(shape0.max()), 1) / max(min_side, 1)))))
    shape0 = -(-shape0 // 2**top) * 2**top
    h0, w0 = int(shape0[0]), int(shape0[1])
    flat0 = rel[:, 0] * w0 + rel[:, 1]
    ucodes, local = np.unique(codes, return_inverse=True)
    many = len(ucodes) > max_classes
    if many:  # continuous colouring: per-bin mean colour of the cells
        per = np.stack([np.bincount(flat0, weights=palette[codes, ch], minlength=h0 * w0) for ch in range(3)])
        per = per.reshape(3, h0, w0)
    else:  # one count image per distinct colour, one bincount pass
        per = np.bincount(local.reshape(-1) * (h0 * w0) + flat0, minlength=len(ucodes) * h0 * w0)
        per = per.reshape(len(ucodes), h0, w0).astype(np.int32)
    total = np.bincount(flat0, minlength=h0 * w0).reshape(h0, w0).astype(np.int32)
    counts0, levels = total, []
    for k in range(top + 1):
        if k:
            total = total.reshape(total.shape[0] // 2, 2, total.shape[1] // 2, 2).sum((1, 3))
            per = per.reshape(per.shape[0], per.shape[1] // 2, 2, per.shape[2] // 2, 2).sum((2, 4))
        rgba = np.zeros(total.shape + (4,), np.uint8)
        nz = total > 0
        if nz.any():
            if many:
                rgb = per / np.maximum(total, 1)[None]
                rgba[..., :3] = np.rint(np.moveaxis(rgb, 0, -1) * 255).astype(np.uint8)
            else:
                rgba[..., :3] = np.rint(palette[ucodes[per.argmax(0)], :3] * 255).astype(np.uint8)
            sat = max(float(np.percentile(total[nz], 99)), 1.0)
            a = min_alpha + (1 - min_alpha) * np.minimum(total / sat, 1.0)
            rgba[..., 3] = np.where(nz, np.rint(a * 255), 0).astype(np.uint8)
        levels.append(rgba)
    return DensityPyramid(levels, float(bin), (float(lo[0]), float(lo[1])), counts0)


@dataclass
class PointsDecision:
    """``mode`` "density" (draw the density image) or "points" (draw ``indices``: cells in
    ``covered``, the view plus margin); ``n_in_view``: shown cells inside the view itself."""

    mode: str
    n_in_view: int
    indices: np.ndarray | None = None
    covered: View | None = None
    level: int | None = None


class PointsLOD:
    """What to draw of N cells for a view.

    yx: (N, 2) data pixels; colors: (N, 3|4) RGBA floats (the class colours; only used for the density
    image); shown: (N,) bool, cells filtered out by the user (never drawn, not in the density).
    """

    def __init__(
        self,
        yx,
        colors=None,
        shown=None,
        *,
        budget: int = DEFAULT_POINT_BUDGET,
        screen_px_per_cell: float = 64.0,
        margin: float = 0.25,
        max_raster: int = 2048,
    ):
        self.yx = np.asarray(yx, np.float32).reshape(-1, 2)
        n = len(self.yx)
        self.shown = np.ones(n, bool) if shown is None else np.broadcast_to(np.asarray(shown, bool), (n,))
        self.colors = np.ones((n, 4), np.float32) if colors is None else np.asarray(colors, np.float32)
        self.budget, self.screen_px_per_cell = int(budget), float(screen_px_per_cell)
        self.margin, self.max_raster = float(margin), int(max_raster)
        self._pyramid = None

    def __len__(self) -> int:
        return len(self.yx)

    @property
    def has_pyramid(self) -> bool:
        return self._pyramid is not None

    @property
    def pyramid(self) -> DensityPyramid:
        """The density pyramid of the shown cells (computed on first use, then kept)."""
        if self._pyramid is None:
            codes, pal = palette_codes(self.colors) if len(self.colors) else (np.zeros(0, np.int64), np.ones((1, 4)))
            ext = (self.yx.min(0), self.yx.max(0)) if len(self.yx) else None
            self._pyramid = density_pyramid(
                self.yx[self.shown],
                codes[self.shown] if len(codes) else codes,
                pal,
                max_raster=self.max_raster,
                extent=ext,
            )
        return self._pyramid

    def limit(self, view: View) -> int:
        """Most cells drawn as points in this view: the budget, or one per ``screen_px_per_cell`` screen px."""
        return int(min(self.budget, view.screen_area / self.screen_px_per_cell))

    def decide(self, view: View) -> PointsDecision:
        inside = in_view(self.yx, view) & self.shown
        n = int(inside.sum())
        if n > self.limit(view):
            return PointsDecision("density", n, level=self.pyramid.level_for(view))
        covered = view.expanded(self.margin)
        idx = np.flatnonzero(in_view(self.yx, covered) & self.shown)
        if len(idx) > 2 * max(self.limit(view), 1):  # dense surroundings: the view only
            covered, idx = view, np.flatnonzero(inside)
        return PointsDecision("points", n, indices=idx, covered=covered)


@dataclass
class LinesDecision:
    """``mode``: "hidden" (lines too short to see), "all" (every line with an end in ``covered``) or
    "top" (the ``budget`` of highest weight among them). ``indices`` into the full line list."""

    mode: str
    n_in_view: int
    indices: np.ndarray
    covered: View | None = None


class LinesLOD:
    """What to draw of E lines (starts (E, 2), ends (E, 2), data pixels; weights (E,), larger first)."""

    def __init__(
        self,
        starts,
        ends,
        weights=None,
        *,
        budget: int = DEFAULT_LINE_BUDGET,
        margin: float = 0.25,
        min_line_px: float = 1.5,
    ):
        self.starts = np.asarray(starts, np.float32).reshape(-1, 2)
        self.ends = np.asarray(ends, np.float32).reshape(-1, 2)
        e = len(self.starts)
        self.weights = np.zeros(e, np.float32) if weights is None else np.asarray(weights, np.float32).reshape(-1)
        self.budget, self.margin, self.min_line_px = int(budget), float(margin), float(min_line_px)
        lengths = np.linalg.norm(self.ends - self.starts, axis=1) if e else np.zeros(0)
        self.typical_length = float(np.median(lengths)) if e else 0.0

    def __len__(self) -> int:
        return len(self.starts)

    def decide(self, view: View) -> LinesDecision:
        if len(self) == 0 or self.typical_length / max(view.data_per_screen_px, 1e-12) < self.min_line_px:
            return LinesDecision("hidden", 0, np.zeros(0, np.int64))
        covered = view.expanded(self.margin)
        idx = np.flatnonzero(in_view(self.starts, covered) | in_view(self.ends, covered))
        if len(idx) <= self.budget:
            return LinesDecision("all", len(idx), idx, covered)
        top = idx[np.argpartition(-self.weights[idx], self.budget - 1)[: self.budget]]
        return LinesDecision("top", len(idx), np.sort(top), covered)
