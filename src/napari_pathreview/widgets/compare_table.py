"""The Compare dock's tables: a read-only table sized to its rows and columns, its cells, and the
hover texts and row names of its metrics."""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QHeaderView, QSizePolicy, QTableWidget, QTableWidgetItem

TIPS = {  # what each Labels metric means, shown on hover
    "dice": "overlap of the nucleus foregrounds, nuclei not told apart: 2|P∩A| / (|P| + |A|)",
    "aji": "Aggregated Jaccard Index (Kumar et al. 2017): each annotated nucleus with its best-overlapping "
    "prediction; split, merged and extra nuclei lower it",
    "pq": "panoptic quality = DQ × SQ (Kirillov et al. 2019)",
    "dq": "detection quality: matched / (matched + ½ false positives + ½ missed), an F1 of nuclei",
    "sq": "segmentation quality: mean IoU of the matched nuclei (how well their outlines agree)",
    "tp": "predicted and annotated nuclei paired with IoU above the threshold",
    "fp": "predicted nuclei without an annotated match (marked x)",
    "fn": "annotated nuclei without a predicted match (marked with a ring)",
}

HEADER_TIPS = {  # the Points table's columns, on hover
    "precision": "of the cells predicted as the class, the share matched to an annotated cell of that class",
    "recall": "of the annotated cells of the class, the share found with that class",
    "F1": "harmonic mean of precision and recall",
    "annotated": "annotated cells of the class (unlabelled annotations count for the detection row only)",
    "predicted": "cells the prediction gave the class",
    "matched": "annotated cells of the class matched by a prediction of the same class "
    "(detection row: matched whatever the class)",
}

LABEL_ROWS = (  # key, what the table shows
    ("dice", "Dice (foreground)"),
    ("aji", "AJI"),
    ("pq", "PQ (panoptic quality)"),
    ("dq", "DQ (detection quality)"),
    ("sq", "SQ (mean IoU of matches)"),
    ("tp", "matched nuclei"),
    ("fp", "false positives (predicted, unmatched)"),
    ("fn", "missed (annotated, unmatched)"),
    ("n_pred", "predicted nuclei"),
    ("n_gt", "annotated nuclei"),
)


class FitTable(QTableWidget):
    """A read-only table that asks for the height of all its rows (so a comparison's ~10 rows show without
    scrolling) but can be squeezed to a few rows when the dock is short: it scrolls then, instead of the
    rows below it being drawn over it. The first column fits its text, the others share the width."""

    MIN_ROWS = 4

    def __init__(self):
        super().__init__(0, 0)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.horizontalHeader().setStyleSheet("QHeaderView::section { padding: 2px 4px; }")

    def _height(self, rows: int) -> int:
        head = 0 if self.horizontalHeader().isHidden() else self.horizontalHeader().sizeHint().height()
        rows_h = sum(self.rowHeight(i) for i in range(min(rows, self.rowCount())))
        return rows_h + head + 2 * self.frameWidth() + 2

    def sizeHint(self):
        hint = super().sizeHint()
        return QSize(hint.width(), self._height(self.rowCount()))

    def minimumSizeHint(self):
        hint = super().minimumSizeHint()
        return QSize(hint.width(), self._height(self.MIN_ROWS))

    def fit_columns(self):
        """Columns as wide as their text (headers included); the last takes what width is left."""
        head = self.horizontalHeader()
        n = self.columnCount()
        head.setMinimumSectionSize(24)
        head.setDefaultSectionSize(24)  # a stretched last section is at least this wide (Qt's default: 100 px)
        head.setStretchLastSection(False)
        for j in range(n):
            head.setSectionResizeMode(
                j, QHeaderView.ResizeMode.ResizeToContents if j < n - 1 else QHeaderView.ResizeMode.Stretch
            )
        # as wide as its columns (up to a bound): the dock widens rather than hiding a column behind a scroll bar
        width = sum(head.sectionSize(j) for j in range(n - 1)) + 2 * self.frameWidth()
        if n:
            width += max(self.sizeHintForColumn(n - 1), head.sectionSizeHint(n - 1))
        width += self.verticalHeader().sizeHint().width() if not self.verticalHeader().isHidden() else 0
        width += self.verticalScrollBar().sizeHint().width()  # room for it, should the dock be short
        self.setMinimumWidth(min(width + 4, 640))
        self.updateGeometry()


def table_item(value, fmt="{:.3f}", key=None):
    """A read-only table cell showing ``value`` (floats to 3 decimals) and holding it exactly (UserRole);
    ``key``: what :meth:`CompareWidget.table_values` files the row under (first column)."""
    it = QTableWidgetItem("" if value is None else (fmt.format(value) if isinstance(value, float) else str(value)))
    it.setData(Qt.ItemDataRole.UserRole, value if key is None else key)
    it.setFlags(it.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return it


class MetricsTable(FitTable):
    """The metrics table: each cell shows its value rounded and holds it exactly (``table_item``), the
    first cell of a row holding the key the row is filed under."""

    def fill(self, rows, header, keyed: bool) -> None:
        """Rows of values under ``header``; ``keyed``: each row starts with the key :meth:`values` files
        it under, then the name shown (with its hover text from ``TIPS``)."""
        self.clear()
        self.setColumnCount(len(header))
        self.setHorizontalHeaderLabels(list(header))
        for j, name in enumerate(header):
            if name in HEADER_TIPS:
                self.horizontalHeaderItem(j).setToolTip(HEADER_TIPS[name])
        self.setRowCount(len(rows))
        for i, row in enumerate(rows):
            key, row = (row[0], row[1:]) if keyed else (row[0], row)
            first = table_item(row[0], key=key)
            if keyed and key in TIPS:
                first.setToolTip(TIPS[key])
            self.setItem(i, 0, first)
            for j, v in enumerate(row[1:], 1):
                self.setItem(i, j, table_item(v))
        self.fit_columns()

    def headers(self) -> list[str]:
        return [self.horizontalHeaderItem(j).text() for j in range(self.columnCount())]

    def values(self) -> dict:
        """{row key: {column header: exact value}}."""
        heads = self.headers()
        out = {}
        for i in range(self.rowCount()):
            key = self.item(i, 0).data(Qt.ItemDataRole.UserRole)
            out[key] = {heads[j]: self.item(i, j).data(Qt.ItemDataRole.UserRole) for j in range(1, self.columnCount())}
        return out

    def csv_cells(self):
        """Each row as CSV text cells: the first column's text, then exact values (floats as ``repr``)."""
        for i in range(self.rowCount()):
            cells = [self.item(i, 0).text()]
            for j in range(1, self.columnCount()):
                v = self.item(i, j).data(Qt.ItemDataRole.UserRole)
                cells.append("" if v is None else repr(float(v)) if isinstance(v, float) else str(v))
            yield cells
