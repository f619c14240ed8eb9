"""The main script of UnStar Studio.app (py2app runs it as __main__); also `python scripts/app_main.py` from a checkout.

Inside the bundle, PySide6 is a verbatim folder in Contents/Resources/lib/pythonX.Y, and py2app's PySide6 recipe
writes a qt.conf pointing Qt at an empty Resources/qt_plugins. Pointing QT_PLUGIN_PATH at PySide6's own plugins
folder lets Qt find the cocoa platform plugin next to the frameworks it links against.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def point_qt_at_bundled_plugins() -> None:
    if getattr(sys, "frozen", None) != "macosx_app":  # set by py2app's bootstrap; a checkout needs nothing
        return
    spec = importlib.util.find_spec("PySide6")  # finds the folder without loading Qt
    if spec is None or not spec.submodule_search_locations:
        return
    plugins = Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins"
    os.environ.setdefault("QT_PLUGIN_PATH", str(plugins))
    os.environ.setdefault("QT_QPA_PLATFORM_PLUGIN_PATH", str(plugins / "platforms"))


if __name__ == "__main__":
    point_qt_at_bundled_plugins()
    from unstar_gui.launcher import gui_main

    gui_main()
