"""Segmenting a slide tile by tile into an OME-Zarr labels store, resumable after a kill.

Over slides, :func:`segment_to_zarr` streams the maps of :mod:`.infer` band by band
(``tiling.predict_tiled_to_zarr``) into a :class:`.bands.BandLabeller`, strip by strip, writing a
scratch zarr with a checkpoint after every band; the OME-Zarr pyramid is built from it at the end.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import Cancelled, InputError, ProgressFn, check_cancel, report
from ..slides import Slide, _default_levels
from ..slides.writers import ZarrLayout, _checked_input, _create_arrays, _level_tile, _ngff_attrs
from ..tiling import BandWrite, predict_tiled_to_zarr
from ..tissue import slide_tissue
from .bands import BandLabeller, RunDone, Strip, strip_progress
from .infer import SegmentJob, prepare_job
from .instances import read_table_csv, write_table_csv
from .params import SegmentParams, SegmentSettings
from .plan import WorkPlan, work_plan

INCOMPLETE_MARKER = "INCOMPLETE"


@dataclass
class ZarrTarget:
    """Where and how :func:`segment_to_zarr` writes: the OME-Zarr store at ``path`` (``overwrite``: replace
    an existing one); instances are labelled in bands of ``band`` rows with ``halo_um`` µm of context,
    in vertical strips of ``strip`` columns (bounded memory whatever the slide's size)."""

    path: str | Path
    overwrite: bool = False
    band: int = 1024
    halo_um: float = 40.0
    strip: int = 8192


class ResumeCheckpoint:
    """The scratch folder's ``state.json`` + ``parts/NNNNN.csv`` (instance tables of finished cuts).

    ``state.json`` is replaced atomically after the labels of a cut are written, so a run killed at any
    point (SIGKILL included) resumes from the last finished cut. ``fingerprint`` (input, scale, models,
    parameters) must match, otherwise the scratch is started afresh.
    """

    def __init__(self, folder: Path, fingerprint: dict):
        self.folder, self.fingerprint = Path(folder), fingerprint
        self.parts: list[str] = []

    def load(self):
        """-> (strip, final, next_id, tables) of a matching checkpoint, or None."""
        try:
            state = json.loads((self.folder / "state.json").read_text())
            if state.get("fingerprint") != json.loads(json.dumps(self.fingerprint)):
                return None
            tables = [read_table_csv(self.folder / "parts" / p) for p in state["parts"]]
        except (OSError, ValueError, KeyError):
            return None
        self.parts = list(state["parts"])
        return int(state.get("strip", 0)), int(state["final"]), int(state["next_id"]), tables

    def save(self, labeller: BandLabeller, table: dict | None) -> None:
        if table is not None:
            name = f"{len(self.parts):05d}.csv"
            (self.folder / "parts").mkdir(exist_ok=True)
            write_table_csv(table, self.folder / "parts" / name)
            self.parts.append(name)
        tmp = self.folder / "state.json.tmp"
        state = {
            "fingerprint": self.fingerprint,
            "strip": labeller.strip,
            "final": labeller.final,
            "next_id": labeller.next_id,
            "parts": self.parts,
        }
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.folder / "state.json")


def _file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def fingerprint(job: SegmentJob, target: ZarrTarget, halo: int) -> dict:
    """What a resumable scratch must agree on: the input (path, size, mtime), scale, models, settings."""
    src, image = job.src, job.src.image
    source = {"name": str(src.name), "shape": [int(s) for s in src.array.shape], "level": int(src.level)}
    source["mpp"] = float(src.mpp)
    path = image.path if isinstance(image, Slide) else ""
    if path and os.path.exists(path):
        st = os.stat(path)
        source.update(size=st.st_size, mtime=st.st_mtime_ns)
    elif not isinstance(image, Slide):
        source["digest"] = hashlib.sha256(np.ascontiguousarray(src.array).tobytes()).hexdigest()[:16]
    weights = []
    for c in job.cards:
        wpath = Path(c.path).with_suffix(".safetensors") if getattr(c, "path", "") else None
        weights.append(_file_digest(wpath) if wpath is not None and wpath.exists() else c.name)
    return {
        "source": source,
        "weights": weights,
        "params": dict(job.params.__dict__),
        "tile": job.spec.tile,
        "overlap": job.spec.overlap,
        "band": [target.band, target.strip],
        "halo": halo,
        "ensemble": job.options.ensemble,
        "compiled": bool(job.options.compile),
        "plan": "tissue strips and band runs" if job.options.skip_background else "every strip and band",
    }


def _open_scratch(scratch: Path, resumed, shape_yx, chunk: int):
    """The scratch ``labels0`` array: reopened when resuming, else created (with the INCOMPLETE marker)."""
    import zarr

    if resumed is not None:
        return zarr.open_array(str(scratch / "labels0"), mode="r+")
    h, w = shape_yx
    scratch.mkdir()
    (scratch / INCOMPLETE_MARKER).write_text(
        "pathreview segment: still running, killed or cancelled; rerun the same command to resume\n"
    )
    return zarr.open_array(
        str(scratch / "labels0"),
        mode="w",
        shape=(h, w),
        dtype=np.uint32,
        chunks=(min(chunk, h), min(chunk, w)),
        fill_value=0,
    )


