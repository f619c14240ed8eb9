"""Charts (QtCharts): forget and retain loss per step and efficacy and retention per round, live during training;
the causal trace of a finished job on the Results page."""

from __future__ import annotations

from PySide6.QtCharts import QBarSet, QChart, QChartView, QLineSeries, QStackedBarSeries, QValueAxis
from PySide6.QtCore import QMargins, QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPen

FORGET_COLOR = QColor("#d9480f")
RETAIN_COLOR = QColor("#1c7ed6")


class _LiveChart(QChartView):
    """A line chart whose axes grow with the data."""

    def __init__(self, title: str, x_title: str, y_title: str, series: list[tuple[str, QColor]],
                 y_range: tuple[float, float] | None = None) -> None:
        chart = QChart()
        chart.setTitle(title)
        chart.setMargins(QMargins(4, 4, 4, 4))
        chart.legend().setAlignment(Qt.AlignmentFlag.AlignBottom)
        super().__init__(chart)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumHeight(220)
        self.x_axis = QValueAxis()
        self.x_axis.setTitleText(x_title)
        self.x_axis.setLabelFormat("%d")
        self.y_axis = QValueAxis()
        self.y_axis.setTitleText(y_title)
        chart.addAxis(self.x_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(self.y_axis, Qt.AlignmentFlag.AlignLeft)
        self._fixed_y = y_range
        self.series: dict[str, QLineSeries] = {}
        for name, color in series:
            s = QLineSeries()
            s.setName(name)
            s.setPen(QPen(color, 2))
            s.setPointsVisible(True)  # a single round is a point, not a line
            chart.addSeries(s)
            s.attachAxis(self.x_axis)
            s.attachAxis(self.y_axis)
            self.series[name] = s
        self.clear()

    def clear(self) -> None:
        for s in self.series.values():
            s.clear()
        self._x_max = 1.0
        self._y_min, self._y_max = self._fixed_y or (0.0, 1.0)
        self._apply_ranges()

    def add_point(self, name: str, x: float, y: float) -> None:
        if y != y:  # NaN: a step without that loss term
            return
        self.series[name].append(QPointF(x, y))
        self._x_max = max(self._x_max, x)
        if self._fixed_y is None:
            self._y_min, self._y_max = min(self._y_min, y), max(self._y_max, y * 1.05)
        self._apply_ranges()

    def drop_from(self, x: float) -> None:
        """Remove every point at `x` or later (a resumed job redoes those steps)."""
        for s in self.series.values():
            points = s.points()
            keep = sum(1 for p in points if p.x() < x)
            if keep < len(points):
                s.removePoints(keep, len(points) - keep)
        self._x_max = max([1.0] + [p.x() for s in self.series.values() for p in s.points()])
        self._apply_ranges()

    def _apply_ranges(self) -> None:
        self.x_axis.setRange(0, self._x_max)
        self.x_axis.applyNiceNumbers()  # whole-number ticks for steps
        self.y_axis.setRange(self._y_min, self._y_max)

    def points(self, name: str) -> list[tuple[float, float]]:
        return [(p.x(), p.y()) for p in self.series[name].points()]


class LossChart(_LiveChart):
    def __init__(self) -> None:
        super().__init__("Training loss", "step", "loss",
                         [("forget loss", FORGET_COLOR), ("retain loss", RETAIN_COLOR)])

    def add_step(self, step: int, forget_loss: float, retain_loss: float) -> None:
        self.add_point("forget loss", step, forget_loss)
        self.add_point("retain loss", step, retain_loss)


class RoundChart(_LiveChart):
    """Shares in percent; rounds numbered from 1 for people (the engine counts from 0)."""

    def __init__(self) -> None:
        super().__init__("Probes after each round", "round", "share of probes", [
            ("efficacy (forgotten)", FORGET_COLOR), ("retention (kept)", RETAIN_COLOR)], y_range=(0.0, 100.0))
        self.y_axis.setLabelFormat("%.0f%%")
        self.y_axis.setTickCount(5)

    def add_round(self, round_no: int, efficacy: float, retention: float) -> None:
        self.add_point("efficacy (forgotten)", round_no + 1, 100 * efficacy)
        self.add_point("retention (kept)", round_no + 1, 100 * retention)

    def _apply_ranges(self) -> None:
        rounds = max(int(self._x_max), 1)
        self.x_axis.setRange(0, rounds + 1)
        self.x_axis.setTickCount(rounds + 2)
        self.y_axis.setRange(self._y_min, self._y_max)


class TraceChart(QChartView):
    """The causal trace of a finished job: per block, how much of the answer restoring that block's MLP output brings
    back (engine/tracing.py); the blocks the job changed in the forget colour, the others grey."""

    def __init__(self) -> None:
        chart = QChart()
        chart.setTitle("Where the model looks the fact up: the answer restored per block (causal tracing)")
        chart.setMargins(QMargins(4, 4, 4, 4))
        chart.legend().setAlignment(Qt.AlignmentFlag.AlignBottom)
        super().__init__(chart)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumHeight(200)
        self.changed = QBarSet("changed by this job")
        self.changed.setColor(FORGET_COLOR)
        self.other = QBarSet("other blocks")
        self.other.setColor(QColor("#adb5bd"))
        self.bars = QStackedBarSeries()  # each block's bar sits in one of the two sets (0 in the other)
        self.bars.setBarWidth(0.8)
        self.bars.append(self.changed)
        self.bars.append(self.other)
        chart.addSeries(self.bars)
        # A value axis, not a category one: 30 block names do not fit under the bars, every 5th does.
        self.x_axis = QValueAxis()
        self.x_axis.setTitleText("block")
        self.x_axis.setLabelFormat("%d")
        self.x_axis.setTickType(QValueAxis.TickType.TicksDynamic)
        self.x_axis.setTickAnchor(0)
        self.y_axis = QValueAxis()
        self.y_axis.setLabelFormat("%.0f%%")
        self.y_axis.setTickCount(3)
        chart.addAxis(self.x_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(self.y_axis, Qt.AlignmentFlag.AlignLeft)
        self.bars.attachAxis(self.x_axis)
        self.bars.attachAxis(self.y_axis)

    def set_trace(self, effects: list[float], changed: set[int] | frozenset[int] | tuple[int, ...]) -> None:
        """effects: per block, the recovered probability (0-1; may be slightly negative: noise)."""
        for s in (self.changed, self.other):
            s.remove(0, s.count())
        changed = set(changed)
        for i, e in enumerate(effects):
            value = 100 * max(float(e), 0.0)
            self.changed.append(value if i in changed else 0.0)
            self.other.append(0.0 if i in changed else value)
        n = max(len(effects), 1)
        self.x_axis.setRange(-0.5, n - 0.5)
        self.x_axis.setTickInterval(5 if n > 10 else 1)
        top = max([100 * max(float(e), 0.0) for e in effects] + [1.0])
        self.y_axis.setRange(0.0, top * 1.1)

    def values(self) -> tuple[list[float], list[float]]:
        """(changed, other) bar heights, in percent: what the chart shows."""
        return ([self.changed.at(i) for i in range(self.changed.count())],
                [self.other.at(i) for i in range(self.other.count())])
