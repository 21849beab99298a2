"""Where a whole-slide segmentation has work to do: strips and runs of bands that may hold tissue.

A slide is mostly glass. Tiles the coarse level shows as glass (``tissue.CoarseTissue.is_glass``) are
not read and get maps with no foreground (``predict.SegmenterPredictor``), so a map pixel can hold
foreground only inside a tile of the tile plan that is not glass, and a band whose window (its rows plus
the labelling halo) has no such pixel labels nothing. :class:`TissuePlan` finds those places from the
coarse mask and the tile plan alone, before any tile is read: vertical strips over the columns that may
hold foreground (:func:`tissue_strips`) and, in each strip, the runs of bands to label
(:func:`band_runs`). Every other band is bare glass: never read, predicted, blended, labelled or
written (its labels stay 0, the scratch zarr's fill value). All positions are level pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tiling import plan_tiles
from ..tissue import CoarseTissue
from .bands import strip_plan


def _union(intervals) -> list[tuple[int, int]]:
    """Sorted, merged ``[a, b)`` intervals (touching ones merge)."""
    out: list[list[int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


class TissuePlan:
    """The tiles ``(y0, y1, x0, x1)`` (level px) of a tile plan that are not glass for ``coarse``: the
    only places whose maps may hold foreground. ``tiles``: the plan (``tiling.plan_tiles``, the one the
    tile driver runs)."""

    def __init__(self, coarse: CoarseTissue, tiles):
        self.boxes = np.array([(t.y0, t.y1, t.x0, t.x1) for t in tiles if not coarse.is_glass(t)], np.int64).reshape(
            -1, 4
        )

    def columns(self) -> list[tuple[int, int]]:
        """Column intervals ``[x0, x1)`` that may hold foreground in some row."""
        return _union(zip(self.boxes[:, 2].tolist(), self.boxes[:, 3].tolist()))

    def rows(self, x0: int, x1: int) -> list[tuple[int, int]]:
        """Row intervals ``[y0, y1)`` that may hold foreground in columns ``[x0, x1)``."""
        b = self.boxes[(self.boxes[:, 2] < x1) & (self.boxes[:, 3] > x0)]
        return _union(zip(b[:, 0].tolist(), b[:, 1].tolist()))


def tissue_strips(width: int, strip: int, halo: int, plan: TissuePlan | None) -> list:
    """Vertical strips ``[(core, cols)]`` as :func:`.bands.strip_plan` gives them, over the columns
    that may hold foreground only (``plan`` None: over the whole ``width``). Cores end where no tile
    holds tissue, so an instance is never cut between two strips there; a tissue region wider than
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


def work_plan(coarse: CoarseTissue | None, shape: tuple[int, int], spec, band: int, strip: int, halo: int):
    """The :class:`WorkPlan` of a level of ``shape`` ``(H, W)`` px read in the tiles of ``spec`` (a
    ``tiling.TileSpec``), labelled in bands of ``band`` rows and strips of ``strip`` columns with ``halo``
    px of context."""
    tile, overlap = spec.tile, spec.overlap
    h, w = int(shape[0]), int(shape[1])
    plan = None if coarse is None else TissuePlan(coarse, plan_tiles((h, w), tile, overlap))
    strips = tissue_strips(w, strip, halo, plan)
    runs = [band_runs(h, band, halo, None if plan is None else plan.rows(*cols)) for _, cols in strips]
    return WorkPlan(coarse, strips, runs, h, halo)