def _label_strips(job: SegmentJob, lab0, target: ZarrTarget, work: WorkPlan, ckpt, resumed, progress, cancel):
    """Label every strip and run of ``work`` not done yet into ``lab0`` (:mod:`.plan`: only where the
    slide may hold tissue; everywhere when it has no coarse level or glass is not skipped), from the
    ``resumed`` checkpoint state when not None. Returns the last strip's :class:`BandLabeller` (its
    ``table()`` and ``next_id`` cover every strip)."""
    h, fn, strips, halo = job.src.shape[0], job.predict, work.strips, work.halo
    first, final, next_id, tables = resumed if resumed is not None else (0, 0, 1, [])
    if resumed is not None:
        where = f" in strip {first + 1} of {len(strips)}" if len(strips) > 1 else ""
        report(progress, 0, 1, f"resuming {job.src.name} at row {final} of {h}{where}")
    labeller = BandLabeller(lab0, job.src, job.n_fg, job.params, target.band, halo, on_cut=ckpt.save)
    labeller.resume_at(final, next_id, tables)  # what a plan with no strip returns
    for k in range(first, len(strips)):
        core, cols = strips[k]
        labeller = BandLabeller(
            lab0, job.src, job.n_fg, job.params, target.band, halo, Strip(k, core, cols), on_cut=ckpt.save
        )
        labeller.resume_at(final if k == first else 0, next_id, tables)
        runs = work.runs[k]
        for r, (start, stop) in enumerate(runs):
            if labeller.final >= stop:
                continue
            labeller.run(start, stop)
            try:
                predict_tiled_to_zarr(
                    job.src.array,
                    fn,
                    labeller,
                    job.spec,
                    fn.out_channels,
                    BandWrite(start_row=labeller.start_row, cols=cols),
                    progress=strip_progress(strip_progress(progress, k, len(strips)), r, len(runs)),
                    cancel=cancel,
                    glass=None if work.coarse is None else work.coarse.is_glass,
                )
            except RunDone:
                pass  # the rows of the run are labelled; the glass below is not read
        next_id, tables = labeller.next_id, labeller.tables
    return labeller


