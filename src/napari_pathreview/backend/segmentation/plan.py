"""Where a whole-slide segmentation has work to do: strips and runs of bands that may hold tissue.

A slide is mostly glass. Tiles the coarse level shows as glass (``tissue.CoarseTissue``) are not read
and get maps with no foreground (``predict.SegmenterPredictor``), so a map pixel can hold foreground only
within one tile of a coarse tissue cell, and a band whose window (its rows plus the labelling halo)
has no such pixel labels nothing. :class:`TissuePlan` finds those places from the coarse mask alone,
before any tile is read: vertical strips over the columns that may hold foreground
(:func:`tissue_strips`) and, in each strip, the runs of bands to label (:func:`band_runs`). Every
other band is bare glass: never read, predicted, blended, labelled or written (its labels stay 0, the
scratch zarr's fill value). Pixels vs cells: the plan works on coarse cells of ``factor`` level pixels
and answers in level pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..tissue import CoarseTissue
from .bands import strip_plan


class TissuePlan:
    """The coarse cells ``(h, w)`` of a level where maps may hold foreground: the coarse tissue mask
    dilated by the reach of one tile (``reach`` level px, the tile size) plus one cell of rounding.
    ``factor``: level pixels per coarse cell; ``shape``: ``(H, W)`` of the level, pixels."""

    def __init__(self, coarse: CoarseTissue, reach: int, shape: tuple[int, int]):
        from scipy import ndimage

        self.factor, self.shape = float(coarse.factor), (int(shape[0]), int(shape[1]))
        d = int(math.ceil(reach / self.factor)) + 1
        self.busy = ndimage.maximum_filter(coarse.mask, size=2 * d + 1, mode="constant", cval=False)

    def _px(self, cells: np.ndarray, size: int) -> list[tuple[int, int]]:
        """Level-pixel intervals ``[a, b)`` of the runs of True in ``cells`` (1-D, coarse cells)."""
        edges = np.flatnonzero(np.diff(np.concatenate([[False], cells, [False]]).astype(np.int8)))
        out = []
        for i, j in zip(edges[::2], edges[1::2]):
            a, b = max(0, int(math.floor(i * self.factor))), min(size, int(math.ceil(j * self.factor)))
            if a < b:
                out.append((a, b))
        return out

    def columns(self) -> list[tuple[int, int]]:
        """Column intervals ``[x0, x1)`` (level px) that may hold foreground in some row."""
        return self._px(self.busy.any(0), self.shape[1])

    def rows(self, x0: int, x1: int) -> list[tuple[int, int]]:
        """Row intervals ``[y0, y1)`` (level px) that may hold foreground in columns ``[x0, x1)``."""
        c0, c1 = int(x0 // self.factor), int(-(-x1 // self.factor))
        return self._px(self.busy[:, c0:c1].any(1), self.shape[0])


def tissue_strips(width: int, strip: int, halo: int, plan: TissuePlan | None) -> list:
    """Vertical strips ``[(core, cols)]`` as :func:`.bands.strip_plan` gives them, over the columns
    that may hold foreground only (``plan`` None: over the whole ``width``). Cores never straddle glass
    wider than a tile, so an instance is never cut between two strips there; a tissue region wider than
    ``strip`` is cut every ``strip`` columns as before."""
    if plan is None:
        return strip_plan(width, strip, halo)
    strip = max(1, int(strip))
    out = []
    for a, b in plan.columns():
        edges = list(range(a, b, strip)) + [b]
        out += [((p, q), (max(0, p - halo), min(width, q + halo))) for p, q in zip(edges[:-1], edges[1:])]
    return out


def band_runs(height: int, band: int, halo: int, rows: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """Runs ``[(start, stop)]`` of consecutive band cuts (rows, multiples of ``band`` but the last) whose
    labelling window ``[cut start - halo, cut end + halo)`` meets one of ``rows`` (row intervals that
    may hold foreground; None: every row). The cuts are those of a run over every row, so the labels
    of a run are those that run would write; a cut outside every run would write none."""
    band = max(1, int(band))
    n = -(-height // band)
    if rows is None:
        return [(0, height)] if height > 0 else []
    need = np.zeros(n, bool)
    for y0, y1 in rows:  # cut c's window: [c * band - halo, (c + 1) * band + halo)
        need[max(0, (y0 - halo) // band) : min(n, -(-(y1 + halo) // band))] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[False], need, [False]]).astype(np.int8)))
    return [(int(i) * band, min(height, int(j) * band)) for i, j in zip(edges[::2], edges[1::2])]


@dataclass
class WorkPlan:
    """A whole-slide segmentation's work: ``strips`` ``[(core, cols)]`` (:func:`tissue_strips`) and, per
    strip, its ``runs`` of band rows ``[(start, stop)]`` (:func:`band_runs`); ``coarse``: the slide's
    tissue map (None: no coarse level or glass not skipped, then one run over every row of every strip);
    ``halo``: rows of context a cut writes below itself."""

    coarse: CoarseTissue | None
    strips: list
    runs: list
    height: int
    halo: int

    def label_boxes(self) -> list[tuple[int, int, int, int]] | None:
        """Level-pixel boxes ``(y0, y1, x0, x1)`` outside which no label is ever written (None: anywhere):
        each run's rows, plus the halo a cut writes below it, over its strip's columns."""
        if self.coarse is None:
            return None
        h = self.height
        return [(a, min(h, b + self.halo), *cols) for (_, cols), rs in zip(self.strips, self.runs) for a, b in rs]


def work_plan(coarse: CoarseTissue | None, shape: tuple[int, int], tile: int, band: int, strip: int, halo: int):
    """The :class:`WorkPlan` of a level of ``shape`` ``(H, W)`` px read in tiles of ``tile`` px, labelled
    in bands of ``band`` rows and strips of ``strip`` columns with ``halo`` px of context."""
    h, w = int(shape[0]), int(shape[1])
    plan = None if coarse is None else TissuePlan(coarse, tile, (h, w))
    strips = tissue_strips(w, strip, halo, plan)
    runs = [band_runs(h, band, halo, None if plan is None else plan.rows(*cols)) for _, cols in strips]
    return WorkPlan(coarse, strips, runs, h, halo)
