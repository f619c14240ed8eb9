"""What the GUI test files share: waits sized for shared, slow machines, the main window, and dialogs that record
instead of blocking. Import only after `pytest.importorskip("pytestqt")`."""

from __future__ import annotations

from typing import Iterator

WAIT_MS = 240_000  # the machines are shared and slow; a real hang still fails
SAMPLES_WAIT_MS = 1_200_000  # writing anti-samples + retain set: minutes on a loaded 2-core machine
# A forget job small enough for the tiny model in a GUI test.
SMALL_JOB = dict(n_paraphrases=4, n_wrong_answers=2, n_neighbours=2, n_general=4, n_general_eval=4,
                 probe_max_tokens=12, batch_size=2, retain_batch_size=2, max_seq_len=64, checkpoint_every=2,
                 early_stop_every=0, scale_sweep=False)


def open_window(qtbot, size: tuple[int, int] | None = None, stop_ms: int = WAIT_MS) -> Iterator:
    """The main window, shown (with the app's stylesheet and icon on pytest-qt's QApplication); on teardown its
    worker thread must stop within `stop_ms`. Use as `yield from open_window(qtbot)` in a fixture."""
    from unstar_gui.ui.app import create_app
    from unstar_gui.ui.main_window import MainWindow

    create_app([])
    w = MainWindow()
    qtbot.addWidget(w)
    if size is not None:
        w.resize(*size)
    w.show()
    yield w
    assert w.services.worker.stop(stop_ms), "the worker thread did not stop"


def patch_dialogs(monkeypatch) -> list:
    """Record error dialogs instead of blocking on them; answer Yes to confirmations."""
    from unstar_gui.ui import dialogs

    shown: list = []
    monkeypatch.setattr(dialogs.ErrorDialog, "exec", lambda self: shown.append(self.info) or 0)
    monkeypatch.setattr(dialogs.QMessageBox, "question", lambda *a, **k: dialogs.QMessageBox.StandardButton.Yes)
    return shown
