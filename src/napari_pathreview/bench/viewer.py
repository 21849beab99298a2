"""``pathreview bench viewer``: re-render times of a napari viewer holding 10⁶ cells + 10⁶ attention
lines, with the level of detail of ``widgets/lod_control.py`` and without it (the reference), in the same run.

It opens a real napari window, so it needs a display (``xvfb-run`` on a headless machine). Timings
force a draw of the canvas (``QOpenGLWidget.grab()``, which runs vispy's paint) after a camera change
and the Qt events it queues; with level of detail the controller's update (normally 50 ms after the
last camera event) is run first and counted. Medians over a few frames.
"""

from __future__ import annotations

import os
import time

import numpy as np
from scipy.spatial import cKDTree

from ..backend.errors import InputError
from ..backend.points import CellPoints
from ..widgets.layers import edges_layer_data, points_layer_data
from .common import bench

CLASSES = ["epithelial", "inflammatory", "fibroblast", "others", "necrosis"]


def synthetic_slide(n_cells: int, n_lines: int, side: float, seed: int = 0):
    """Cells (CellPoints, ~100 µm² of slide per cell at 0.25 µm/px for 10⁶ over 40 000²) and attention
    edges (src, dst, weight) from each of the first ``n_lines`` cells (in random order, cycling) to one
    of its 5 nearest cells.

    60 % of the cells sit in 40 Gaussian "tissue" blobs whose cells are mostly of one class, the rest
    spread over the slide with mixed classes, so the density image has structure to show.
    """

    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    n_blob = int(0.6 * n_cells)
    centres = rng.uniform(0.1 * side, 0.9 * side, (40, 2))
    sigmas = rng.uniform(0.04, 0.09, 40) * side
    main = rng.integers(0, k, 40)
    which = rng.integers(0, 40, n_blob)
    blob = centres[which] + rng.normal(0, 1, (n_blob, 2)) * sigmas[which, None]
    labels_blob = np.where(rng.random(n_blob) < 0.8, main[which], rng.integers(0, k, n_blob))
    rest = rng.uniform(0, side, (n_cells - n_blob, 2))
    labels_rest = rng.choice(k, n_cells - n_blob, p=[0.2, 0.3, 0.35, 0.1, 0.05])
    yx = np.clip(np.concatenate([blob, rest]), 0, side - 1).astype(np.float32)
    labels = np.concatenate([labels_blob, labels_rest]).astype(np.int64)
    probs = np.full((n_cells, k), 0.05, np.float32)
    probs[np.arange(n_cells), labels] = 0.8
    cells = CellPoints(
        yx,
        labels,
        rng.uniform(0.3, 1.0, n_cells).astype(np.float32),
        probs,
        list(CLASSES),
        mpp=0.25,
        source="synthetic",
    )
    _, nn = cKDTree(yx).query(yx, k=6)
    src = rng.permutation(n_cells)[np.arange(n_lines) % n_cells]
    dst = nn[src, rng.integers(1, 6, n_lines)]
    weights = rng.beta(2, 5, n_lines).astype(np.float32)
    return cells, (src, dst, weights)


def _median(xs) -> float:
    return float(np.median(np.asarray(xs, float)))


def _require_display() -> None:

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise InputError(
            "the viewer bench draws in a napari window and needs a display: run it under "
            "xvfb-run, e.g. xvfb-run -a -s '-screen 0 1280x1024x24' pathreview bench viewer --json"
        )


def _gl_renderer() -> str:
    """The OpenGL renderer's name (e.g. llvmpipe under Xvfb), '' when GL cannot say."""
    try:
        from vispy.gloo import gl

        return str(gl.glGetParameter(gl.GL_RENDERER))
    except Exception:
        return ""


class _Clock:
    """Times forced draws of a napari viewer's canvas: ``draw`` runs the queued Qt events and a grab of the
    canvas (vispy's paint); ``frames_at`` moves the camera ``frames`` times and times each move + draw."""

    def __init__(self, viewer, frames: int):
        from qtpy.QtWidgets import QApplication

        self.viewer, self.frames, self.app = viewer, frames, QApplication
        self.canvas = viewer.window._qt_viewer.canvas

    def draw(self) -> float:
        t0 = time.perf_counter()
        self.app.processEvents()
        self.canvas.native.grab()
        return time.perf_counter() - t0

    def frames_at(self, center, zoom, step, flush=()) -> list[float]:
        """Alternate between ``center`` and ``center + step`` (px; a 2 % zoom change when ``step`` is 0),
        flushing the level-of-detail controllers ``flush`` after each move."""
        camera, ts = self.viewer.camera, []
        for i in range(self.frames):
            t0 = time.perf_counter()
            camera.center = (center[0] + (i % 2) * step[0], center[1] + (i % 2) * step[1])
            camera.zoom = zoom * (1.0 + 0.02 * (i % 2)) if step == (0, 0) else zoom
            for c in flush:
                c.flush()
            ts.append(time.perf_counter() - t0 + self.draw())
        return ts

    def switch(self, view, ctl) -> float:
        """Seconds to move the camera to ``view`` (center, zoom), update the controllers and draw."""
        t = time.perf_counter()
        self.viewer.camera.center, self.viewer.camera.zoom = view
        for c in ctl:
            c.flush()
        return time.perf_counter() - t + self.draw()


def _reference_frames(clock: _Clock, out_view, in_view) -> dict:
    """napari drawing every cell and line: frames zoomed out (``out_view``) and zoomed in (``in_view``)."""
    return {
        "ref_out": clock.frames_at(out_view[0][-2:], out_view[1], (0, 0)),
        "ref_in": clock.frames_at(in_view[0], in_view[1], (60.0, 80.0)),
    }


