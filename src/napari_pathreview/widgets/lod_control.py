"""Level of detail in the viewer: large cell / line layers draw a density image or the in-view subset.

``attach_lod(viewer, layer)`` does nothing to a layer of at most ``LOD_MIN_POINTS`` points (or
``LOD_MIN_LINES`` lines): small layers are drawn by napari as usual. For a larger one it attaches a
:class:`LODController`, which the Detect, Enhance and Annotate widgets do for the layers they add.

What the pathologist gets (the rules are in ``widgets/lod_rules.py``):

- Zoomed out, the cells of the layer appear as a density image in their class colours (each bin the
  colour of its most frequent class, more opaque where cells are denser); lines (attention, graphs)
  are hidden while shorter than ~1.5 screen pixels, then only the strongest ones are drawn.
- Zoomed in (fewer than ~50 000 cells in view, and fewer than one per 8 x 8 screen pixels), the cells in
  the view (plus a margin) are drawn as points at full detail, and the lines with an end in view.
- The layer itself is never truncated. It keeps all N cells: data, features table, colours, ``shown``,
  selection; it stays in the layer list under its own name and is the layer that widgets, the features
  table, File > Save and editing act on (select, move, delete, add points, set a class with keys 1…K).
  Only what is *drawn* changes: the layer's own markers (or lines) are not drawn while the controller
  is attached, and two display-only layers draw in its place, just above it:
  ``<name> (overview)`` (an RGBA multiscale Image, the density pyramid) and ``<name> (in view)``
  (Points or Vectors holding copies of the in-view items). Their metadata say
  ``{"pathreview": "lod-proxy"}``; the layer pickers of the plugin skip them, and selecting one in the
  layer list selects the full layer instead, so edits always reach the full layer. The selection and
  hover highlights of the full layer are still drawn by napari.
- Every change of the full layer (data, colours, sizes, symbols, ``shown`` filter, opacity, visibility,
  name, scale / translate, position in the layer list) re-derives or moves the proxies after a short
  delay; the density image follows the ``shown`` filter. (napari 0.9.2 itself ignores ``shown`` for 2D
  points and draws them all; the proxies honour it, so the Detect score filter and Enhance "only changed"
  do hide cells of a large layer.)
- "Save selected layers" on the full layer writes all its cells; "Save all layers" would also write the
  proxies (display copies: an RGBA image and a subset of the cells); they can be ignored or deleted.
- Removing the full layer removes its proxies; removing a proxy detaches the controller, and the full
  layer draws itself again (slowly, as napari does without level of detail).

The camera's zoom and centre and the canvas size are followed with a 50 ms debounce (a QTimer).
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np
from qtpy.QtCore import QTimer

from .lod_proxies import (
    copy_in_view,
    is_proxy,
    new_in_view,
    new_overview,
    overview_transform,
    set_overview_data,
)
from .lod_rules import DEFAULT_LINE_BUDGET, DEFAULT_POINT_BUDGET, LinesLOD, PointsLOD, View

LOD_MIN_POINTS = 50_000
LOD_MIN_LINES = 50_000

_CONTROLLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def controller_for(layer) -> LODController | None:
    return _CONTROLLERS.get(unwrap(layer))


def unwrap(obj):
    """The napari object behind a plugin proxy. A dock opened from *Plugins* gets a ``PublicOnlyProxy``
    viewer whose layers are proxies too: ``isinstance`` sees through them but identity (``is``), weak
    references and the private drawing hooks the controller needs do not."""
    return getattr(obj, "__wrapped__", obj)


def layer_kind(layer) -> str | None:
    """ "points" or "vectors" for a Points / Vectors layer (proxied or not), else None."""
    from napari.layers import Points, Vectors

    if isinstance(layer, Points):
        return "points"
    if isinstance(layer, Vectors):
        return "vectors"
    return None


def attach_lod(viewer, layer, *, min_items: int | None = None, **kwargs) -> LODController | None:
    """Level of detail for ``layer`` (Points or Vectors) when it holds more than ``min_items``
    (default ``LOD_MIN_POINTS`` / ``LOD_MIN_LINES``); None, and the layer untouched, otherwise.
    ``viewer`` and ``layer`` may be the proxies napari hands a plugin dock."""
    viewer, layer = unwrap(viewer), unwrap(layer)
    kind = layer_kind(layer)
    if kind is None or is_proxy(layer):
        return None
    if min_items is None:
        min_items = LOD_MIN_POINTS if kind == "points" else LOD_MIN_LINES
    if len(layer.data) <= min_items:
        return None
    existing = controller_for(layer)
    if existing is not None:
        return existing
    return LODController(viewer, layer, **kwargs)


def _camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9; ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _canvas_hw(viewer) -> tuple[int, int]:
    for get in (lambda: viewer.canvas.size, lambda: viewer._canvas_size):
        with contextlib.suppress(Exception):
            h, w = (int(v) for v in get())
            if h > 0 and w > 0:
                return h, w
    return 600, 800


def _vispy_layer(viewer, layer):
    """napari's vispy layer drawing ``layer``, or None (no Qt window, e.g. a ViewerModel)."""
    with contextlib.suppress(Exception):
        return viewer.window._qt_viewer.canvas.layer_to_visual.get(layer)
    return None


