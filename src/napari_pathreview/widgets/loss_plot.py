"""The Train dock's live plot: the training loss and the task's validation metrics per epoch."""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRect, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

METRIC_NAMES = {
    "loss": "loss",
    "det_f1": "detection F1",
    "weighted_f1": "weighted F1",
    "dice": "Dice",
    "aji": "AJI",
    "mF1": "mean F1",
    "accuracy": "accuracy",
}


class LossPlot(QWidget):
    """A small live plot per epoch: the training loss (left scale, auto) and the task's validation
    metrics (0..1): detector det_f1 / weighted_f1, segmenter dice / aji, enhancer mF1 / weighted_f1,
    classifier accuracy. The first metric of a task is its headline, :attr:`metric_key` (not named
    ``metric``: that is a QPaintDevice virtual Qt calls while painting). The legend names each series in
    words with its last value and wraps to the widget's width; the axes carry their values (loss left,
    metrics 0..1 right); a single epoch is drawn as a level across the plot."""

    SERIES = {
        "detector": (("loss", "#f58231"), ("det_f1", "#46f0f0"), ("weighted_f1", "#f032e6")),
        "segmenter": (("loss", "#f58231"), ("dice", "#46f0f0"), ("aji", "#f032e6")),
        "enhancer": (("loss", "#f58231"), ("mF1", "#46f0f0"), ("weighted_f1", "#f032e6")),
        "classifier": (("loss", "#f58231"), ("accuracy", "#46f0f0")),
    }
    LOSS_ONLY = (("loss", "#f58231"),)  # a task without validation metrics here

    def __init__(self, parent=None, task: str = "detector"):
        super().__init__(parent)
        self.rows: list[dict] = []
        self.task = task
        self.setMinimumHeight(170)

    @property
    def metric_key(self) -> str:
        series = self.series_of()
        return series[1][0] if len(series) > 1 else "loss"

    def series_of(self) -> tuple:
        """(key, colour) of the series the task's plot draws: the loss first."""
        return self.SERIES.get(self.task, self.LOSS_ONLY)

    def set_task(self, task: str):
        self.task = task
        self.clear()

    def clear(self):
        self.rows = []
        self.update()

    def add(self, row: dict):
        self.rows.append(dict(row))
        self.update()

    def series(self, key: str) -> list[float]:
        """The values of ``key`` per epoch (epochs without it, e.g. AJI on binary masks, left out)."""
        return [float(r[key]) for r in self.rows if r.get(key) is not None]

    def label(self, key: str) -> str:
        """A series' legend entry: its name in words and its last value ("weighted F1 0.806")."""
        vals = self.series(key)
        name = METRIC_NAMES.get(key, key)
        return name if not vals else f"{name} {vals[-1]:.4g}" if key == "loss" else f"{name} {vals[-1]:.3f}"

    def legend_items(self, width: int | None = None) -> list[tuple[str, str, QRect]]:
        """(key, text, rectangle) of each legend entry, laid out left to right and wrapped onto a new line
        where the next one would not fit ``width`` (the widget's): no entry is cut off in a narrow dock."""
        fm = self.fontMetrics()
        width = self.width() if width is None else width
        x, y, gap, out = 0, 0, 12, []
        for key, _ in self.series_of():
            text = self.label(key)
            tw = fm.horizontalAdvance(text) + 12  # a colour swatch, then the text
            if x and x + tw > width:
                x, y = 0, y + fm.height()
            out.append((key, text, QRect(x, y, tw, fm.height())))
            x += tw + gap
        return out

    def sizeHint(self):
        return QSize(260, self.minimumHeight())

    def paintEvent(self, _event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = self.fontMetrics()
        w, h = self.width(), self.height()
        colors = dict(self.series_of())
        items = self.legend_items(w)
        for key, text, r in items:  # legend: swatch + name + last value
            p.fillRect(QRect(r.left(), r.top() + fm.height() // 2 - 3, 8, 6), QColor(colors[key]))
            p.setPen(QPen(QColor(colors[key])))
            p.drawText(r.left() + 12, r.top() + fm.ascent(), text)
        loss = self.series("loss")
        if loss:
            lo, hi = min(loss), max(loss)
            lo, hi = (lo - 0.5 * abs(lo) - 1e-3, hi + 0.5 * abs(hi) + 1e-3) if hi - lo < 1e-9 else (lo, hi)
        else:
            lo, hi = 0.0, 1.0
        ticks_l = [f"{hi:.3g}", f"{lo:.3g}"]
        left = max(fm.horizontalAdvance(t) for t in ticks_l) + 6
        right = fm.horizontalAdvance("1.0") + 6
        top = (items[-1][2].bottom() + 1 if items else 0) + fm.height() // 2 + 4
        bottom = fm.height() + 4
        pw, ph = max(1, w - left - right), max(1, h - top - bottom)
        p.setPen(QPen(QColor("#888888")))
        p.drawRect(left, top, pw, ph)
        p.setPen(QPen(QColor(colors["loss"])))  # left axis: the loss (its own range)
        p.drawText(left - 3 - fm.horizontalAdvance(ticks_l[0]), top + fm.ascent() // 2, ticks_l[0])
        p.drawText(left - 3 - fm.horizontalAdvance(ticks_l[1]), top + ph + fm.ascent() // 2, ticks_l[1])
        p.setPen(QPen(QColor("#aaaaaa")))  # right axis: the metrics, 0..1
        p.drawText(left + pw + 3, top + fm.ascent() // 2, "1.0")
        p.drawText(left + pw + 3, top + ph + fm.ascent() // 2, "0")
        n = len(self.rows)
        p.drawText(left, h - 3, "epoch 1" if n == 1 else f"epochs 1–{n}" if n else "epochs")
        x_of = lambda i: left + (pw * i / (n - 1) if n > 1 else pw / 2)
        for key, color in self.series_of():
            idx = [i for i, r in enumerate(self.rows) if r.get(key) is not None]
            vals = [float(self.rows[i][key]) for i in idx]
            if not vals:
                continue
            a, b = (lo, hi) if key == "loss" else (0.0, 1.0)
            pts = [QPointF(x_of(i), top + ph * (1 - (v - a) / (b - a))) for i, v in zip(idx, vals)]
            p.setPen(QPen(QColor(color), 2))
            if n == 1:  # one epoch: its value as a level across the plot (a lone dot reads as nothing)
                p.drawLine(QPointF(left + 1, pts[0].y()), QPointF(left + pw - 1, pts[0].y()))
            elif len(pts) > 1:
                p.drawPolyline(QPolygonF(pts))
            p.setBrush(QColor(color))
            for pt in pts:
                p.drawEllipse(pt, 2.5, 2.5)
            p.setBrush(Qt.BrushStyle.NoBrush)
        p.end()
