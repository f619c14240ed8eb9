"""Draw the UnStar Studio icon and write every size the Mac and Linux launchers want.

The icon: a gold star on a deep indigo tile whose right side dissolves into drifting pixels, a fact being forgotten.
Each size is drawn as vectors at its own resolution (sharper than scaling one bitmap), with fewer and larger
pixels at launcher sizes so the motif still reads at 16 px.

    python scripts/make_icons.py            # writes resources/icon.png, resources/icons/*.png, the .icns
    python scripts/make_icons.py --out DIR  # the same files under DIR (tests use this)

Needs only PySide6 (QPainter on an offscreen QGuiApplication). The .icns container is written here: an 'icns'
header, then one chunk per size (type, length, PNG bytes), the layout iconutil produces for PNG icons.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANVAS = 1024  # design units; every size is drawn by scaling the painter

SOURCE_ICON = "resources/icon.png"
ICNS_FILE = "resources/UnStarStudio.icns"
LINUX_ICON_DIR = "resources/icons"
LINUX_ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)

# (chunk type, pixel size): 1x and 2x PNG entries as iconutil writes them (macOS 10.8+ reads all of these).
ICNS_CHUNKS = (
    ("icp4", 16), ("icp5", 32), ("ic11", 32), ("ic12", 64), ("ic07", 128), ("ic13", 256),
    ("ic08", 256), ("ic14", 512), ("ic09", 512), ("ic10", 1024),
)

# Where the star is cut: points past this line (along DRIFT) are being erased and drift away.
CUT_POINT = (585.0, 505.0)
DRIFT = (0.86, -0.51)  # unit vector, up and to the right
DUST_LIMIT = 860.0  # drifting pixels stay this far inside the tile's right and top edges


def linux_icon_name(size: int) -> str:
    return f"unstar-studio-{size}.png"


def _star_polygon(cx: float, cy: float, outer: float, inner: float):
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QPolygonF

    points = []
    for i in range(10):
        radius = outer if i % 2 == 0 else inner
        angle = -math.pi / 2 + i * math.pi / 5
        points.append(QPointF(cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return QPolygonF(points)


def _rounded_star_path(cx: float, cy: float, outer: float, inner: float, rounding: float):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QPainterPath, QPainterPathStroker

    core = QPainterPath()
    core.addPolygon(_star_polygon(cx, cy, outer, inner))
    core.closeSubpath()
    stroker = QPainterPathStroker()
    stroker.setWidth(rounding)
    stroker.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    return stroker.createStroke(core).united(core).simplified()


def _half_plane(erased: bool, offset: float = 0.0):
    """A large polygon covering the kept (or the erased) side of the cut line moved `offset` along DRIFT."""
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QPainterPath, QPolygonF

    (dx, dy) = DRIFT
    px, py = CUT_POINT[0] + dx * offset, CUT_POINT[1] + dy * offset
    tx, ty = -dy, dx  # along the cut
    far = 4 * CANVAS
    sign = 1 if erased else -1
    corners = [
        (px + tx * far, py + ty * far),
        (px - tx * far, py - ty * far),
        (px - tx * far + sign * dx * far, py - ty * far + sign * dy * far),
        (px + tx * far + sign * dx * far, py + ty * far + sign * dy * far),
    ]
    path = QPainterPath()
    path.addPolygon(QPolygonF([QPointF(x, y) for x, y in corners]))
    path.closeSubpath()
    return path


def _past_cut(x: float, y: float) -> float:
    return (x - CUT_POINT[0]) * DRIFT[0] + (y - CUT_POINT[1]) * DRIFT[1]


def _draw_tile(painter):
    """Paint the rounded tile (macOS icon grid: 824 of 1024 units) and return its outline."""
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QColor, QLinearGradient, QPainterPath, QRadialGradient

    margin, radius = 100.0, 185.0
    body = QRectF(margin, margin, CANVAS - 2 * margin, CANVAS - 2 * margin)
    painter.setPen(Qt.PenStyle.NoPen)
    for i in range(12):  # soft drop shadow below the tile: stacked translucent tiles, wider and fainter
        grow = 1.6 * i
        painter.setBrush(QColor(0, 0, 0, 8))
        painter.drawRoundedRect(body.adjusted(-grow, 10 - grow / 2, grow, 10 + 1.5 * grow), radius + grow, radius + grow)
    base = QLinearGradient(QPointF(body.left(), body.top()), QPointF(body.right(), body.bottom()))
    base.setColorAt(0.0, QColor("#3b2a8f"))
    base.setColorAt(0.55, QColor("#1e1b5a"))
    base.setColorAt(1.0, QColor("#0c0f2e"))
    painter.setBrush(base)
    painter.drawRoundedRect(body, radius, radius)
    glow = QRadialGradient(QPointF(500, 520), 420)
    glow.setColorAt(0.0, QColor(150, 110, 255, 120))
    glow.setColorAt(1.0, QColor(150, 110, 255, 0))
    painter.setBrush(glow)
    painter.drawRoundedRect(body, radius, radius)
    sheen = QLinearGradient(QPointF(0, body.top()), QPointF(0, body.top() + 260))
    sheen.setColorAt(0.0, QColor(255, 255, 255, 34))
    sheen.setColorAt(1.0, QColor(255, 255, 255, 0))
    painter.setBrush(sheen)
    painter.drawRoundedRect(body, radius, radius)
    outline = QPainterPath()
    outline.addRoundedRect(body, radius, radius)
    return outline


def _gold_brush(top: float, bottom: float):
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QColor, QLinearGradient

    gold = QLinearGradient(QPointF(0, top), QPointF(0, bottom))
    gold.setColorAt(0.0, QColor("#fff1b8"))
    gold.setColorAt(0.35, QColor("#ffd25e"))
    gold.setColorAt(1.0, QColor("#ff9a1f"))
    return gold


def _dissolve(star, cell: float, rng: random.Random):
    """Split the star at the cut into a solid part and pixels: (solid path, [(x, y, size, alpha, drifted)]).

    The star is laid on a square grid; cells before the cut stay solid, cells past it become pixels that thin out,
    shrink and drift further the deeper they lie, so the edge reads as a staircase dissolving into dust.
    """
    from PySide6.QtCore import QPointF, QRectF
    from PySide6.QtGui import QPainterPath

    box = star.boundingRect()
    reach = max(_past_cut(box.right(), box.top()), _past_cut(box.right(), box.bottom()), 1.0)
    solid_cells = QPainterPath()
    pixels = []
    y = box.top()
    while y < box.bottom():
        x = box.left()
        while x < box.right():
            rect = QRectF(x, y, cell, cell)
            cx, cy = x + cell / 2, y + cell / 2
            depth = _past_cut(cx, cy)
            if not star.intersects(rect):
                pass
            elif depth <= 0:
                solid_cells.addRect(rect)
            else:
                fade = min(depth / reach, 1.0)
                if rng.random() < 1.0 - 0.8 * fade**0.8:  # fewer pixels the further from the star
                    push = 230 * fade**1.6 + 30 * fade * rng.random()
                    side = (rng.random() - 0.5) * 60 * fade
                    px = cx + DRIFT[0] * push - DRIFT[1] * side
                    py = cy + DRIFT[1] * push + DRIFT[0] * side
                    size = cell * (0.9 - 0.5 * fade) * (0.85 + 0.15 * rng.random())
                    if px + size / 2 < DUST_LIMIT and py - size / 2 > CANVAS - DUST_LIMIT:
                        pixels.append((px, py, size, int(255 * max(1.0 - fade, 0.0) ** 0.9), push > 4))
            x += cell
        y += cell
    solid = star.intersected(_half_plane(erased=False, offset=-cell).united(solid_cells))
    return solid, pixels


def render_icon(size: int):
    """The icon as a QImage of size x size (ARGB32, premultiplied)."""
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPen

    detailed = size >= 64
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.scale(size / CANVAS, size / CANVAS)
    tile = _draw_tile(painter)
    painter.setClipPath(tile)

    star = _rounded_star_path(490, 548, 312, 136, 44)
    box = star.boundingRect()
    cell = 34.0 if detailed else 92.0
    solid, pixels = _dissolve(star, cell, random.Random(11))

    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(10, 6, 40, 110))  # the star's shadow on the tile
    painter.drawPath(solid.translated(0, 16))
    gold = _gold_brush(box.top(), box.bottom())
    painter.setBrush(gold)
    painter.drawPath(solid)

    if detailed:  # where the star was: a faint dashed outline
        pen = QPen(QColor(255, 236, 180, 80), 8, Qt.PenStyle.DashLine, Qt.PenCapStyle.RoundCap)
        pen.setDashPattern([2.0, 2.8])
        painter.save()
        painter.setClipPath(_half_plane(erased=True, offset=cell), Qt.ClipOperation.IntersectClip)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(star)
        painter.restore()

    painter.setPen(Qt.PenStyle.NoPen)
    for px, py, side, alpha, drifted in pixels:
        square = QPainterPath()
        square.addRoundedRect(QRectF(px - side / 2, py - side / 2, side, side), side * 0.16, side * 0.16)
        if not drifted:  # pixels still in place keep the star's outline
            square = square.intersected(star)
        painter.setOpacity(alpha / 255)
        painter.setBrush(gold)
        painter.drawPath(square)
    painter.setOpacity(1.0)
    painter.end()
    return image


def png_bytes(image) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise RuntimeError("Qt could not encode the icon as PNG (is the PNG image plugin missing?).")
    buffer.close()
    return bytes(data.data())


def icns_container(pngs: dict[int, bytes]) -> bytes:
    """An .icns file: b'icns' + total length, then (type, length incl. 8-byte header, PNG data) per chunk."""
    chunks = b"".join(
        kind.encode("ascii") + struct.pack(">I", 8 + len(pngs[px])) + pngs[px] for kind, px in ICNS_CHUNKS
    )
    return b"icns" + struct.pack(">I", 8 + len(chunks)) + chunks


def write_icons(out: Path) -> list[Path]:
    """Render every size and write the source PNG, the Linux PNGs and the .icns under `out`; returns the paths."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841  (Qt needs one for painting)
    sizes = sorted({px for _, px in ICNS_CHUNKS} | set(LINUX_ICON_SIZES) | {CANVAS})
    pngs = {px: png_bytes(render_icon(px)) for px in sizes}
    written = [out / SOURCE_ICON, out / ICNS_FILE]
    (out / LINUX_ICON_DIR).mkdir(parents=True, exist_ok=True)
    (out / SOURCE_ICON).write_bytes(pngs[CANVAS])
    (out / ICNS_FILE).write_bytes(icns_container(pngs))
    for px in LINUX_ICON_SIZES:
        path = out / LINUX_ICON_DIR / linux_icon_name(px)
        path.write_bytes(pngs[px])
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the UnStar Studio icon at every size (PNG + .icns).")
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write resources/... under (default: repo)")
    args = parser.parse_args(argv)
    for path in write_icons(args.out):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
