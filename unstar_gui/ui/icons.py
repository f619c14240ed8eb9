"""Sidebar icons drawn with QPainter: no image files to ship, sharp at any size (drawn at 64 px, scaled down).

Each icon is one filled shape with holes, drawn twice: in the accent blue, and in white for a selected sidebar row
(the selection is blue, so a blue icon would vanish there)."""

from __future__ import annotations

import math
from typing import Callable

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPixmap, QPolygonF

SIZE = 64
ACCENT = QColor("#1c7ed6")  # the stylesheet's accent blue: readable on light and dark sidebars
SELECTED = QColor("white")


def painted_icon(shape: Callable[[], QPainterPath]) -> QIcon:
    icon = QIcon()
    for colour, mode in ((ACCENT, QIcon.Mode.Normal), (SELECTED, QIcon.Mode.Selected)):
        icon.addPixmap(_filled(shape(), colour), mode)
    return icon


def _filled(path: QPainterPath, colour: QColor) -> QPixmap:
    pixmap = QPixmap(SIZE, SIZE)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    painter.drawPath(path)
    painter.end()
    return pixmap


def _chat_shape() -> QPainterPath:
    """A speech bubble with a tail at the lower left and three dots cut out: a conversation."""
    bubble = QPainterPath()
    bubble.addRoundedRect(QRectF(4, 6, 56, 42), 11, 11)
    tail = QPainterPath()
    tail.moveTo(14, 44)
    tail.lineTo(10, 60)
    tail.lineTo(30, 46)
    tail.closeSubpath()
    dots = QPainterPath()
    for x in (19, 32, 45):
        dots.addEllipse(QPointF(x, 27), 4.5, 4.5)
    return bubble.united(tail).subtracted(dots)


def _gear_shape() -> QPainterPath:
    """A gear: eight teeth around a ring: settings."""
    centre = QPointF(SIZE / 2, SIZE / 2)
    gear = QPainterPath()
    gear.addEllipse(centre, 20, 20)
    for i in range(8):
        tooth = QPainterPath()
        tooth.addRoundedRect(QRectF(-6, -29, 12, 14), 2, 2)
        angle = math.radians(i * 45)
        cos, sin = math.cos(angle), math.sin(angle)
        # rotate the tooth's polygon about the centre (QPainterPath has no rotate of its own)
        turned = QPainterPath()
        turned.addPolygon(_rotated(tooth.toFillPolygon(), cos, sin, centre))
        gear = gear.united(turned)
    hole = QPainterPath()
    hole.addEllipse(centre, 9, 9)
    return gear.subtracted(hole)


def _rotated(polygon: QPolygonF, cos: float, sin: float, centre: QPointF) -> QPolygonF:
    return QPolygonF([QPointF(centre.x() + pt.x() * cos - pt.y() * sin, centre.y() + pt.x() * sin + pt.y() * cos)
                      for pt in polygon])


def chat_icon() -> QIcon:
    return painted_icon(_chat_shape)


def settings_icon() -> QIcon:
    return painted_icon(_gear_shape)
