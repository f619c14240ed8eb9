"""`unstar-studio`: start the desktop app (the launcher has already re-exec'd with an optimized BLAS on Linux)."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
ORG, APP = "UnStar", "UnStar Studio"


def app_icon() -> QIcon:
    """resources/icon.png when present; Qt's default window icon otherwise."""
    for name in ("icon.png", "icon.icns"):
        path = RESOURCES / name
        if path.exists():
            return QIcon(str(path))
    return QIcon()


def stylesheet() -> str:
    path = RESOURCES / "style.qss"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def create_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setOrganizationName(ORG)
    app.setApplicationName(APP)
    app.setApplicationDisplayName(APP)
    app.setWindowIcon(app_icon())
    app.setStyleSheet(stylesheet())
    return app


def main() -> int:
    app = create_app()
    from .main_window import MainWindow
    from .services import apply_saved_data_dir

    prefs = QSettings(ORG, APP)
    apply_saved_data_dir(prefs)
    window = MainWindow(prefs=prefs)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
