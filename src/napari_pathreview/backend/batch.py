"""Many slides: one idempotent task per slide, run in this process or on a Dask cluster.

A slide's task writes its outputs atomically and then a ``OUT/<stem>.done.json`` record naming the job
(command, model, parameters, input size and mtime). A rerun — after a crash, a kill, or with more
inputs — skips every slide whose record matches the job and recomputes the rest, so each output is
written once. ``scheduler``: the address of an existing ``dask.distributed`` scheduler; otherwise
``workers > 1`` starts a LocalCluster of that many single-threaded workers; ``workers <= 1`` runs here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .atomic import atomic_path
from .errors import InputError, ProgressFn, check_cancel, report


@dataclass
class SlideJob:
    """One slide of a batch: ``run(path, stem) -> list of written paths`` must write ``stem.*``."""

    path: str
    stem: Path
    key: dict

    @property
    def record(self) -> Path:
        return self.stem.with_name(self.stem.name + ".done.json")

    def is_done(self) -> bool:
        try:
            done = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return False
        return done.get("key") == self.key and all(Path(p).exists() for p in done.get("outputs", []))


def _input_key(path: str) -> dict:
    st = os.stat(path)
    return {"input": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _run_one(run: Callable, job: SlideJob) -> list[str]:
    written = [str(p) for p in run(job.path, job.stem)]
    with atomic_path(job.record) as tmp:
        Path(tmp).write_text(json.dumps({"key": job.key, "outputs": written}, indent=1))
    return written


def run_batch(inputs, out: str | Path, run: Callable, job_key: dict, workers: int = 1,
              scheduler: str | None = None, progress: ProgressFn | None = None, cancel=None) -> dict:
    """Run ``run(path, stem)`` for every input not already done with the same ``job_key``.

    Returns ``{"written": [...], "skipped": [inputs already done], "ran": [inputs computed]}``.
    Output stems are ``OUT/<input stem>``; two inputs with the same stem are refused before any work.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give --out a folder")
    out.mkdir(parents=True, exist_ok=True)
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
    todo = [j for j in jobs if not j.is_done()]
    result = {"written": [], "skipped": [j.path for j in jobs if j not in todo], "ran": [j.path for j in todo]}
    if not todo:
        return result
    if scheduler is None and workers <= 1:
        for i, job in enumerate(todo):
            check_cancel(cancel)
            result["written"] += _run_one(run, job)
            report(progress, i + 1, len(todo), f"{Path(job.path).name} done")
        return result
    from distributed import Client, LocalCluster, as_completed

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None)
    try:
        with Client(scheduler or cluster) as client:
            futures = [client.submit(_run_one, run, job, key=f"pathreview-{job.stem.name}-{abs(hash(job.path))}",
                                     pure=False) for job in todo]
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
