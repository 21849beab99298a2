"""'Compare with annotations' dock widget: a prediction layer vs an annotation layer.

Points vs Points: per-class precision / recall / F1 and counts, detection and mean F1, the confusion
matrix of matched cells (the numbers ``pathreview evaluate detector`` gives on the same image), and the
errors as layers: true positives, false positives (x), missed cells (ring), match lines (Vectors) and
wrong-class matches (squares). Labels vs Labels: Dice, AJI and PQ as ``pathreview evaluate segmenter``
scores one image (``seg_metrics.score_pair``), unmatched instances as errors.
"Next error" / "Previous error" centre the camera on each error in reading order; "Export table (CSV)"
writes the metrics table.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton

from .base import LayerPicker, TaskWidget, layer_kind, layer_mpp
from .compare_table import LABEL_ROWS, FitTable, MetricsTable, table_item
from .forms import Param, ParamForm
from .layers import points_from_layer_data, to_pixels_of  # widgets/train.py imports to_pixels_of from here

#: error-layer colours, chosen away from every class colour (``backend.weights.DEFAULT_COLORS``,
#: ``PALETTE`` and the shipped cards: red, green, blue, orange, purple, cyan, magenta, lime, yellow, grey),
#: so an error marker never reads as a class: true positives white, false positives black, missed cells
#: spring green, wrong-class squares and match lines pale yellow / white.
COLORS = {
    "tp": "#ffffff",
    "fp": "#000000",
    "fn": "#00fa9a",
    "class": "#fffac8",
    "match": "#ffffff",
    "current": "#ffffff",
}
#: border of the markers (contrast on pale and dark tissue alike)
BORDERS = {"tp": "#000000", "fp": "#ffffff", "fn": "#000000"}

#: the key to the error markers, shown in the dock under the error line
MARKER_KEY = {
    "points": "markers: white disc = matched cell · black × = false positive · green ring = missed cell · "
    "pale square = matched, wrong class · pale line = a match · white diamond = error under review",
    "labels": "markers: black square = predicted nucleus with no match (false positive) · green circle = "
    "annotated nucleus with no match (missed) · white diamond = error under review",
}


@dataclass(frozen=True)
class Matching:
    """When a prediction matches an annotation: points within ``radius_um`` µm, nuclei with IoU above ``iou``."""

    radius_um: float = 3.3
    iou: float = 0.5


PARAMS = [
    Param(
        "radius_um",
        "match radius",
        "largest distance of a match (points); 3.3 µm = 6 px at 0.55 µm/px",
        {"min": 0.1, "max": 100.0, "step": 0.1},
        decimals=2,
        suffix=" µm",
    ),
    Param(
        "iou",
        "match IoU above",
        "two nuclei match when their IoU is above this (panoptic quality; pathreview evaluate segmenter uses 0.5)",
        {"min": 0.05, "max": 0.95, "step": 0.05},
    ),
]


def _units(layer) -> dict:
    """``{"units": ...}`` of ``layer``'s last two axes (µm when its image's mpp is known), for layers drawn
    over it: mixed units make napari warn and drop them."""
    units = getattr(layer, "units", None)
    return {"units": tuple(units)[-2:]} if units is not None else {}


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
        self.params = ParamForm("compare", Matching, PARAMS)  # remembered across sessions
        self.params.add_rows(self.form)
        self.image.currentTextChanged.connect(self._show_rows)
        self.run_btn.setText("Compare")
        self.table = MetricsTable()
        self.extra.addWidget(self.table)
        self.export_btn = QPushButton("Export table (CSV)…")
        self.export_btn.setToolTip("write the metrics table (exact values) to a CSV file")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(lambda: self.export_csv())
        self.extra.addWidget(self.export_btn)
        self.confusion_label = QLabel("confusion of matched cells (rows: annotated, columns: predicted)")
        self.confusion_label.setWordWrap(True)
        self.extra.addWidget(self.confusion_label)
        self.confusion = FitTable()
        self.confusion.verticalHeader().show()
        self.extra.addWidget(self.confusion)
        nav = QHBoxLayout()
        self.prev_btn, self.next_btn = QPushButton("◀ Previous error"), QPushButton("Next error ▶")
        self.prev_btn.clicked.connect(lambda: self.step_error(-1))
        self.next_btn.clicked.connect(lambda: self.step_error(+1))
        self.prev_btn.setEnabled(False)
        self.next_btn.setEnabled(False)
        nav.addWidget(self.prev_btn)
        nav.addWidget(self.next_btn)
        self.extra.addLayout(nav)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.extra.addWidget(self.error_label)
        self.marker_key = QLabel("")  # what each marker on the canvas means
        self.marker_key.setWordWrap(True)
        self.extra.addWidget(self.marker_key)
        self.confusion.setVisible(False)
        self.confusion_label.setVisible(False)
        self.errors: list = []
        self.error_index = -1
        self.error_layers: list = []
        self._current = None
        self.result = None
        self._ref = None
        self._compared = ("", "", "")  # prediction, annotation, match criterion of the table shown
        self._show_rows()

    def _set_row_visible(self, field, visible: bool):
        label = self.form.labelForField(field)
        if label is not None:
            label.setVisible(visible)
        field.setVisible(visible)

    def _show_rows(self, *_):
        """Show the settings of the prediction's kind: radius and mpp for Points, IoU for Labels."""
        kind = layer_kind(self.image.layer())
        for w in (self.params["radius_um"].native, self.mpp):
            self._set_row_visible(w, kind != "labels")
        self._set_row_visible(self.params["iou"].native, kind != "points")

    # ----------------------------------------------------------------- job
    def job(self):
        from ..backend.errors import InputError

        pred, gt = self.image.layer(), self.annotation.layer()
        if pred is None or gt is None:
            raise InputError("pick a prediction layer and an annotation layer (both Points or both Labels)")
        if pred.name == gt.name:
            raise InputError("prediction and annotation are the same layer; pick two different layers")
        pk, gk = layer_kind(pred), layer_kind(gt)
        if pk != gk:
            raise InputError(
                f"'{pred.name}' is {pk.capitalize()} and '{gt.name}' is {gk.capitalize()}: "
                "compare Points with Points or Labels with Labels"
            )
        self._ref = pred
        self._align_pixel_annotation(gt, pred)
        if pk == "labels":
            return self._labels_job(pred, gt)
        if len(gt.data) == 0:
            raise InputError(f"'{gt.name}' has no points: nothing to compare with; pick the annotation layer")
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
        radius = self.params["radius_um"].value
        self._compared = (pred.name, gt.name, f"match radius {radius:g} µm")

        def fn_points(progress, cancel):
            from ..backend.compare import compare_points

            return compare_points(p_pts, (g_yx, g_names), radius, mpp, classes=classes)

        return fn_points, self._show_points

    def _align_pixel_annotation(self, gt, pred) -> bool:
        """An annotation without a pixel size drawn in plain pixels (scale 1, no offset; a points CSV or a
        mask PNG) beside a prediction shown in µm (its image's mpp typed or read): the annotation's
        coordinates are pixels of that image, so it takes the prediction's scale and offset (and mpp) and
        lines up, in the viewer and in the comparison. True when it changed; a notification says so."""
        from napari.utils.notifications import show_info

        if (gt.metadata or {}).get("mpp"):
            return False
        g_scale, g_tr = np.asarray(gt.scale[-2:], float), np.asarray(gt.translate[-2:], float)
        p_scale, p_tr = np.asarray(pred.scale[-2:], float), np.asarray(pred.translate[-2:], float)
        if not (np.allclose(g_scale, 1) and np.allclose(g_tr, 0)) or (np.allclose(p_scale, 1) and np.allclose(p_tr, 0)):
            return False
        scale, translate = np.array(gt.scale, float), np.array(gt.translate, float)
        scale[-2:], translate[-2:] = p_scale, p_tr
        gt.scale, gt.translate = scale, translate
        units = _units(pred).get("units")
        if units is not None and len(gt.units) == len(pred.units):
            gt.units = tuple(pred.units)
        mpp = layer_mpp(pred, self.mpp.value() if layer_kind(pred) == "points" else 0.0)
        if mpp:
            gt.metadata = {**dict(gt.metadata or {}), "mpp": mpp}
        show_info(
            f"'{gt.name}' had no pixel size: its coordinates are taken as pixels of '{pred.name}'"
            + (f" ({mpp:g} µm/px)" if mpp else "")
            + " and it is now drawn over it"
        )
        return True

    def _labels_job(self, pred, gt):
        from ..backend.errors import InputError

        p = np.asarray(pred.data[0] if pred.multiscale else pred.data)
        g = np.asarray(gt.data[0] if gt.multiscale else gt.data)
        if p.shape != g.shape:
            raise InputError(
                f"'{pred.name}' is {'×'.join(map(str, p.shape))} pixels and '{gt.name}' "
                f"{'×'.join(map(str, g.shape))}: compare masks of the same image at the same "
                "resolution"
            )
        if p.ndim != 2:
            raise InputError(f"'{pred.name}' has {p.ndim} dimensions: compare 2-D masks")
        if not np.any(g):
            raise InputError(f"'{gt.name}' has no labelled pixels: nothing to compare with; pick the annotation mask")
        iou = self.params["iou"].value
        self._compared = (pred.name, gt.name, f"IoU above {iou:g}")

        def fn_labels(progress, cancel):
            from scipy import ndimage

            from ..backend.compare import compare_labels, label_errors

            res = compare_labels(p, g, iou)
            # a binary annotation has no instances: its connected regions stand in for them
            g_inst = ndimage.label(g != 0)[0] if res["binary"] else g
            res["errors"] = label_errors(p, g_inst, iou)
            return res

        return fn_labels, self._show_labels

    # ----------------------------------------------------------------- results
    def _clear_error_layers(self):
        for ly in self.error_layers:
            if ly in self.viewer.layers:
                self.viewer.layers.remove(ly)
        self.error_layers = []

    def _add_points(self, yx, name, symbol, color, size, features=None, border=None, border_width=0.1):
        ref = self._ref
        ly = self.viewer.add_points(
            np.asarray(yx, np.float32).reshape(-1, 2),
            name=name,
            symbol=symbol,
            face_color=color,
            border_color=border or color,
            border_width=border_width,
            size=size,
            scale=tuple(ref.scale[-2:]),
            translate=tuple(ref.translate[-2:]),
            features=features,
            metadata={"pathreview": "evaluation"},
            **_units(ref),
        )
        self.error_layers.append(ly)
        return ly

    def _marker_size(self) -> float:
        if self._ref is not None and layer_kind(self._ref) == "labels":
            d = [e.diameter for e in self.errors if e.diameter]
            return 1.4 * float(np.median(d)) if d else 12.0
        mpp = layer_mpp(self._ref, self.mpp.value()) if self._ref is not None else None
        return max(3.0, 2.2 * self.params["radius_um"].value / mpp) if mpp else 8.0

    def _show_points(self, res):
        self.result = res
        base = self._ref.name
        self._clear_error_layers()
        size = self._marker_size()
        self._add_points(
            res.pred_yx[res.tp_pred], f"{base}: true positives", "disc", COLORS["tp"], size * 0.5, border=BORDERS["tp"]
        )
        self._add_points(res.pred_yx[res.fp], f"{base}: false positives", "x", COLORS["fp"], size, border=BORDERS["fp"])
        self._add_points(res.gt_yx[res.fn], f"{base}: missed", "ring", COLORS["fn"], size, border=BORDERS["fn"])
        if len(res.segments):
            vec = np.stack([res.segments[:, 0], res.segments[:, 1] - res.segments[:, 0]], 1)
            vly = self.viewer.add_vectors(
                vec,
                name=f"{base}: matches",
                edge_color=COLORS["match"],
                edge_width=max(0.5, size * 0.08),
                scale=tuple(self._ref.scale[-2:]),
                translate=tuple(self._ref.translate[-2:]),
                vector_style="line",
                metadata={"pathreview": "evaluation"},
                **_units(self._ref),
            )
            self.error_layers.append(vly)
        k = res.wrong_class
        cls = np.array(res.classes + [""], dtype=object)
        feats = {"predicted": cls[res.pred_labels[res.tp_pred[k]]], "annotated": cls[res.gt_labels[res.tp_gt[k]]]}
        self._add_points(
            res.gt_yx[res.tp_gt[k]],
            f"{base}: wrong class",
            "square",
            [0, 0, 0, 0],
            size * 1.3,
            features=feats,
            border=COLORS["class"],
        )
        self.marker_key.setText(MARKER_KEY["points"])
        self.viewer.layers.selection.active = self._ref
        self._fill_table(res.table_rows(), header=res.TABLE_HEADER)
        c = np.asarray(res.metrics["confusion"])
        self.confusion.setRowCount(len(res.classes))
        self.confusion.setColumnCount(len(res.classes))
        self.confusion.setHorizontalHeaderLabels(list(res.classes))
        self.confusion.setVerticalHeaderLabels(list(res.classes))
        for i in range(len(res.classes)):
            for j in range(len(res.classes)):
                self.confusion.setItem(i, j, table_item(int(c[i, j])))
        self.confusion.fit_columns()
        self.confusion.setVisible(True)
        self.confusion_label.setVisible(True)
        self._set_errors(res.errors)
        d = res.metrics["detection"]
        self.status.setText(
            f"{len(res.tp_pred)} matched, {len(res.fp)} false positives, {len(res.fn)} missed, "
            f"{len(res.wrong_class)} wrong class; detection F1 {d['f1']:.3f}, "
            f"mF1 {res.metrics['mF1']:.3f}"
        )

    def _show_labels(self, res):
        self.result = res
        base = self._ref.name
        self._clear_error_layers()
        rows = [(key, label, res[key]) for key, label in LABEL_ROWS if res[key] is not None]
        self._fill_table(rows, header=("metric", "value"), keyed=True)
        self.confusion.setVisible(False)
        self.confusion_label.setVisible(False)
        errs = res["errors"]
        self._set_errors(errs)
        # thin outlines around each unmatched nucleus (its own size), so the nucleus itself stays visible:
        # false positives in black squares, missed nuclei in spring-green circles
        for kind, name, symbol in (("fp", "false positives", "square"), ("fn", "missed", "disc")):
            sel = [e for e in errs if e.kind == kind]
            sizes = np.array([1.5 * e.diameter + 4 for e in sel]) if sel else self._marker_size()
            self._add_points(
                [e.yx for e in sel],
                f"{base}: {name}",
                symbol,
                [0, 0, 0, 0],
                sizes,
                border=COLORS[kind],
                border_width=0.07,
            )
        self.marker_key.setText(MARKER_KEY["labels"])
        self.viewer.layers.selection.active = self._ref
        if res["binary"]:
            self.status.setText(
                f"Dice {res['dice']:.3f} (the annotation is a binary mask: no instances, so no AJI or PQ)"
            )
        else:
            self.status.setText(
                f"Dice {res['dice']:.3f}, AJI {res['aji']:.3f}, PQ {res['pq']:.3f}: "
                f"{res['tp']} of {res['n_gt']} annotated nuclei matched, {res['fp']} false "
                f"positives, {res['fn']} missed"
            )

    def _fill_table(self, rows, header=("class", "precision", "recall", "F1", "support"), keyed=False):
        """Rows of values under ``header``; ``keyed``: each row starts with the key :meth:`table_values`
        files it under, then the name shown."""
        self.table.fill(rows, header, keyed)
        self.export_btn.setEnabled(bool(rows))

    def table_values(self) -> dict:
        """{row key: {column header: value}} of the metrics table (exact values, not the rounded text).
        Points: keyed by class name ("detection", "mF1 (classes)", "weighted F1"); Labels: by metric key
        ("dice", "aji", "pq", "dq", "sq", "tp", "fp", "fn", "n_pred", "n_gt")."""
        return self.table.values()

    # ----------------------------------------------------------------- export
    def export_csv(self, path=None):
        """Write the metrics table to ``path`` (asks for a file when None): the table's columns with exact
        values, then ``prediction``, ``annotation`` and ``criterion`` (match radius or IoU). Written under
        a temporary name and moved into place. Returns the path, or None when nothing was written."""
        from napari.utils.notifications import show_error, show_info

        from ..backend.atomic import atomic_path

        if self.table.rowCount() == 0:
            show_error("nothing to export: press Compare first")
            return None
        pred, gt, criterion = self._compared
        if path is None:
            default = f"{pred}-vs-{gt}-metrics.csv".replace("/", "_").replace(" ", "_")
            path, _ = QFileDialog.getSaveFileName(self, "Export metrics table", default, "CSV (*.csv)")
            if not path:
                return None
        try:
            with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(self.table.headers() + ["prediction", "annotation", "criterion"])
                for cells in self.table.csv_cells():
                    w.writerow(cells + [pred, gt, criterion])
        except OSError as e:
            show_error(f"could not write {path}: {e.strerror or e}")
            return None
        show_info(f"metrics table written to {path}")
        self.status.setText(f"table exported to {path}")
        return str(path)

    # ----------------------------------------------------------------- errors
    def _set_errors(self, errors):
        self.errors, self.error_index = list(errors), -1
        self._current = None
        self.next_btn.setEnabled(bool(self.errors))
        self.prev_btn.setEnabled(bool(self.errors))
        self.error_label.setText(
            f"{len(self.errors)} errors to review: press Next error" if self.errors else "no errors"
        )

    def _mark_current(self, e):
        """A white diamond around the error under review (one point, moved at each step), so it stands out
        among the other markers at the centre of the view."""
        yx = np.asarray([e.yx], np.float32)
        size = 2.2 * e.diameter + 8 if e.diameter else 2.0 * self._marker_size()
        ly = getattr(self, "_current", None)
        if ly is not None and ly in self.viewer.layers:
            ly.data = yx
            ly.size = size
        else:
            ly = self._add_points(
                yx,
                f"{self._ref.name}: current error",
                "diamond",
                [0, 0, 0, 0],
                size,
                border=COLORS["current"],
                border_width=0.06,
            )
            self._current = ly
            self.viewer.layers.selection.active = self._ref

    def step_error(self, step: int = 1):
        """Centre the camera on the next (step=+1) or previous (-1) error; returns the error or None."""
        if not self.errors or self._ref is None:
            return None
        self.error_index = (self.error_index + step) % len(self.errors)
        e = self.errors[self.error_index]
        scale, tr = np.asarray(self._ref.scale[-2:]), np.asarray(self._ref.translate[-2:])
        world = np.asarray(e.yx) * scale + tr
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9: viewer.camera is deprecated
        cam = scene.camera if scene is not None else self.viewer.camera
        cam.center = tuple(float(v) for v in world)
        self._mark_current(e)
        per_view = 12.0 if layer_kind(self._ref) == "labels" else 30.0  # ~ a dozen nuclei / 30 cell markers across
        field = per_view * self._marker_size() * float(scale.mean())
        canvas = tuple(self.viewer.canvas.size)  # public (height, width); no private access through the proxy
        want = min(canvas) / max(field, 1e-9)
        if cam.zoom < want:
            cam.zoom = want
        self.error_label.setText(
            f"error {self.error_index + 1}/{len(self.errors)}: {e.describe()} at row {e.yx[0]:.0f}, col {e.yx[1]:.0f}"
        )
        return e
