"""'Compare with annotations' dock widget: a prediction layer vs an annotation layer.

Points vs Points: per-class precision / recall / F1 / support, detection and mean F1, the confusion
matrix of matched cells (the numbers ``pathreview evaluate detector`` gives on the same image), and the
errors as layers: true positives, false positives (x), missed cells (ring), match lines (Vectors) and
wrong-class matches (squares). Labels vs Labels: Dice, AJI, PQ and unmatched instances as errors.
"Next error" / "Previous error" centre the camera on each error in reading order.
"""
from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QTableWidget,
                            QTableWidgetItem)

from .base import LayerPicker, TaskWidget, layer_mpp

COLORS = {"tp": "#3cb44b", "fp": "#e6194b", "fn": "#ffe119", "class": "#f032e6", "match": "#46f0f0"}


def to_pixels_of(layer, ref):
    """(N, 2) last-two-axes data coordinates of ``layer`` expressed in ``ref``'s data pixels
    (through world coordinates: data * scale + translate)."""
    data = np.asarray(layer.data, np.float64)
    yx = data.reshape(len(data), -1)[:, -2:] if len(data) else np.zeros((0, 2))
    world = yx * np.asarray(layer.scale[-2:]) + np.asarray(layer.translate[-2:])
    return (world - np.asarray(ref.translate[-2:])) / np.asarray(ref.scale[-2:])


