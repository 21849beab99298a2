"""Many slides: one idempotent task per slide, run in this process or on a Dask cluster.

A slide's task claims its outputs in ``OUT/<stem>.done.json``, writes them atomically and then records
them there, per job (command, model, parameters, input size and mtime) with each output's size and
SHA-256. That record is how pathreview knows which files it wrote: before any work, every planned output
that exists must be listed in the record with unchanged contents (or claimed by an unfinished run of
ours) — anything else (a QuPath export beside the slide, a hand-corrected table, another tool's file)
is refused unless ``overwrite``; an output that is one of the inputs is refused always. A rerun — after
a crash, a kill, or with more inputs — skips every slide whose record matches the job and recomputes
the rest, so each output is written once. ``scheduler``: the address of an existing
``dask.distributed`` scheduler; otherwise ``workers > 1`` starts a LocalCluster of that many
single-threaded workers; ``workers <= 1`` runs here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .atomic import _remove, atomic_path, refuse_foreign, refuse_input_as_output, writable_folder
from .errors import InputError, ProgressFn, check_cancel, report

RECORD_FORMAT = "pathreview-record/2"


def fingerprint(path: Path) -> dict:
    """``{"name", "size", "sha256"}`` of a written file (bytes; name relative to its folder); a folder
    (a zarr store) is listed by name only."""
    path = Path(path)
    if path.is_dir():
        return {"name": path.name}
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"name": path.name, "size": path.stat().st_size, "sha256": h.hexdigest()}


def _matches(entry: dict, path: Path) -> bool:
    """True when ``path`` is the file ``entry`` lists, unchanged since pathreview wrote it."""
    if "sha256" not in entry:
        return path.exists()
    try:
        return path.is_file() and path.stat().st_size == entry["size"] and fingerprint(path) == entry
    except OSError:
        return False


@dataclass
class SlideJob:
    """One slide of a batch: ``run(path, stem) -> list of written paths`` must write ``stem.*``."""

    path: str
    stem: Path
    key: dict

    @property
    def record(self) -> Path:
        return self.stem.with_name(self.stem.name + ".done.json")

    def entries(self) -> dict | None:
        """``{job name: {"key", "done", "outputs": [{"name", ...}]}}`` from the record; ``{}`` when there
        is none; None when a file of the record's name exists but is not a pathreview record."""
        try:
            doc = json.loads(self.record.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        if doc.get("format") == RECORD_FORMAT and isinstance(doc.get("jobs"), dict):
            return doc["jobs"]
        if isinstance(doc.get("key"), dict) and isinstance(doc.get("outputs"), list):  # format 1: one job
            outs = [{"name": Path(str(p)).name} for p in doc["outputs"]]
            return {str(doc["key"].get("job")): {"key": doc["key"], "done": True, "outputs": outs}}
        return None

    def is_done(self) -> bool:
        entry = (self.entries() or {}).get(str(self.key.get("job")))
        return bool(
            entry
            and entry.get("done")
            and entry.get("key") == self.key
            and all((self.record.parent / o["name"]).exists() for o in entry.get("outputs", []))
        )

    def owns(self, path: Path) -> bool:
        """True when a record of this stem lists ``path`` as written (unchanged) or claimed by pathreview."""
        for entry in (self.entries() or {}).values():
            for o in entry.get("outputs", []):
                if o.get("name") == Path(path).name and (not entry.get("done") or _matches(o, Path(path))):
                    return True
        return False

    def _write(self, jobs: dict | None) -> None:
        if not jobs:
            _remove(self.record)
            return
        with atomic_path(self.record) as tmp:
            Path(tmp).write_text(json.dumps({"format": RECORD_FORMAT, "writer": "pathreview", "jobs": jobs}, indent=1))

    def claim(self, planned) -> dict:
        """Record that this job is about to write ``planned`` (unfinished); returns the record before."""
        before = self.entries() or {}
        self._write(
            {
                **before,
                str(self.key.get("job")): {
                    "key": self.key,
                    "done": False,
                    "input": self.path,
                    "outputs": [{"name": Path(p).name} for p in planned],
                },
            }
        )
        return before

    def finish(self, written) -> None:
        jobs = self.entries() or {}
        jobs[str(self.key.get("job"))] = {
            "key": self.key,
            "done": True,
            "input": self.path,
            "outputs": [fingerprint(Path(p)) for p in written],
        }
        self._write(jobs)


def _input_key(path: str) -> dict:
    st = os.stat(path)
    return {"input": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _run_one(run: Callable, job: SlideJob, planned: list | None = None) -> list[str]:
    planned = [Path(p) for p in planned or []]
    existed = {p for p in planned if os.path.lexists(p)}
    before = job.claim(planned)
    try:
        written = [str(p) for p in run(job.path, job.stem)]
    except BaseException:
        if not any(os.path.lexists(p) for p in planned if p not in existed):
            job._write(before)  # nothing new written: the record as it was
        raise
    job.finish(written)
    return written


def _run_on_worker(run: Callable, job: SlideJob, planned: list | None = None) -> list[str]:
    """:func:`_run_one` on a Dask worker: the slide's own dask arrays are computed here, in the worker
    (``scheduler="synchronous"``), not sent back to the cluster (a worker's default), which cannot
    serialise a TIFF's or zarr store's reader (was "internal error: Could not serialize object")."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        return _run_one(run, job, planned)


def check_outputs(jobs, planned: Callable | None, inputs, overwrite: bool = False) -> None:
    """Refuse (InputError, before any work) a planned output that is one of the inputs, or that exists
    and is not this pathreview's (see module docstring) unless ``overwrite``; also a record file of
    another kind."""
    for job in jobs:
        if job.entries() is None and not overwrite:
            raise InputError(
                f"{job.record}: exists and is not a pathreview record; pass --overwrite to "
                "replace it, or choose another --out"
            )
        for p in planned(job.stem) if planned else []:
            refuse_input_as_output(p, inputs)
            refuse_foreign(p, owned=job.owns(p), overwrite=overwrite)


def _slide_jobs(inputs, out: Path, job_key: dict) -> list[SlideJob]:
    """One :class:`SlideJob` per input, its stem ``OUT/<input name without extensions>``; two inputs of one
    stem are refused (InputError)."""
    jobs, stems = [], {}
    for p in map(str, inputs):
        stem = Path(p).name
        for ext in (".ome.tiff", ".ome.tif", ".ome.zarr"):
            if stem.lower().endswith(ext):
                stem = stem[: -len(ext)]
                break
        else:
            stem = Path(stem).stem
        if stem in stems:
            raise InputError(f"{p}: same output name '{stem}' as {stems[stem]}; rename one of them")
        stems[stem] = p
        jobs.append(SlideJob(p, out / stem, {**job_key, **_input_key(p)}))
    return jobs


@dataclass
class BatchOptions:
    """How a batch of slides runs (every ``*_files`` pipeline takes one). ``workers``: 1 runs here, more
    start a local Dask cluster of that many single-threaded workers; ``scheduler``: the address of an
    existing ``dask.distributed`` scheduler instead; ``overwrite``: replace existing outputs pathreview
    did not write (never an input)."""

    workers: int = 1
    scheduler: str | None = None
    overwrite: bool = False


def run_batch(
    inputs,
    out: str | Path,
    run: Callable,
    job_key: dict,
    batch: BatchOptions | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    planned: Callable | None = None,
) -> dict:
    """Run ``run(path, stem)`` for every input not already done with the same ``job_key``.

    Returns ``{"written": [...], "skipped": [inputs already done], "ran": [inputs computed]}``.
    Output stems are ``OUT/<input stem>``; two inputs with the same stem are refused before any work.
    ``planned(stem) -> [paths]``: the outputs a slide's task will write, checked before any work (see
    :func:`check_outputs`; ``batch.overwrite`` lifts the refusal of existing files pathreview did not
    write). ``batch``: workers, scheduler, overwrite (:class:`BatchOptions`; default: here, no overwrite).
    """
    b = batch or BatchOptions()
    workers, scheduler = b.workers, b.scheduler
    jobs = _slide_jobs(inputs, writable_folder(out), job_key)
    todo = [j for j in jobs if not j.is_done()]
    check_outputs(todo, planned, [j.path for j in jobs], b.overwrite)
    result = {"written": [], "skipped": [j.path for j in jobs if j not in todo], "ran": [j.path for j in todo]}
    if not todo:
        return result
    if scheduler is None and workers <= 1:
        for i, job in enumerate(todo):
            check_cancel(cancel)
            result["written"] += _run_one(run, job, planned(job.stem) if planned else None)
            report(progress, i + 1, len(todo), f"{Path(job.path).name} done")
        return result
    from distributed import Client, LocalCluster, as_completed

    cluster = (
        None
        if scheduler
        else LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # a slide's failure reaches the user once, as our one line
        )
    )
    try:
        with Client(scheduler or cluster) as client:
            futures = [
                client.submit(
                    _run_on_worker,
                    run,
                    job,
                    planned(job.stem) if planned else None,
                    key=f"pathreview-{job.stem.name}-{abs(hash(job.path))}",
                    pure=False,
                )
                for job in todo
            ]
            for i, fut in enumerate(as_completed(futures)):
                if cancel is not None and cancel.is_set():
                    client.cancel(futures)
                    check_cancel(cancel)
                result["written"] += fut.result()
                report(progress, i + 1, len(todo), "slides done")
    finally:
        if cluster is not None:
            cluster.close()
    return result