def _tiles_in(boxes, shape, step: int) -> np.ndarray:
    """``(ceil(H / step), ceil(W / step))`` bool: the level-0 tiles of ``step`` px meeting one of
    ``boxes`` ``(y0, y1, x0, x1)`` (None: every tile)."""
    grid = np.zeros((-(-shape[0] // step), -(-shape[1] // step)), bool)
    if boxes is None:
        grid[:] = True
    for y0, y1, x0, x1 in boxes or ():
        if y0 < y1 and x0 < x1:
            grid[y0 // step : -(-y1 // step), x0 // step : -(-x1 // step)] = True
    return grid


def write_label_pyramid(path, labels, mpp: float, layout: ZarrLayout, boxes=None, cancel=None) -> None:
    """The OME-Zarr labels pyramid of ``labels`` (a lazy (H, W) integer array, e.g. the scratch zarr) at
    ``path``: the same arrays, chunks, values and metadata as ``slides.write_ome_zarr(path, labels, mpp,
    layout)`` (``layout.labels`` True), but a tile holding no label is not written: it is the arrays' fill
    value (0) already. ``boxes``: level-0 pixel boxes ``(y0, y1, x0, x1)`` outside which ``labels`` is 0
    (:meth:`.plan.WorkPlan.label_boxes`; None: anywhere); tiles outside them are not even read, and a
    tile of a coarser level is read only when one of the tiles it halves held labels."""
    import zarr

    mpp, arr, nch, shapes = _checked_input(str(path), labels, mpp, layout)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    zarrs = _create_arrays(root, shapes, nch, arr.dtype, layout)
    if getattr(labels, "ndim", 0) == 2 and not hasattr(labels, "dask"):
        arr = labels  # read directly: a dask compute per tile costs more than reading an empty one
    step = int(layout.chunks)
    todo = _tiles_in(boxes, shapes[0], step)
    for k, (ly, lx) in enumerate(shapes):  # level 0 first: each level reads only the one above it
        held = np.zeros((-(-ly // step), -(-lx // step)), bool)
        for ty, tx in zip(*np.nonzero(todo)):
            check_cancel(cancel)
            y, x = int(ty) * step, int(tx) * step
            block = _level_tile(arr, zarrs, k, (y, x), (min(step, ly - y), min(step, lx - x)), True)
            if block.any():
                zarrs[k][y : y + block.shape[0], x : x + block.shape[1]] = block
                held[ty, tx] = True
        if k + 1 < len(shapes):  # tile (i, j) of the next level halves tiles (2i..2i+1, 2j..2j+1) of this one
            n = _tiles_in([], shapes[k + 1], step).shape
            todo = np.zeros(n, bool)
            for dy, dx in itertools.product((0, 1), (0, 1)):
                part = held[dy::2, dx::2]
                todo[: part.shape[0], : part.shape[1]] |= part
    root.attrs.update(_ngff_attrs(shapes, nch, mpp, layout.name, True))


def _write_store(out: Path, job: SegmentJob, lab0, labeller: BandLabeller, boxes, chunk: int, overwrite: bool, cancel):
    """The OME-Zarr labels pyramid of ``lab0`` + ``instances.csv`` + ``pathreview.json``, built under a
    temporary name and renamed to ``out`` when complete."""
    src, (h, w) = job.src, job.src.shape
    with atomic_path(out, overwrite=overwrite) as tmp:
        n_levels = _default_levels((h, w), chunk)
        if isinstance(src.image, Slide):  # as many levels as the input pyramid has from the level read
            n_levels = max(n_levels, min(len(src.image.levels) - src.level, 1 + int(math.log2(max(1, min(h, w))))))
        name = out.name.replace(".ome.zarr", "").replace(".zarr", "")
        layout = ZarrLayout(n_levels=n_levels, chunks=chunk, labels=True, name=name)
        write_label_pyramid(tmp, lab0, src.level_mpp, layout, boxes, cancel)
        write_table_csv(labeller.table(), Path(tmp) / "instances.csv")
        meta = {
            "source": src.name,
            "level": src.level,
            "downsample": src.downsample,
            "mpp": src.mpp,
            "classes": list(job.cards[0].classes),
            "models": [c.name for c in job.cards],
            "params": job.params.__dict__,
            "n_instances": int(labeller.next_id - 1),
        }
        (Path(tmp) / "pathreview.json").write_text(json.dumps(meta, indent=2))


def segment_to_zarr(
    image,
    out: str | Path | ZarrTarget,
    model,
    card,
    mpp: float | None = None,
    params: SegmentParams | None = None,
    options: SegmentSettings | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel=None,
) -> Path:
    """Segment a slide (or array) tile by tile into an OME-Zarr labels pyramid at ``out``.

    ``out``: a path, or a :class:`ZarrTarget` (path, overwrite, band, halo, strip). ``mpp``, ``params``,
    ``options``, ``progress``, ``cancel``: as for :func:`.infer.segment`.

    Bounded memory, whatever the slide's size: the level is cut into vertical strips of ``strip``
    columns (+ ``halo_um`` of context each side); in each, maps are blended band by band
    (``predict_tiled_to_zarr``, one global tile plan) and instances labelled by a :class:`BandLabeller`
    (``band`` rows + ``halo_um`` of context), written to a scratch zarr;
    then the OME-Zarr pyramid is built tile by tile (:func:`write_label_pyramid`, as
    ``slides.write_ome_zarr`` in labels mode but storing only tiles that hold labels). Everything
    is built under hidden temporary names holding an ``INCOMPLETE`` marker and renamed to ``out`` only
    when complete, so ``out`` is either complete or absent. A cancelled run removes its scratch; a run
    that is killed or fails keeps it (``.OUT.scratch``, marked ``INCOMPLETE``) with a checkpoint after
    every band, and the same call resumes from the last finished band, giving the same labels as an
    uninterrupted run. The store also holds ``instances.csv`` (the instance table). Returns ``Path(out)``.
    """
    target = out if isinstance(out, ZarrTarget) else ZarrTarget(out)
    out = Path(target.path)
    if out.exists() and not target.overwrite:
        raise InputError(f"{out}: already exists; choose another output or pass --overwrite")
    job = prepare_job(image, model, card, mpp, params, options or SegmentSettings(), cancel)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f".{out.name}.scratch")
    halo = int(math.ceil(target.halo_um / job.src.level_mpp))
    chunk = min(1024, max(256, job.spec.tile))
    coarse = slide_tissue(job.src.image, job.src.level, job.options.skip_background)
    work = work_plan(coarse, job.src.shape, job.spec, target.band, target.strip, halo)
    ckpt = ResumeCheckpoint(scratch, fingerprint(job, target, halo))
    resumed = ckpt.load() if (scratch / "labels0").exists() else None
    if resumed is None and scratch.exists():
        shutil.rmtree(scratch)
    done = False
    try:
        lab0 = _open_scratch(scratch, resumed, job.src.shape, chunk)
        labeller = _label_strips(job, lab0, target, work, ckpt, resumed, progress, cancel)
        check_cancel(cancel)
        _write_store(out, job, lab0, labeller, work.label_boxes(), chunk, target.overwrite, cancel)
        done = True
    except Cancelled:
        done = True  # a cancel is the user's choice: nothing to resume
        raise
    finally:
        if done and scratch.exists():
            shutil.rmtree(scratch)
    return out
