"""The Models page finds the models LM Studio and Ollama already have, and one click imports one (pytest-qt)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from unstar_gui.ui import dialogs  # noqa: E402
from unstar_gui.ui.main_window import PAGES  # noqa: E402

from tests.helpers.gui import WAIT_MS, open_window  # noqa: E402
from tests.test_discover import add_ollama_model, hostile_gguf  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, unstar_home):
    yield from open_window(qtbot)


@pytest.fixture
def home_with_models(tmp_path, tiny_gguf, monkeypatch):
    """A home folder where LM Studio holds the tiny GGUF and a broken file, and Ollama the tiny GGUF as a blob."""
    home = tmp_path / "home"
    lms = home / ".lmstudio" / "models" / "tiny-org" / "Tiny-GGUF"
    lms.mkdir(parents=True)
    (lms / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    (lms / "hostile.gguf").write_bytes(hostile_gguf())
    blob = add_ollama_model(home / ".ollama" / "models", tiny_gguf, "library", "tiny", "latest")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    return {"home": home, "lms_file": lms / "tiny.gguf", "blob": blob}


def test_models_page_finds_lmstudio_and_ollama_models_and_imports_one(qtbot, window, home_with_models,
                                                                      monkeypatch):
    shown: list = []
    monkeypatch.setattr(dialogs.ErrorDialog, "exec", lambda self: shown.append(self.info) or 0)
    page = window.models_page
    window.show_page(PAGES.index("Models"))
    assert not page.found_box.isVisible()

    qtbot.mouseClick(page.find_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.find_thread is None, timeout=WAIT_MS)
    assert page.found_box.isVisible() and "3 found, 2 UnStar can import" in page.found_label.text()
    rows = {r["name"]: r for r in page.found_table.rows()}
    assert sorted(rows) == ["hostile.gguf", "tiny.gguf", "tiny:latest"]
    assert rows["tiny:latest"]["path"] == str(home_with_models["blob"])
    assert rows["tiny.gguf"]["status"] == "ready to import" and rows["tiny.gguf"]["kind"] == "llama · F32"
    assert rows["hostile.gguf"]["status"].startswith("can't read:")
    action = len(page.FOUND_COLUMNS) - 1
    buttons = {page.found_table.item(r, 1).text(): page.found_table.cellWidget(r, action)
               for r in range(page.found_table.rowCount())}
    assert buttons["hostile.gguf"] is None  # nothing to import

    buttons["tiny:latest"].click()
    qtbot.waitUntil(lambda: page.busy_task is None, timeout=WAIT_MS)
    assert not shown, shown
    record = window.services.store().get("tiny-latest")
    assert record.source == f"gguf:{home_with_models['blob']}" and record.architecture == "llama"
    # The list now says it is imported, and offers no second import of it; the table of models lists it.
    rows = {r["name"]: r for r in page.found_table.rows()}
    assert rows["tiny:latest"]["status"] == "imported as tiny-latest"
    row = next(r for r in range(page.found_table.rowCount()) if page.found_table.item(r, 1).text() == "tiny:latest")
    assert page.found_table.cellWidget(row, action) is None
    assert any(r["id"] == "tiny-latest" for r in page.table.rows())
