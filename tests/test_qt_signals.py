"""Regression: PySide6 6.12.0 on CPython 3.11 aborted ("Fatal Python error: bool_dealloc") once a Signal(bool) or
Signal(object) had carried True/False a few hundred times. The app's worker signals carry objects across threads,
so the installed PySide6 must survive this. It runs in a subprocess: an abort fails this test instead of killing
pytest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, threading
    from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal

    class Emitter(QObject):
        flag = Signal(bool)
        value = Signal(object)

    app = QCoreApplication(sys.argv)
    e = Emitter()
    got = {"flag": 0, "value": 0}
    e.flag.connect(lambda b: got.__setitem__("flag", got["flag"] + 1))
    e.value.connect(lambda v: got.__setitem__("value", got["value"] + 1))
    N = 3000
    for i in range(N):  # direct connections, GUI thread
        e.flag.emit(i % 2 == 0)
        e.value.emit(i % 3 == 0)
        e.value.emit((i, True, False))

    class Worker(QThread):  # queued connections: emitted from another thread, delivered in the main loop
        def run(self):
            for i in range(N):
                e.flag.emit(bool(i % 2))
                e.value.emit(i % 2 == 1)

    w = Worker()
    w.finished.connect(app.quit)
    w.start()
    app.exec()
    w.wait()
    app.processEvents()
    assert got["flag"] == 2 * N, got
    assert got["value"] == 3 * N, got
    print("ok", got)
""")


def test_bool_and_object_signals_survive_many_emits():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.startswith("ok")
