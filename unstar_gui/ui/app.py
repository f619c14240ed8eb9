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
    _stop_on_signals(window)
    return app.exec()


def _stop_on_signals(window) -> None:
    """Python handles signals only when the interpreter runs: a timer gives it a moment every 200 ms while Qt's
    event loop waits."""
    import signal

    from PySide6.QtCore import QTimer

    def handler(signum, frame) -> None:
        QTimer.singleShot(0, window.stop_for_signal)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handler)
    window._signal_tick = QTimer(window)
    window._signal_tick.timeout.connect(lambda: None)
    window._signal_tick.start(200)


if __name__ == "__main__":
    sys.exit(main())
