"""Instance labelling of a slide band by band and strip by strip, with bounded memory.

``tiling.predict_tiled_to_zarr`` streams blended maps in row order into a :class:`BandLabeller`, which
keeps ``halo`` rows of context, so memory is bounded by a band of rows whatever the slide height;
vertical strips (:func:`strip_plan`) bound it whatever the width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .infer import LevelInput
from .instances import instance_table, postprocess_maps
from .params import SegmentParams


@dataclass(frozen=True)
class Strip:
    """Vertical strip ``index`` of a plan: ``cols = (x0, x1)`` the columns of the maps it receives,
    ``core = (c0, c1)`` the columns whose instances it owns (an instance's leftmost column); None: all."""

    index: int = 0
    core: tuple[int, int] | None = None
    cols: tuple[int, int] | None = None


def strip_plan(width: int, strip: int, halo: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Vertical strips of an image ``width`` px wide: ``[(core, cols)]`` where ``core = (c0, c1)`` are the
    columns a strip owns (``strip`` columns each, the last one what is left) and ``cols`` the core plus
    ``halo`` columns of context each side, clipped to the image. No strip is wider than ``strip + 2 *
    halo``, whatever the width, so the memory of a band does not grow with the slide."""
    strip = max(1, int(strip))
    edges = list(range(0, width, strip)) + [width]
    return [((a, b), (max(0, a - halo), min(width, b + halo))) for a, b in zip(edges[:-1], edges[1:])]


def strip_progress(progress, k: int, n: int):
    """``progress`` of strip ``k`` of ``n`` as a share of the whole run."""
    if progress is None or n == 1:
        return progress
    return lambda i, m, msg="": progress(k * m + i, n * m, f"strip {k + 1}/{n}: {msg}")


class RunDone(Exception):
    """Raised by :meth:`BandLabeller.__setitem__` when the rows of its run are labelled (the maps of the
    rows below are not needed): ends ``tiling.predict_tiled_to_zarr`` early."""


class BandLabeller:
    """A slice-assignable sink for ``tiling.predict_tiled_to_zarr``: it receives the blended maps
    (K + 2, k, W) band by band, in row order, and writes instance labels into ``out`` (H, W).

    ``src``: the level segmented (its shape, µm per pixel and downsample); ``n_fg``: foreground channels
    of the maps. Rows are cut at multiples of ``band``; the rows ``[final, cut)`` are labelled on the
    window ``[final - halo, cut + halo)`` of maps, whatever sizes the maps arrive in, so the labels
    depend only on the maps (a resumed run gives the same labels as an uninterrupted one). An instance
    belongs to the window holding its first row and is written whole; pixels already written by an
    earlier window are never overwritten. Memory: about ``(band + 2 * halo) * W`` map values. With
    ``band >= H`` this is exactly ``label_instances`` on the whole image.

    ``strip``: the vertical strip of the image it receives and the columns it owns (:class:`Strip`), so
    strips side by side, each with ``halo`` columns of context, label the image once (see
    :func:`strip_plan`). ``on_cut(labeller, table)`` runs after each cut is written (``table``: the
    cut's new instances or None), for checkpoints; :meth:`resume_at` restores a labeller from one.
    """

    def __init__(
        self,
        out,
        src: LevelInput,
        n_fg: int,
        params: SegmentParams,
        band: int,
        halo: int,
        strip: Strip | None = None,
        on_cut=None,
    ):
        strip = strip or Strip()
        self.out, (self.h, self.w_all) = out, src.shape
        self.x0, self.x1 = strip.cols or (0, self.w_all)
        self.c0, self.c1 = strip.core or (self.x0, self.x1)
        self.w, self.strip = self.x1 - self.x0, strip.index
        self.n_fg, self.params, self.level_mpp = n_fg, params, src.level_mpp
        self.band, self.halo = max(1, int(band)), max(0, int(halo))
        self.mpp, self.down = src.mpp, src.downsample
        self.buf = np.zeros((n_fg + 2, 0, self.w), np.float32)
        self.r0 = self.r1 = self.final = 0
        self.next_id, self.stop = 1, self.h
        self.tables: list[dict] = []
        self.on_cut = on_cut

    @property
    def start_row(self) -> int:
        """First map row this labeller still needs."""
        return max(0, self.final - self.halo) if self.final < self.h else self.h

    def resume_at(self, final: int, next_id: int, tables: list[dict]) -> None:
        """Continue from a checkpoint: rows ``< final`` done, the next instance id, the tables so far."""
        self.final, self.next_id, self.tables = int(final), int(next_id), list(tables)
        self.r0 = self.r1 = self.start_row
        self.buf = self.buf[:, :0]

    def run(self, start: int, stop: int) -> None:
        """Label the rows ``[start, stop)`` next (a run of :func:`.plan.band_runs`; ``start`` a cut
        boundary at or after :attr:`final`): the rows skipped up to ``start`` hold no foreground, so they
        get no labels, and :class:`RunDone` is raised once ``stop`` is reached (the maps below are not
        needed). Maps are then expected from :attr:`start_row`."""
        self.stop = min(self.h, int(stop))
        self.resume_at(max(self.final, int(start)), self.next_id, self.tables)

    def __setitem__(self, key, band: np.ndarray) -> None:
        ys, xs = key[-2], key[-1]
        if (xs.start or 0, self.w_all if xs.stop is None else xs.stop) != (self.x0, self.x1):
            raise ValueError(f"expected columns {self.x0}..{self.x1}, got {xs}")
        if ys.start != self.r1:
            raise ValueError(f"bands must arrive in order: got rows {ys.start}..{ys.stop}, expected {self.r1}")
        self.buf = np.concatenate([self.buf, np.asarray(band, np.float32)], axis=1)
        self.r1 = ys.stop
        while self.final < self.stop:
            cut = min(self.final + self.band, self.h)
            if self.r1 < min(cut + self.halo, self.h):
                break
            self._label(cut)
        if self.final >= self.stop and self.stop < self.h:
            raise RunDone(self.final)

    def _label(self, cut: int) -> None:
        w0, w1 = max(0, self.final - self.halo), min(cut + self.halo, self.h)
        maps = self.buf[:, w0 - self.r0 : w1 - self.r0]
        prob, dist, lab, _, grey = postprocess_maps(maps, self.n_fg, self.params, self.level_mpp)
        owned = self._owned(lab, w0, cut)
        table = None
        if owned.size:  # else nothing to write (bare glass, or only instances another cut owns)
            lut = np.zeros(int(lab.max()) + 1, np.int64)
            lut[owned] = np.arange(self.next_id, self.next_id + owned.size)
            new = lut[lab[self.final - w0 :]]
            rows, cols = slice(self.final, w1), slice(self.x0, self.x1)
            old = np.asarray(self.out[rows, cols])
            merged = np.where(old > 0, old, new).astype(old.dtype)
            self.out[rows, cols] = merged
            m = np.where(merged >= self.next_id, merged, 0)
            table = instance_table(
                m, grey[self.final - w0 :], self.mpp, y0=self.final, x0=self.x0, downsample=self.down
            )
            self.tables.append(table)
        self.next_id += owned.size
        self.final = cut
        drop = max(0, self.start_row - self.r0)
        self.buf, self.r0 = self.buf[:, drop:], self.r0 + drop
        if self.on_cut is not None:
            self.on_cut(self, table)

    def _owned(self, lab: np.ndarray, w0: int, cut: int) -> np.ndarray:
        """Labels of ``lab`` (rows from ``w0``) this cut owns: first row in ``[final, cut)`` and leftmost
        column in the strip's core."""
        from scipy import ndimage

        if not lab.any():
            return np.zeros(0, np.int64)
        boxes = ndimage.find_objects(lab)
        ids = np.array([i for i, b in enumerate(boxes, 1) if b is not None], np.int64)
        top = np.array([boxes[i - 1][0].start for i in ids], np.int64) + w0
        left = np.array([boxes[i - 1][1].start for i in ids], np.int64) + self.x0
        return ids[(top >= self.final) & (top < cut) & (left >= self.c0) & (left < self.c1)]

    def table(self) -> dict:
        """The instance table of every cut so far, concatenated."""
        if not self.tables:
            return instance_table(np.zeros((1, 1), np.int32))
        return {k: np.concatenate([t[k] for t in self.tables]) for k in self.tables[0]}