def _lod_frames(clock: _Clock, layers, out_view, in_view) -> dict:
    """Level of detail attached to the same ``layers``, started from the zoomed-out view: attach time,
    first frame, frames out and in, the switches between them, the modes and counts drawn."""
    from ..widgets.lod_control import attach_lod

    viewer = clock.viewer
    viewer.camera.center, viewer.camera.zoom = out_view
    t = time.perf_counter()
    ctl = [attach_lod(viewer, layer) for layer in layers]
    m = {"attach_s": time.perf_counter() - t, "lod_first_s": clock.draw()}
    m["lod_out"] = clock.frames_at(out_view[0][-2:], out_view[1], (0, 0), ctl)
    m["out_modes"] = [c.decision.mode for c in ctl]
    m["switch_in_s"] = clock.switch(in_view, ctl)
    m["lod_in"] = clock.frames_at(in_view[0], in_view[1], (60.0, 80.0), ctl)
    m["in_modes"] = [c.decision.mode for c in ctl]
    m["in_counts"] = [c.shown_count for c in ctl]
    m["switch_out_s"] = clock.switch(out_view, ctl)
    m["pyramid"] = ctl[0].lod.pyramid
    m["controllers"] = ctl
    return m


def _measure(viewer, layer_data, side: float, frames: int, window) -> dict:
    """Add the layers to ``viewer`` (a ``window`` (w, h) px napari window) and time the reference and
    level-of-detail frames; the controllers are detached before returning."""
    from qtpy.QtWidgets import QApplication

    (pts_data, pts_kw), (vec_data, vec_kw) = layer_data
    viewer.window._qt_window.resize(*window)
    QApplication.processEvents()
    clock = _Clock(viewer, frames)
    clock.draw()
    t = time.perf_counter()
    points = viewer.add_points(pts_data, **pts_kw)
    lines = viewer.add_vectors(vec_data, **vec_kw)
    m = {"build_s": time.perf_counter() - t}
    viewer.reset_view()
    m["first_frame_s"] = clock.draw()
    out_view = (viewer.camera.center, viewer.camera.zoom)
    h, w = (int(v) for v in viewer.canvas.size)
    m["canvas_hw"] = [h, w]
    in_view = ((side / 2, side / 2), w / 1200.0)  # 1200 slide pixels (300 µm) across the canvas
    m.update(_reference_frames(clock, out_view, in_view))
    m.update(_lod_frames(clock, (points, lines), out_view, in_view))
    m["n_points"], m["n_vectors"] = len(points.data), len(lines.data)
    m["renderer"] = _gl_renderer()
    for c in m.pop("controllers"):
        c.detach()
    return m


def _viewer_result(m: dict, n_cells: int, n_lines: int, side: float, synth_s: float) -> dict:
    ours, ref = _median(m["lod_out"]), _median(m["ref_out"])
    r = lambda x: round(float(x), 4)
    return {
        "name": "viewer",
        "reference": "napari drawing all cells and lines (no level of detail), same viewer and layers",
        "n_cells": n_cells,
        "n_lines": n_lines,
        "slide_px": side,
        "canvas_hw": m["canvas_hw"],
        "ours_s": r(ours),
        "reference_s": r(ref),
        "ratio": round(ours / ref, 5),
        "zoomed_in_ours_s": r(_median(m["lod_in"])),
        "zoomed_in_reference_s": r(_median(m["ref_in"])),
        "zoomed_in_ratio": round(_median(m["lod_in"]) / _median(m["ref_in"]), 5),
        "switch_to_zoomed_in_s": r(m["switch_in_s"]),
        "switch_back_out_s": r(m["switch_out_s"]),
        "build_reference_s": r(m["build_s"]),
        "build_ours_s": r(m["build_s"] + m["attach_s"]),
        "lod_attach_s": r(m["attach_s"]),
        "first_frame_reference_s": r(m["first_frame_s"]),
        "first_frame_ours_s": r(m["lod_first_s"]),
        "frames_ours_s": [r(x) for x in m["lod_out"]],
        "frames_reference_s": [r(x) for x in m["ref_out"]],
        "zoomed_out_modes": m["out_modes"],
        "zoomed_in_modes": m["in_modes"],
        "zoomed_in_drawn": m["in_counts"],
        "density_levels": [list(lv.shape[:2]) for lv in m["pyramid"].levels],
        "density_bin_px": m["pyramid"].bin,
        "synthetic_data_s": r(synth_s),
        "gl_renderer": m["renderer"],
    }


@bench("viewer")
def run_viewer_bench(
    n_cells: int = 1_000_000,
    n_lines: int = 1_000_000,
    side: float = 40_000.0,
    frames: int = 3,
    window=(1200, 900),
    seed: int = 0,
) -> dict:
    """Re-render times with and without level of detail (see the module's docstring); napari and Qt are
    imported only here, so registering this bench loads neither."""
    _require_display()
    import napari

    t = time.perf_counter()
    cells, edges = synthetic_slide(n_cells, n_lines, side, seed)
    pts_data, pts_kw, _ = points_layer_data(cells, "cells", size_um=4.0)
    vec_data, vec_kw, _ = edges_layer_data(cells.yx, edges, "cells attention", width=1.5)
    synth_s = time.perf_counter() - t

    viewer = napari.Viewer(show=True)
    try:
        m = _measure(viewer, ((pts_data, pts_kw), (vec_data, vec_kw)), side, frames, window)
    finally:
        viewer.close()
    assert m["n_points"] == n_cells and m["n_vectors"] == n_lines  # nothing truncated
    return _viewer_result(m, n_cells, n_lines, side, synth_s)