def _item(value, fmt="{:.3f}"):
    it = QTableWidgetItem("" if value is None else (fmt.format(value) if isinstance(value, float) else str(value)))
    it.setData(Qt.ItemDataRole.UserRole, value)
    it.setFlags(it.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return it


class CompareWidget(TaskWidget):
    task = "compare"
    layer_types = ("points", "labels")

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.form.labelForField(self.image).setText("prediction")
        for w in (self.model, self.device):  # not used here
            self.form.labelForField(w).hide()
            w.hide()
        self.mpp.setToolTip("microns per pixel of the prediction layer; 'from file' uses its metadata")
        self.annotation = LayerPicker(napari_viewer, self.layer_types)
        self.form.addRow("annotation", self.annotation)
        self.radius = QDoubleSpinBox()
        self.radius.setRange(0.1, 100.0)
        self.radius.setDecimals(2)
        self.radius.setValue(3.3)
        self.radius.setSuffix(" µm")
        self.radius.setToolTip("largest distance of a match (points); 3.3 µm = 6 px at 0.55 µm/px")
        self.form.addRow("match radius", self.radius)
        self.iou = QDoubleSpinBox()
        self.iou.setRange(0.05, 0.95)
        self.iou.setSingleStep(0.05)
        self.iou.setValue(0.5)
        self.form.addRow("IoU (labels)", self.iou)
        self.run_btn.setText("Compare")
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["class", "precision", "recall", "F1", "support"])
        self.table.verticalHeader().hide()
        self.extra.addWidget(self.table)
        self.confusion_label = QLabel("confusion of matched cells (rows: annotated, columns: predicted)")
        self.confusion_label.setWordWrap(True)
        self.extra.addWidget(self.confusion_label)
        self.confusion = QTableWidget(0, 0)
        self.extra.addWidget(self.confusion)
        nav = QHBoxLayout()
        self.prev_btn, self.next_btn = QPushButton("◀ Previous error"), QPushButton("Next error ▶")
        self.prev_btn.clicked.connect(lambda: self.step_error(-1))
        self.next_btn.clicked.connect(lambda: self.step_error(+1))
        nav.addWidget(self.prev_btn)
        nav.addWidget(self.next_btn)
        self.extra.addLayout(nav)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.extra.addWidget(self.error_label)
        self.errors: list = []
        self.error_index = -1
        self.error_layers: list = []
        self.result = None
        self._ref = None

    # ----------------------------------------------------------------- job
    def job(self):
        from ..backend.errors import InputError
        from ..layers import points_from_layer_data

        pred, gt = self.image.layer(), self.annotation.layer()
        if pred is None or gt is None:
            raise InputError("pick a prediction layer and an annotation layer (both Points or both Labels)")
        if pred is gt:
            raise InputError("prediction and annotation are the same layer; pick two different layers")
        kinds = {type(pred).__name__, type(gt).__name__}
        if len(kinds) != 1:
            raise InputError(f"'{pred.name}' is {type(pred).__name__} and '{gt.name}' is {type(gt).__name__}: "
                             "compare Points with Points or Labels with Labels")
        self._ref = pred
        if type(pred).__name__ == "Labels":
            from ..backend.compare import compare_labels, label_errors

            p = np.asarray(pred.data[0] if pred.multiscale else pred.data)
            g = np.asarray(gt.data[0] if gt.multiscale else gt.data)
            iou = self.iou.value()

            def fn_labels(progress, cancel):
                res = compare_labels(p, g, iou)
                res["errors"] = label_errors(p, g, iou)
                return res

            return fn_labels, self._show_labels
        mpp = layer_mpp(pred, self.mpp.value())
        if mpp is None:
            raise InputError(f"'{pred.name}': microns per pixel unknown; set mpp to compare with a radius in µm")
        md = dict(pred.metadata)
        md["mpp"] = mpp
        p_pts = points_from_layer_data(pred.data, pred.features, md)
        g_pts = points_from_layer_data(gt.data, gt.features, gt.metadata)
        g_yx = to_pixels_of(gt, pred)
        g_names = [g_pts.classes[k] for k in g_pts.labels]
        classes = [str(c) for c in (pred.metadata or {}).get("classes") or p_pts.classes]
        radius = self.radius.value()

        def fn_points(progress, cancel):
            from ..backend.compare import compare_points

            return compare_points(p_pts, (g_yx, g_names), radius, mpp, classes=classes)

        return fn_points, self._show_points

    # ----------------------------------------------------------------- results
    def _clear_error_layers(self):
        for ly in self.error_layers:
            if ly in self.viewer.layers:
                self.viewer.layers.remove(ly)
        self.error_layers = []

    def _add_points(self, yx, name, symbol, color, size, features=None, border=None):
        ref = self._ref
        ly = self.viewer.add_points(np.asarray(yx, np.float32).reshape(-1, 2), name=name, symbol=symbol,
                                    face_color=color, border_color=border or color, border_width=0.15,
                                    size=size, scale=tuple(ref.scale[-2:]), translate=tuple(ref.translate[-2:]),
                                    features=features, metadata={"pathreview": "evaluation"})
        self.error_layers.append(ly)
        return ly

    def _marker_size(self) -> float:
        mpp = layer_mpp(self._ref, self.mpp.value()) if self._ref is not None else None
        return max(3.0, 2.2 * self.radius.value() / mpp) if mpp else 8.0

    def _show_points(self, res):
        self.result = res
        base = self._ref.name
        self._clear_error_layers()
        size = self._marker_size()
        self._add_points(res.pred_yx[res.tp_pred], f"{base}: true positives", "disc", COLORS["tp"], size * 0.5)
        self._add_points(res.pred_yx[res.fp], f"{base}: false positives", "x", COLORS["fp"], size)
        self._add_points(res.gt_yx[res.fn], f"{base}: missed", "ring", COLORS["fn"], size)
        if len(res.segments):
            vec = np.stack([res.segments[:, 0], res.segments[:, 1] - res.segments[:, 0]], 1)
            vly = self.viewer.add_vectors(vec, name=f"{base}: matches", edge_color=COLORS["match"],
                                          edge_width=max(0.5, size * 0.08), scale=tuple(self._ref.scale[-2:]),
                                          translate=tuple(self._ref.translate[-2:]), vector_style="line",
                                          metadata={"pathreview": "evaluation"})
            self.error_layers.append(vly)
        k = res.wrong_class
        cls = np.array(res.classes + [""], dtype=object)
        feats = {"predicted": cls[res.pred_labels[res.tp_pred[k]]], "annotated": cls[res.gt_labels[res.tp_gt[k]]]}
        self._add_points(res.gt_yx[res.tp_gt[k]], f"{base}: wrong class", "square", [0, 0, 0, 0], size * 1.3,
                         features=feats, border=COLORS["class"])
        self.viewer.layers.selection.active = self._ref
        self._fill_table(res.table_rows())
        c = np.asarray(res.metrics["confusion"])
        self.confusion.setRowCount(len(res.classes))
        self.confusion.setColumnCount(len(res.classes))
        self.confusion.setHorizontalHeaderLabels(list(res.classes))
        self.confusion.setVerticalHeaderLabels(list(res.classes))
        for i in range(len(res.classes)):
            for j in range(len(res.classes)):
                self.confusion.setItem(i, j, _item(int(c[i, j])))
        self.confusion.setVisible(True)
        self.confusion_label.setVisible(True)
        self._set_errors(res.errors)
        d = res.metrics["detection"]
        self.status.setText(f"{len(res.tp_pred)} matched, {len(res.fp)} false positives, {len(res.fn)} missed, "
                            f"{len(res.wrong_class)} wrong class; detection F1 {d['f1']:.3f}, "
                            f"mF1 {res.metrics['mF1']:.3f}")

    def _show_labels(self, res):
        self.result = res
        base = self._ref.name
        self._clear_error_layers()
        rows = [(k, None, None, float(res[k]), None) for k in ("dice", "aji", "pq", "dq", "sq")]
        rows += [(k, None, None, None, int(res[k])) for k in ("tp", "fp", "fn", "n_pred", "n_gt")]
        self._fill_table(rows, header=["metric", "", "", "value", "count"])
        self.confusion.setVisible(False)
        self.confusion_label.setVisible(False)
        errs = res["errors"]
        size = 12.0
        self._add_points([e.yx for e in errs if e.kind == "fp"], f"{base}: unmatched predicted", "x",
                         COLORS["fp"], size)
        self._add_points([e.yx for e in errs if e.kind == "fn"], f"{base}: missed", "ring", COLORS["fn"], size)
        self.viewer.layers.selection.active = self._ref
        self._set_errors(errs)
        self.status.setText(f"Dice {res['dice']:.3f}, AJI {res['aji']:.3f}, PQ {res['pq']:.3f}")

    def _fill_table(self, rows, header=("class", "precision", "recall", "F1", "support")):
        self.table.setHorizontalHeaderLabels(list(header))
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                self.table.setItem(i, j, _item(v))
        self.table.resizeColumnsToContents()

    def table_values(self) -> dict:
        """{row name: {column header: value}} of the metrics table (exact values, not the rounded text)."""
        heads = [self.table.horizontalHeaderItem(j).text() for j in range(self.table.columnCount())]
        out = {}
        for i in range(self.table.rowCount()):
            name = self.table.item(i, 0).text()
            out[name] = {heads[j]: self.table.item(i, j).data(Qt.ItemDataRole.UserRole)
                         for j in range(1, self.table.columnCount())}
        return out

    # ----------------------------------------------------------------- errors
    def _set_errors(self, errors):
        self.errors, self.error_index = list(errors), -1
        self.next_btn.setEnabled(bool(self.errors))
        self.prev_btn.setEnabled(bool(self.errors))
        self.error_label.setText(f"{len(self.errors)} errors to review" if self.errors else "no errors")

    def step_error(self, step: int = 1):
        """Centre the camera on the next (step=+1) or previous (-1) error; returns the error or None."""
        if not self.errors or self._ref is None:
            return None
        self.error_index = (self.error_index + step) % len(self.errors)
        e = self.errors[self.error_index]
        scale, tr = np.asarray(self._ref.scale[-2:]), np.asarray(self._ref.translate[-2:])
        world = np.asarray(e.yx) * scale + tr
        cam = self.viewer.camera
        cam.center = tuple(float(v) for v in world)
        field = 30.0 * self._marker_size() * float(scale.mean())  # ~ 30 markers across
        canvas = getattr(self.viewer, "_canvas_size", (600, 600))
        want = min(canvas) / max(field, 1e-9)
        if cam.zoom < want:
            cam.zoom = want
        self.error_label.setText(f"error {self.error_index + 1}/{len(self.errors)}: {e.describe()} "
                                 f"at row {e.yx[0]:.0f}, col {e.yx[1]:.0f}")
        return e