def _area(v: View) -> float:
    return float((v.y1 - v.y0) * (v.x1 - v.x0))


class LODController:
    """Keeps the display proxies of one large Points or Vectors layer in step with the camera and with
    the layer (see the module docstring for what is drawn and what the layer keeps)."""

    def __init__(
        self,
        viewer,
        layer,
        *,
        budget: int | None = None,
        delay_ms: int = 50,
        margin: float = 0.25,
        screen_px_per_cell: float = 64.0,
        max_raster: int = 2048,
    ):
        self.viewer, self.layer = unwrap(viewer), unwrap(layer)
        self.kind = layer_kind(self.layer)
        self.budget = budget or (DEFAULT_POINT_BUDGET if self.kind == "points" else DEFAULT_LINE_BUDGET)
        self.margin, self.screen_px_per_cell, self.max_raster = margin, screen_px_per_cell, max_raster
        self.lod = None  # PointsLOD / LinesLOD of the layer's current state
        self.overview = None  # Image layer (points only)
        self.in_view = None  # Points / Vectors layer
        self.decision = None
        self.updates = 0
        self._dirty = True  # the layer changed: rebuild self.lod
        self._style_dirty = True  # colours / sizes changed: re-copy to the proxy
        self._shown = None
        self._overview_stale = True
        self._in_view_idx = None
        self._restacking = False
        self._attached = True
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.update)
        _CONTROLLERS[self.layer] = self
        self._connect()
        self._hide_layer_drawing(True)
        # both display layers now (and the density pyramid): switching between them is then cheap
        self._rebuild()
        if self.kind == "points":
            self._ensure_overview()
        self._new_in_view()
        self.update()

    # ------------------------------------------------------------------ events
    def _connect(self):
        cam = _camera(self.viewer).events
        self._links = [(cam.zoom, self.schedule), (cam.center, self.schedule)]
        with contextlib.suppress(Exception):
            self._links.append((self.viewer.canvas.events.size, self.schedule))
        ev = self.layer.events
        self._links.append((ev.data, self._on_data))
        for name in (
            "face_color",
            "border_color",
            "size",
            "symbol",
            "border_width",
            "border_width_is_relative",
            "edge_color",
            "edge_width",
            "length",
            "vector_style",
            "opacity",
            "blending",
            "antialiasing",
            "canvas_size_limits",
        ):
            if hasattr(ev, name):
                self._links.append((getattr(ev, name), self._on_style))
        for name in ("scale", "translate"):
            if hasattr(ev, name):
                self._links.append((getattr(ev, name), self._on_transform))
        self._links.append((ev.visible, self._on_visible))
        self._links.append((ev.name, self._on_name))
        if self.kind == "points":
            self._links.append((ev.set_data, self._on_set_data))
        self._links.append((self.viewer.layers.events.removed, self._on_removed))
        for name in ("moved", "reordered"):
            if hasattr(self.viewer.layers.events, name):
                self._links.append((getattr(self.viewer.layers.events, name), self._restack))
        self._links.append((self.viewer.layers.selection.events.active, self._on_active))
        for emitter, cb in self._links:
            emitter.connect(cb)

    def schedule(self, *_):
        if self._attached:
            self.timer.start()

    def flush(self):
        """Apply a pending update now (tests, benchmarks)."""
        if self.timer.isActive():
            self.timer.stop()
        self.update()

    def _on_data(self, event=None):
        action = str(getattr(event, "action", "") or "")
        if action.endswith("ing"):  # adding / removing / changing: wait for the change
            return
        self._dirty = self._style_dirty = True
        self.schedule()

    def _on_style(self, *_):
        self._style_dirty = True
        if self.kind == "points" and not self._same_colors():
            self._dirty = True
        self._sync_display_props()
        self.schedule()

    def _on_set_data(self, *_):
        shown = np.asarray(self.layer.shown)
        if self._shown is None or shown.shape != self._shown.shape or not np.array_equal(shown, self._shown):
            self._dirty = True
            self.schedule()

    def _on_transform(self, *_):
        if self.in_view is not None:
            self.in_view.scale, self.in_view.translate = self.layer.scale, self.layer.translate
        if self.overview is not None and self.kind == "points" and self.lod is not None and self.lod.has_pyramid:
            self.overview.scale, self.overview.translate = overview_transform(self.layer, self.lod.pyramid)
        self.schedule()

    def _on_visible(self, *_):
        self._hide_layer_drawing(True)  # napari shows the node again on a visibility change
        self._apply_visibility()

    def _on_name(self, *_):
        if self.overview is not None:
            self.overview.name = f"{self.layer.name} (overview)"
        if self.in_view is not None:
            self.in_view.name = f"{self.layer.name} (in view)"

    def _on_removed(self, event):
        gone = event.value
        if gone is self.layer:
            self.detach()
        elif gone is self.overview or gone is self.in_view:
            if gone is self.overview:
                self.overview = None
            else:
                self.in_view = None
            self.detach()

    def _restack(self, *_):
        """Keep the proxies just above the full layer when layers are moved."""
        if self._restacking:
            return
        self._restacking = True
        try:
            layers = self.viewer.layers
            for _ in range(6):
                if self.layer not in layers:
                    return
                i = layers.index(self.layer)
                proxies = sorted(
                    (p for p in (self.overview, self.in_view) if p is not None and p in layers), key=layers.index
                )
                wrong = [(k, p) for k, p in enumerate(proxies) if layers.index(p) != i + 1 + k]
                if not wrong:
                    return
                k, p = wrong[0]
                j, t = layers.index(p), i + 1 + k
                layers.move(j, t if j > t else t + 1)
        finally:
            self._restacking = False

    def _on_active(self, event):
        active = event.value
        if active is not None and (active is self.overview or active is self.in_view):
            self.viewer.layers.selection.active = self.layer

    # ------------------------------------------------------------------ view
    def view(self) -> View:
        """The canvas's visible rectangle in the layer's data pixels (last two axes; no rotation)."""
        h, w = _canvas_hw(self.viewer)
        cam = _camera(self.viewer)
        zoom = float(cam.zoom)
        cy, cx = (float(v) for v in tuple(cam.center)[-2:])
        hy, hx = h / (2 * zoom), w / (2 * zoom)
        scale = np.asarray(self.layer.scale, float)[-2:]
        trans = np.asarray(self.layer.translate, float)[-2:]
        a = (np.array([cy - hy, cx - hx]) - trans) / scale
        b = (np.array([cy + hy, cx + hx]) - trans) / scale
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        return View(lo[0], lo[1], hi[0], hi[1], h, w)

    # ------------------------------------------------------------------ update
    def _colors(self):
        return np.asarray(self.layer.face_color)

    def _same_colors(self) -> bool:
        return (
            self.lod is not None
            and self.lod.colors.shape == self._colors().shape
            and np.array_equal(self.lod.colors, self._colors())
        )

    def _rebuild(self):
        data = np.asarray(self.layer.data)
        if self.kind == "points":
            self._shown = np.array(self.layer.shown, copy=True)
            self.lod = PointsLOD(
                data[:, -2:] if len(data) else np.zeros((0, 2)),
                np.array(self._colors(), copy=True),
                self._shown,
                budget=self.budget,
                screen_px_per_cell=self.screen_px_per_cell,
                margin=self.margin,
                max_raster=self.max_raster,
            )
        else:
            starts = data[:, 0, -2:] if len(data) else np.zeros((0, 2))
            ends = starts + (data[:, 1, -2:] * float(self.layer.length) if len(data) else 0)
            feats = self.layer.features
            weights = np.asarray(feats["weight"], np.float32) if "weight" in feats else None
            self.lod = LinesLOD(starts, ends, weights, budget=self.budget, margin=self.margin)
        self._overview_stale = True  # its density image is recomputed when next needed
        self._dirty = False

    def update(self, *_):
        """Decide what to draw for the current view and apply it to the proxies."""
        if not self._attached:
            return
        rebuilt = self._dirty or self.lod is None
        if rebuilt:
            self._rebuild()
        view = self.view()
        prev = self.decision
        decision = self.lod.decide(view)
        if (
            not rebuilt
            and not self._style_dirty
            and prev is not None
            and prev.mode == decision.mode
            and decision.mode in ("points", "all", "top")
            and prev.covered is not None
            and prev.covered.contains(view)
            and _area(prev.covered) <= 2 * _area(view.expanded(self.margin))
        ):
            # a pan or a small zoom inside the margin already drawn: keep the proxy as it is
            decision.indices, decision.covered = prev.indices, prev.covered
        if self.kind == "points":
            if decision.mode == "density":
                self._ensure_overview()
            else:
                self._set_in_view(decision.indices)
        else:
            self._set_in_view(decision.indices)
        self.decision = decision
        self._style_dirty = False
        self.updates += 1
        self._apply_visibility()

    # ------------------------------------------------------------------ proxies
    def _index(self) -> int:
        return list(self.viewer.layers).index(self.layer)

    def _insert(self, proxy):
        """Insert a display proxy just above the full layer, leaving the user's selection as it was (napari
        selects every layer it adds: the proxies would show as selected in the layer list)."""
        selection = self.viewer.layers.selection
        before, active = set(selection), selection.active
        self.viewer.layers.insert(self._index() + 1, proxy)
        selection.clear()
        selection.update(before or {self.layer})
        selection.active = active if active is not None else self.layer

    def _ensure_overview(self):
        if self.overview is not None and self._overview_stale:
            set_overview_data(self.overview, self.layer, self.lod.pyramid)
        if self.overview is None:
            self.overview = new_overview(self.layer, self.lod.pyramid)
            self._insert(self.overview)
        self._overview_stale = False

    def _new_in_view(self):
        self.in_view = new_in_view(self.layer, self.kind)
        self._sync_display_props()
        self._insert(self.in_view)

    def _sync_display_props(self):
        for proxy in (self.in_view, self.overview):
            if proxy is None:
                continue
            proxy.opacity = self.layer.opacity
            proxy.blending = self.layer.blending
        if self.in_view is not None and self.kind == "vectors":
            self.in_view.edge_width = self.layer.edge_width
            self.in_view.vector_style = self.layer.vector_style
            self.in_view.length = self.layer.length

    def _set_in_view(self, idx):
        if self.in_view is None:
            self._new_in_view()
        idx = np.asarray(idx, np.int64)
        same = not self._style_dirty and self._in_view_idx is not None and np.array_equal(self._in_view_idx, idx)
        if same:
            return
        copy_in_view(self.in_view, self.layer, self.kind, idx)
        self._in_view_idx = idx

    def _apply_visibility(self):
        show = bool(self.layer.visible) and self._attached
        mode = self.decision.mode if self.decision is not None else None
        if self.overview is not None:
            self.overview.visible = show and mode == "density"
        if self.in_view is not None:
            self.in_view.visible = show and mode in ("points", "all", "top")

    def _hide_layer_drawing(self, hide: bool):
        """Stop (or restart) napari drawing the full layer's markers / lines; its selection and hover
        highlights stay drawn. Without a Qt canvas there is nothing to hide."""
        vl = _vispy_layer(self.viewer, self.layer)
        if vl is None:
            return
        if self.kind == "points":
            vl.node.points_markers.visible = not hide
            vl.node.update()
        else:
            vl.node.visible = bool(self.layer.visible) and not hide

    # ------------------------------------------------------------------ detach
    def detach(self):
        """Stop level of detail: remove the proxies and let napari draw the full layer again."""
        if not self._attached:
            return
        self._attached = False
        self.timer.stop()
        for emitter, cb in self._links:
            with contextlib.suppress(Exception):
                emitter.disconnect(cb)
        for proxy in (self.overview, self.in_view):
            if proxy is not None and proxy in self.viewer.layers:
                self.viewer.layers.remove(proxy)
        self.overview = self.in_view = None
        self._hide_layer_drawing(False)
        if _CONTROLLERS.get(self.layer) is self:
            del _CONTROLLERS[self.layer]

    # ------------------------------------------------------------------ introspection
    @property
    def shown_count(self) -> int:
        """Items the proxy currently draws (0 in density / hidden mode)."""
        mode = self.decision.mode if self.decision is not None else None
        if self.in_view is None or mode in (None, "density", "hidden"):
            return 0
        return len(self.in_view.data)
