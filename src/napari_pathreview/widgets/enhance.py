"""'Enhance cells' dock widget: a detector's Points layer -> enhanced classes, attention lines, cell graphs.

Layers it adds (all sharing the cells layer's scale / translate):

- ``<cells> enhanced``: Points with the enhanced classes; features: class, score, p_*, ``base_class``,
  ``changed``; cells whose class the enhancer changed have a white ring. "show only changed cells" hides
  the other cells, the detector's layer under them, and the attention lines of unchanged cells.
- ``<cells> attention``: Vectors from each cell to the cells it attends to (top-k per cell and/or a
  threshold; one layer of the encoder; mean over heads or one head), coloured by weight in a bright
  colour map (``layers.line_colormap``); the dock shows its colour bar with the weight range.
- ``<cells> attention (selected)``: the attention neighbourhood of the cells selected in the enhanced layer.
- ``<cells> kNN graph`` / ``<cells> similarity graph``: position kNN (k) and feature cosine-similarity
  (threshold) graphs.

Layers of more than 50 000 cells or lines get level of detail (``widgets/lod_control.py``): zoomed out, a
density image of the cells and only the strongest lines (none while they are sub-pixel); zoomed in,
the cells and lines in view. The layers themselves keep every cell and line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import QPointF, QRectF
from qtpy.QtGui import QColor, QLinearGradient, QPainter
from qtpy.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from .base import LayerPicker, TaskWidget, layer_mpp, layer_slide, result_units, set_shown
from .forms import Param, ParamForm
from .layers import edges_layer_data, legend_html, line_colormap, points_layer_data
from .lod_control import attach_lod


@dataclass(frozen=True)
class AttentionView:
    """Which lines the dock draws: the ``top_k`` strongest attention weights per cell (0: all) at or above
    ``threshold``; the ``knn_k`` nearest cells (positions in µm) and cell pairs of cosine ``similarity``."""

    top_k: int = 5
    threshold: float = 0.02
    knn_k: int = 3
    similarity: float = 0.97


PARAMS = [
    Param(
        "top_k",
        "top-k per cell",
        "draw each cell's k strongest attention lines ('all': every line above 'min attention')",
        {"min": 0, "max": 256},
        special="all",
    ),
    Param(
        "threshold",
        "min attention",
        "hide attention lines whose weight is below this",
        {"min": 0.0, "max": 1.0, "step": 0.01},
        decimals=3,
    ),
    Param("knn_k", "k", "neighbours per cell of the kNN graph (nearest cells, distances in µm)", {"min": 1, "max": 64}),
    Param(
        "similarity",
        "cosine ≥",
        "link two nearby cells whose features' cosine similarity is at least this",
        {"min": 0.0, "max": 1.0, "step": 0.005},
        decimals=3,
    ),
]


def cells_from_layer(layer, classes, mpp):
    """A Points layer (from 'Detect cells' or any) -> backend CellPoints (features from the metadata when
    the layer still holds the detector's points, else None)."""
    from ..backend.errors import InputError
    from ..backend.points import CellPoints

    yx = np.asarray(layer.data, np.float32)[:, -2:]
    n = len(yx)
    feats = layer.features
    probs = np.zeros((n, len(classes)), np.float32)
    if n and all(f"p_{c}" in feats for c in classes):
        probs = np.stack([np.asarray(feats[f"p_{c}"], np.float32) for c in classes], 1)
    index = {c: i for i, c in enumerate(classes)}
    if n and "class" in feats:
        labels = np.array([index.get(str(c), -1) for c in feats["class"]], np.int64)
    else:
        labels = probs.argmax(1) if n else np.zeros(0, np.int64)
    if (labels < 0).any():
        raise InputError(f"layer '{layer.name}' has classes outside the enhancer's {list(classes)}")
    if n and not probs.any():
        probs[np.arange(n), labels] = 1.0
    scores = np.asarray(feats["score"], np.float32) if n and "score" in feats else np.ones(n, np.float32)
    vecs = (layer.metadata or {}).get("cell_features")
    vecs = np.asarray(vecs, np.float32) if vecs is not None and len(vecs) == n else None
    return CellPoints(
        yx, labels, scores, probs, list(classes), mpp, vecs, (layer.metadata or {}).get("source", layer.name)
    )


class EnhanceWidget(TaskWidget):
    task = "enhancer"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.cells = LayerPicker(napari_viewer, ("points",))
        self.form.insertRow(0, "cells", self.cells)
        self.only_changed = QCheckBox("show only changed cells")
        self.only_changed.toggled.connect(self.filter_changed)
        self.form.addRow(self.only_changed)
        # attention controls
        self.layer_sel = QComboBox()
        self.head = QComboBox()
        self.head.addItem("mean")
        self.params = ParamForm("enhance", AttentionView, PARAMS)  # remembered across sessions
        for w in (self.layer_sel, self.head):
            w.currentIndexChanged.connect(self.draw_attention)
        for name in ("top_k", "threshold"):
            self.params[name].changed.connect(self.draw_attention)
        self.form.addRow("attention layer", self.layer_sel)
        self.form.addRow("attention head", self.head)
        self.params.add_rows(self.form, ("top_k", "threshold"))
        # graphs
        self.knn_btn = QPushButton("kNN graph")
        self.knn_btn.clicked.connect(self.draw_knn)
        self.sim_btn = QPushButton("similarity graph")
        self.sim_btn.clicked.connect(self.draw_similarity)
        self.form.addRow("k", _row(self.params["knn_k"].native, self.knn_btn))
        self.form.addRow("cosine ≥", _row(self.params["similarity"].native, self.sim_btn))
        self.legend = QLabel("")
        self.extra.addWidget(self.legend)
        self.colorbar = ColorBar("attention weight")
        self.colorbar.setVisible(False)
        self.extra.addWidget(self.colorbar)
        self.result = None
        self.points_layer = self.attention_layer = self.selected_layer = None
        self._base_layer = None
        self._base_visible = True

    def showEvent(self, event):
        """Once napari's style is applied (it pads the +/- buttons and sets a min-width), the spin boxes
        beside a button are kept at their styled size hint, so their value is not clipped ("0.97(")."""
        super().showEvent(event)
        for box in (self.params["knn_k"].native, self.params["similarity"].native):
            box.setMinimumWidth(box.sizeHint().width())

    # ---------------------------------------------------------------- run
    def job(self):
        from ..backend import pipelines
        from ..backend.errors import InputError

        cells_layer = self.cells.layer()
        if cells_layer is None:
            raise InputError("no points layer selected: run 'Detect cells' first and pick its layer in 'cells'")
        card = self.model_card()
        if card is None:
            raise InputError("no enhancer weights registered; train one with `pathreview train enhancer`")
        meta_mpp = (cells_layer.metadata or {}).get("mpp")
        mpp = self.mpp.value() or meta_mpp
        image = self.image.layer()
        if mpp is None and image is not None:
            mpp = layer_mpp(image, self.mpp.value())
        cells = cells_from_layer(cells_layer, card.classes, mpp)
        slide = layer_slide(image, mpp) if (image is not None and cells.features is None) else None
        name, device, precision = card.name, self.device.currentText(), self.precision.currentText()
        self._base_layer = cells_layer

        def fn(progress, cancel):
            return pipelines.enhance(
                slide,
                cells,
                options=pipelines.EnhanceOptions(weights=name, mpp=mpp, device=device, precision=precision),
                progress=progress,
                cancel=cancel,
                name=cells_layer.name,
            )

        return fn, self.show_result

    def show_result(self, result):
        self.result = result
        base = self._base_layer
        data, kwargs, _ = points_layer_data(
            result.enhanced, f"{base.name} enhanced", scale=base.scale[-2:], translate=base.translate[-2:]
        )
        names = np.array(result.base.classes, dtype=object)
        kwargs["features"]["base_class"] = names[result.base.labels] if len(result.base) else np.zeros(0, object)
        kwargs["features"]["changed"] = result.changed
        kwargs["size"] = np.asarray(base.size).reshape(-1)[0] if len(base.data) else kwargs["size"]
        # a changed class reads at a glance: a white ring instead of the black border
        changed = np.asarray(result.changed, bool)
        kwargs["border_color"] = np.where(changed[:, None], [[1.0, 1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0, 1.0]])
        kwargs["border_width"] = np.where(changed, 0.22, 0.1)
        self.points_layer = self.viewer.add_points(data, **kwargs, **result_units(base))
        attach_lod(self.viewer, self.points_layer)
        self.points_layer.selected_data.events.items_changed.connect(self.draw_selected)
        att = result.attention
        self.layer_sel.blockSignals(True), self.head.blockSignals(True)
        self.layer_sel.clear()
        self.head.clear()
        self.head.addItem("mean")
        if att is not None:
            self.layer_sel.addItems([str(i + 1) for i in range(att.weights.shape[0])])
            self.layer_sel.setCurrentIndex(att.weights.shape[0] - 1)
            self.head.addItems([str(h) for h in range(att.weights.shape[1])])
        self.layer_sel.blockSignals(False), self.head.blockSignals(False)
        self.attention_layer = None
        self._base_visible = bool(base.visible)
        self.filter_changed()  # draws the attention lines too
        self.status.setText(f"{len(result.enhanced)} cells, {int(result.changed.sum())} changed class")
        enh = result.enhanced
        counts = np.bincount(enh.labels, minlength=len(enh.classes)) if len(enh) else None
        self.legend.setText(
            legend_html(enh.classes, kwargs["metadata"]["colors"], counts)
            + f"<br>white ring: class changed by the enhancer ({int(changed.sum())})"
        )

    # ---------------------------------------------------------------- display
    def _edges_layer(self, current, edges, name, colormap="viridis", limits=None):
        """Create or update a Vectors layer for edges between the enhanced cells, coloured by weight in
        ``colormap`` without its dark low end (``layers.line_colormap``)."""
        base = self.points_layer
        data, kwargs, _ = edges_layer_data(
            base.data,
            edges,
            name,
            base.scale[-2:],
            base.translate[-2:],
            colormap=line_colormap(colormap),
            contrast_limits=limits,
            width=max(0.5, float(np.asarray(base.size).reshape(-1)[0]) / 8) if len(base.data) else 1.0,
        )
        if current is not None and current in self.viewer.layers:
            self.viewer.layers.remove(current)
        layer = self.viewer.add_vectors(data, **kwargs, **result_units(base))
        attach_lod(self.viewer, layer)  # > 50 000 lines: only the in-view / strongest ones are drawn
        return layer

    def attention_edges(self, sources=None):
        """Edges of the chosen layer / head; ``sources``: only from these cells (else every cell, or the
        changed ones while "show only changed cells" is on)."""
        att = self.result.attention
        if sources is None and self.only_changed.isChecked():
            sources = np.flatnonzero(self.result.changed).tolist()
        head = None if self.head.currentIndex() <= 0 else int(self.head.currentText())
        layer = self.layer_sel.currentIndex() if self.layer_sel.currentIndex() >= 0 else -1
        return att.edges(
            layer=layer,
            head=head,
            top_k=self.params["top_k"].value or None,
            threshold=self.params["threshold"].value or None,
            sources=sources,
        )

    def draw_attention(self, *_):
        if self.result is None or self.result.attention is None or self.points_layer is None:
            return
        edges = self.attention_edges()
        self.attention_layer = self._edges_layer(self.attention_layer, edges, f"{self._base_layer.name} attention")
        lo, hi = self.attention_layer.edge_contrast_limits
        self.colorbar.set_colormap(self.attention_layer.edge_colormap, lo, hi, len(edges[0]))
        self.colorbar.setVisible(True)
        self.draw_selected()

    def draw_selected(self, *_):
        if self.result is None or self.result.attention is None or self.points_layer is None:
            return
        sel = sorted(self.points_layer.selected_data)
        if not sel and self.selected_layer is None:
            return
        edges = self.attention_edges(sources=sel)
        self.selected_layer = self._edges_layer(
            self.selected_layer, edges, f"{self._base_layer.name} attention (selected)", "turbo"
        )
        self.viewer.layers.selection.active = self.points_layer

    def filter_changed(self, *_):
        """Only changed: hide the unchanged cells, the detector's layer under them (else its cells still
        show through and nothing seems to change) and the attention lines of unchanged cells; off: restore."""
        layer = self.points_layer
        if layer is None or layer not in self.viewer.layers or self.result is None:
            return
        only = self.only_changed.isChecked()
        set_shown(layer, self.result.changed if only else np.ones(len(layer.data), bool))
        base = self._base_layer
        if base is not None and base in self.viewer.layers:
            base.visible = self._base_visible and not only
        self.draw_attention()

    def _graph_cells(self):
        from napari.utils.notifications import show_error

        if self.result is None:
            show_error("run the enhancer first")
            return None
        return self.result.enhanced

    def draw_knn(self, *_):
        from ..backend.graphs import knn_graph

        cells = self._graph_cells()
        if cells is None:
            return
        edges = knn_graph(cells.yx * (cells.mpp or 1.0), self.params["knn_k"].value)
        self.knn_layer = self._edges_layer(
            getattr(self, "knn_layer", None), edges, f"{self._base_layer.name} kNN graph", "viridis"
        )

    def draw_similarity(self, *_):
        from ..backend.graphs import feature_similarity_graph

        cells = self._graph_cells()
        if cells is None or cells.features is None:
            return
        edges = feature_similarity_graph(cells.features, self.params["similarity"].value, yx=cells.yx, k=16)
        self.sim_layer = self._edges_layer(
            getattr(self, "sim_layer", None), edges, f"{self._base_layer.name} similarity graph", "cividis"
        )


def _row(*widgets) -> QWidget:
    w = QWidget()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    for x in widgets:
        lay.addWidget(x)
    return w


class ColorBar(QWidget):
    """A horizontal colour bar for a layer napari draws no colour bar for (Vectors): the colour map from
    its low to its high limit, the two values under the ends and a title."""

    def __init__(self, title: str, parent=None):
        super().__init__(parent)
        self.title = title
        self.colors = np.zeros((2, 4), np.float32)
        self.controls = np.array([0.0, 1.0], np.float32)
        self.limits = (0.0, 1.0)
        self.count = 0
        self.setMinimumHeight(2 * self.fontMetrics().height() + 18)

    def set_colormap(self, colormap, lo: float, hi: float, count: int = 0):
        self.colors = np.asarray(colormap.colors, np.float32)
        self.controls = np.asarray(colormap.controls, np.float32)
        self.limits = (float(lo), float(hi))
        self.count = int(count)
        self.setToolTip(f"{self.title}: {lo:.3g} (left) to {hi:.3g} (right); {count} lines")
        self.update()

    def text(self) -> str:
        lo, hi = self.limits
        return f"{self.title} {lo:.3g} – {hi:.3g} ({self.count} lines)"

    def paintEvent(self, _event):
        p = QPainter(self)
        fm = self.fontMetrics()
        w, th = self.width(), fm.height()
        p.setPen(QColor("#d0d0d0"))
        p.drawText(0, fm.ascent(), f"{self.title} ({self.count} lines)")
        bar = QRectF(0, th + 2, max(1, w - 1), 10)
        grad = QLinearGradient(QPointF(bar.left(), 0), QPointF(bar.right(), 0))
        for c, rgba in zip(self.controls, self.colors):
            grad.setColorAt(float(c), QColor.fromRgbF(*[float(v) for v in rgba[:3]], 1.0))
        p.fillRect(bar, grad)
        lo, hi = (f"{v:.3g}" for v in self.limits)
        y = int(bar.bottom()) + 2 + fm.ascent()
        p.drawText(0, y, lo)
        p.drawText(w - fm.horizontalAdvance(hi) - 1, y, hi)
        p.end()
