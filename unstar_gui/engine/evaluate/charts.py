"""Small horizontal bar charts as inline SVG strings: the HTML report stays one self-contained file, no plotting
library needed."""

from __future__ import annotations

from html import escape
from typing import Callable, Sequence

GOOD, WARN, BAD, GREY, BLUE = "#2e7d32", "#ef6c00", "#c62828", "#9e9e9e", "#1565c0"
Row = tuple[str, "float | None", str]  # label, value (None = not measured), colour


def percent(v: float) -> str:
    return f"{v:.0%}"


def hbar_chart(rows: Sequence[Row], *, max_value: float = 1.0, fmt: Callable[[float], str] = percent,
               width: int = 620, label_width: int = 250, bar_height: int = 18, title: str = "") -> str:
    """One bar per row, label on the left, value on the right; a row without a value says "n/a"."""
    gap, top = 8, 26 if title else 6
    plot = width - label_width - 60
    height = top + len(rows) * (bar_height + gap) + 4
    parts = [_open(width, height, title)]
    if title:
        parts.append(f'<text x="0" y="16" font-weight="bold">{escape(title)}</text>')
    for i, (label, value, colour) in enumerate(rows):
        y = top + i * (bar_height + gap)
        parts.append(_label(label, label_width, y, bar_height))
        parts.append(f'<rect x="{label_width}" y="{y}" width="{plot}" height="{bar_height}" fill="#f0f0f0"/>')
        if value is None:
            parts.append(_value("n/a", label_width + 6, y, bar_height, GREY))
            continue
        w = max(0.0, min(1.0, value / max_value if max_value else 0.0)) * plot
        parts.append(f'<rect x="{label_width}" y="{y}" width="{w:.1f}" height="{bar_height}" fill="{colour}"/>')
        parts.append(_value(fmt(value), label_width + plot + 6, y, bar_height, "#222"))
    parts.append("</svg>")
    return "".join(parts)


def paired_hbar_chart(labels: Sequence[str], first: Sequence[float | None], second: Sequence[float | None],
                      legend: tuple[str, str], *, max_value: float = 1.0, fmt: Callable[[float], str] = percent,
                      colours: tuple[str, str] = (GREY, BLUE), width: int = 620, label_width: int = 250,
                      title: str = "") -> str:
    """Two thin bars per label (e.g. before / after), with a legend."""
    bar, gap, top = 12, 10, 44 if title else 24
    plot = width - label_width - 60
    height = top + len(labels) * (2 * bar + gap) + 4
    parts = [_open(width, height, title)]
    if title:
        parts.append(f'<text x="0" y="16" font-weight="bold">{escape(title)}</text>')
    ly, x = top - 16, label_width
    for name, colour in zip(legend, colours):
        parts.append(f'<rect x="{x}" y="{ly}" width="12" height="10" fill="{colour}"/>'
                     f'<text x="{x + 16}" y="{ly + 9}">{escape(name)}</text>')
        x += 16 + 7 * len(name) + 20  # about 7 px per character at 12 px
    for i, label in enumerate(labels):
        y = top + i * (2 * bar + gap)
        parts.append(_label(label, label_width, y, 2 * bar))
        for j, (value, colour) in enumerate(((first[i], colours[0]), (second[i], colours[1]))):
            yy = y + j * bar
            if value is None:
                parts.append(_value("n/a", label_width + 4, yy, bar, GREY, size=10))
                continue
            w = max(0.0, min(1.0, value / max_value if max_value else 0.0)) * plot
            parts.append(f'<rect x="{label_width}" y="{yy}" width="{w:.1f}" height="{bar - 1}" fill="{colour}"/>')
            parts.append(_value(fmt(value), label_width + w + 4, yy, bar, "#222", size=10))
    parts.append("</svg>")
    return "".join(parts)


def _open(width: int, height: int, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title or "chart")}" '
            f'font-family="Helvetica, Arial, sans-serif" font-size="12">')


def _label(text: str, label_width: int, y: float, h: float) -> str:
    short = text if len(text) <= 38 else text[:37] + "…"
    return (f'<text x="{label_width - 8}" y="{y + h / 2 + 4:.1f}" text-anchor="end">'
            f'<title>{escape(text)}</title>{escape(short)}</text>')


def _value(text: str, x: float, y: float, h: float, colour: str, size: int = 12) -> str:
    return (f'<text x="{x:.1f}" y="{y + h / 2 + size / 3:.1f}" fill="{colour}" font-size="{size}">'
            f'{escape(text)}</text>')
