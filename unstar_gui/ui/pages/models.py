"""Models: the catalog and the local models in one table; download, import (dialog or drag and drop), remove; and
the GGUF models LM Studio and Ollama already have on this computer, each one click from imported."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QThread, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout,
                               QWidget)

from ...engine.events import DownloadProgress, Progress
from ...engine.fsutil import dir_size, free_bytes, human_bytes
from ..dialogs import confirm, show_error
from ..services import Services
from ..tables import Column, RowsTable
from .common import PageHeader, format_eta


def estimate_memory(size_bytes: int, quantization: str, on_cpu: bool) -> int:
    """Memory to load and fine-tune: on CPU weights are dequantized to float32, so 4-bit weights grow 8x."""
    if not size_bytes:
        return 0
    match = re.match(r"(\d+)bit", quantization or "")
    bits = int(match.group(1)) if match else (32 if "32" in (quantization or "") else 16)
    weights = size_bytes * (32 / bits) if on_cpu else size_bytes
    return int(weights * 1.25)  # activations, LoRA state and the optimizer


class FindModelsThread(QThread):
    """Looks for LM Studio and Ollama models beside the MLX worker, not on it: it only reads file headers, so it
    need not wait behind an hour-long forget job, and it never touches MLX."""

    found = Signal(object)  # list[FoundModel], or the exception that stopped the search

    def run(self) -> None:
        from ...engine.discover import discover

        try:
            self.found.emit(discover())
        except Exception as exc:  # an unreadable models folder: shown to the user, never a dead thread
            self.found.emit(exc)


class ModelsPage(QWidget):
    models_changed = Signal()

    COLUMNS = [
        Column("name", "Model", stretch=True),
        Column("kind", "Architecture"),
        Column("size", "Size"),
        Column("memory", "Memory needed"),
        Column("status", "Installed"),
        Column("source", "Notes", stretch=True),
    ]
    FOUND_COLUMNS = [
        Column("app", "Found in"),
        Column("name", "Model", stretch=True),
        Column("kind", "Architecture"),
        Column("size", "Size"),
        Column("status", "Status", stretch=True),
        Column("action", ""),
    ]

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.download_task = None
        self.busy_task = None
        self.find_thread: FindModelsThread | None = None
        self.found_models: list[Any] = []  # FoundModel entries of the last search
        self.setAcceptDrops(True)

        self.table = RowsTable(self.COLUMNS)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.doubleClicked.connect(lambda _: self.download_selected())

        self.download_btn = QPushButton("Download")
        self.download_btn.clicked.connect(self.download_selected)
        self.import_file_btn = QPushButton("Import GGUF file…")
        self.import_file_btn.clicked.connect(self.import_file_dialog)
        self.import_folder_btn = QPushButton("Import model folder…")
        self.import_folder_btn.clicked.connect(self.import_folder_dialog)
        self.default_btn = QPushButton("Make default")
        self.default_btn.clicked.connect(self.make_default)
        self.remove_btn = QPushButton("Remove…")
        self.remove_btn.clicked.connect(self.remove_selected)
        self.find_btn = QPushButton("Find models on this computer")
        self.find_btn.setToolTip("Look for GGUF models LM Studio and Ollama have downloaded, to import them.")
        self.find_btn.clicked.connect(self.find_models)
        buttons = QHBoxLayout()
        for b in (self.download_btn, self.import_file_btn, self.import_folder_btn, self.find_btn, self.default_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.remove_btn)

        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress_label = QLabel("")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel_current)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.progress_label)
        progress_row.addWidget(self.cancel_btn)
        self.progress_box = QWidget()
        self.progress_box.setLayout(progress_row)
        self.progress_box.setVisible(False)

        self.disk_label = QLabel("")
        self.disk_label.setObjectName("hint")
        drop_hint = QLabel("Drop a .gguf file or a model folder anywhere on this page to import it.")
        drop_hint.setObjectName("hint")

        self.found_table = RowsTable(self.FOUND_COLUMNS)
        self.found_label = QLabel("")
        self.found_label.setObjectName("hint")
        self.found_label.setWordWrap(True)
        found_layout = QVBoxLayout()
        found_layout.setContentsMargins(0, 0, 0, 0)
        found_layout.addWidget(QLabel("<b>Models found on this computer</b> (LM Studio and Ollama)"))
        found_layout.addWidget(self.found_label)
        found_layout.addWidget(self.found_table)
        self.found_box = QWidget()
        self.found_box.setLayout(found_layout)
        self.found_box.setVisible(False)

        layout = QVBoxLayout(self)
        layout.addWidget(PageHeader("Models", "Models you can make forget: installed ones and ones to download."))
        layout.addLayout(buttons)
        layout.addWidget(self.table, 2)
        layout.addWidget(self.found_box, 1)
        layout.addWidget(self.progress_box)
        footer = QHBoxLayout()
        footer.addWidget(drop_hint)
        footer.addStretch(1)
        footer.addWidget(self.disk_label)
        layout.addLayout(footer)
        self._update_buttons()

    # listing -----------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Catalog entries first (installed or not), then local models the catalog does not know."""
        store = self.services.store()
        from ...engine.catalog import catalog_entries

        entries = catalog_entries(store)
        known = {e.id for e in entries}
        records = {r.id: r for r in store.list()}
        default = store.default()
        rows: list[dict[str, Any]] = []
        for e in entries:
            rec = records.get(e.id)
            size = rec.size_bytes if rec is not None else e.size_bytes
            status = "installed" if e.installed else (
                f"partly downloaded ({human_bytes(e.partial_bytes)})" if e.partial_bytes else "not installed")
            rows.append({"name": e.name, "id": e.id, "kind": f"{e.architecture} · {e.parameters_b:g}B",
                         "size": human_bytes(size), "memory": f"{e.run_memory_gb:g} GB run · "
                                                           f"{e.train_memory_gb:g} GB train",
                         "status": status, "source": e.notes or e.repo or "embedded", "installed": e.installed,
                         "registered": rec is not None, "entry": e})
        for rec in sorted(records.values(), key=lambda r: r.id):
            if rec.id in known:
                continue
            mem = estimate_memory(rec.size_bytes, rec.quantization, self.services.on_cpu)
            rows.append({"name": rec.id, "id": rec.id, "kind": f"{rec.architecture} · {rec.quantization}",
                         "size": human_bytes(rec.size_bytes), "memory": f"about {human_bytes(mem)} train",
                         "status": "installed", "source": rec.source, "installed": True, "registered": True})
        for row in rows:
            row["default"] = default is not None and row["id"] == default.id
            if row["default"]:
                row["name"] += "  (default)"
        self.table.set_rows(rows)
        free = free_bytes(store.root if store.root.exists() else store.root.parent)
        used = dir_size(store.models_dir) if store.models_dir.exists() else 0
        self.disk_label.setText(f"Models use {human_bytes(used)} · {human_bytes(free)} free in {store.root}")
        self._show_found_rows()
        self._update_buttons()

    def _update_buttons(self) -> None:
        row = self.table.selected_row()
        busy = self.busy_task is not None or self.download_task is not None
        self.download_btn.setEnabled(bool(row) and not row.get("installed") and not busy)
        self.remove_btn.setEnabled(bool(row) and bool(row.get("registered")) and not busy)
        self.default_btn.setEnabled(bool(row) and bool(row.get("registered")) and not row.get("default"))
        self.import_file_btn.setEnabled(not busy)
        self.import_folder_btn.setEnabled(not busy)
        self.find_btn.setEnabled(self.find_thread is None)
        for r in range(self.found_table.rowCount()):
            button = self.found_table.cellWidget(r, len(self.FOUND_COLUMNS) - 1)
            if button is not None:
                button.setEnabled(self.busy_task is None)

    # download ----------------------------------------------------------------------------------------------------
    def download_selected(self) -> None:
        row = self.table.selected_row()
        if not row or row.get("installed") or self.download_task is not None:
            return
        entry = row["entry"]

        def download(ctx):
            from ...engine.hub import download_model

            return download_model(entry, store=ctx.store, cancel=ctx.cancel)

        self._show_progress(f"Downloading {row['name']}…")
        self.download_task = self.services.worker.submit(
            download, name=f"download {row['name']}", on_event=self._on_progress,
            on_result=lambda _: self._done(f"{row['name']} is installed."), on_error=self._failed,
            on_cancelled=lambda: self._done("Download cancelled; starting it again resumes it."),
            on_done=self._clear_download)
        self._update_buttons()

    def _on_progress(self, event: Any) -> None:
        if isinstance(event, DownloadProgress):
            total = max(event.total_bytes, 1)
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * event.done_bytes / total))
            self.progress.setFormat(f"{human_bytes(event.done_bytes)} of {human_bytes(event.total_bytes)}")
            self.progress_label.setText(f"{human_bytes(event.speed_bps)}/s · {format_eta(event.eta_s)}")
        elif isinstance(event, Progress):
            self.progress.setRange(0, 1000 if event.total else 0)
            if event.total:
                self.progress.setValue(int(1000 * event.done / event.total))
            self.progress.setFormat(event.message or "%p%")
            self.progress_label.setText(format_eta(event.eta_s))

    def _clear_download(self) -> None:
        self.download_task = None
        self._update_buttons()

    # import / remove ---------------------------------------------------------------------------------------------
    def import_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a GGUF model", str(Path.home()),
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.import_path(Path(path))

    def import_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Import a model folder (MLX or Hugging Face safetensors)",
                                                str(Path.home()))
        if path:
            self.import_path(Path(path))

    def import_path(self, path: Path, model_id: str | None = None) -> None:
        if self.busy_task is not None:
            return

        def import_model(ctx):
            from ...engine.importers import import_any

            return import_any(ctx.store, path, model_id)

        self._show_progress(f"Importing {path.name}… (converting can take a minute)", cancellable=False)
        self.progress.setRange(0, 0)
        self.busy_task = self.services.worker.submit(
            import_model, name=f"import {path.name}", on_result=lambda rec: self._done(f"Imported {rec.id}."),
            on_error=self._failed, on_done=self._clear_busy)
        self._update_buttons()

    # models LM Studio and Ollama already have ---------------------------------------------------------------------
    def find_models(self) -> None:
        if self.find_thread is not None:
            return
        self.found_box.setVisible(True)
        self.found_label.setText("Looking in LM Studio's and Ollama's model folders…")
        self.find_thread = FindModelsThread(self)
        self.find_thread.found.connect(self._on_found)
        # Quitting mid-search must not destroy a running QThread (Qt aborts the process then).
        QCoreApplication.instance().aboutToQuit.connect(self.find_thread.wait)
        self.find_thread.start()
        self._update_buttons()

    def _on_found(self, result: Any) -> None:
        self.find_thread.wait()
        self.find_thread = None
        if isinstance(result, Exception):
            self.found_models = []
            self.found_label.setText(f"The search stopped: {result}")
        else:
            self.found_models = list(result)
            self.found_label.setText(self._found_summary())
        self._show_found_rows()
        self._update_buttons()

    def _found_summary(self) -> str:
        from ...engine.discover import lmstudio_models_root, ollama_models_dir

        where = f"Searched {lmstudio_models_root()} (LM Studio) and {ollama_models_dir()} (Ollama)."
        if not self.found_models:
            return f"No models found. {where}"
        ready = sum(m.importable for m in self.found_models)
        return f"{len(self.found_models)} found, {ready} UnStar can import. {where}"

    def _show_found_rows(self) -> None:
        """The last search's results, with what is imported now (an import may have just finished)."""
        # An empty table under "No models found" reads as a broken page: show it only when it has rows.
        self.found_table.setVisible(bool(self.found_models))
        self.layout().setStretchFactor(self.found_box, 1 if self.found_models else 0)
        if not self.found_models:
            self.found_table.set_rows([])
            return
        from ...engine.discover import imported_ids

        imported = imported_ids(self.found_models, self.services.store())
        rows = [{"app": m.app, "name": m.name, "path": m.path, "suggested_id": m.suggested_id,
                 "kind": f"{m.architecture} · {m.quantization}" if m.architecture else "",
                 "size": human_bytes(m.size_bytes) if m.size_bytes else "",
                 "status": (f"imported as {imported[m.path]}" if m.path in imported
                            else "ready to import" if m.importable else m.reason),
                 "can_import": m.importable and m.path not in imported} for m in self.found_models]
        self.found_table.set_rows(rows)
        for r, row in enumerate(rows):
            if row["can_import"]:
                button = QPushButton("Import")
                button.setToolTip(f"Import {row['path']}")
                button.clicked.connect(lambda _=False, row=row: self.import_found(row))
                self.found_table.setCellWidget(r, len(self.FOUND_COLUMNS) - 1, button)

    def import_found(self, row: dict[str, Any]) -> None:
        """Import one found model through the same path as a dropped file, under the name its app gives it."""
        self.import_path(Path(row["path"]), self.services.store().unique_id(row["suggested_id"]))

    def remove_selected(self) -> None:
        row = self.table.selected_row()
        if not row or not row.get("registered"):
            return
        if not confirm(self, "Remove model", f"Remove {row['id']}? Its files in the data folder are deleted; "
                                             "jobs made with it keep their adapters."):
            return
        model_id = row["id"]
        self._show_progress(f"Removing {model_id}…", cancellable=False)
        self.progress.setRange(0, 0)
        self.busy_task = self.services.worker.submit(
            lambda ctx: ctx.store.remove(model_id), name=f"remove {model_id}",
            on_result=lambda _: self._done(f"Removed {model_id}."), on_error=self._failed, on_done=self._clear_busy)
        self._update_buttons()

    def make_default(self) -> None:
        row = self.table.selected_row()
        if row and row.get("registered"):
            self.services.store().set_default(row["id"])
            self.refresh()
            self.models_changed.emit()

    def _clear_busy(self) -> None:
        self.busy_task = None
        self._update_buttons()

    # drag and drop -----------------------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.import_path(paths[0])

    # shared ------------------------------------------------------------------------------------------------------
    def _show_progress(self, text: str, cancellable: bool = True) -> None:
        self.progress_box.setVisible(True)
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat(text)
        self.progress_label.setText("")
        self.cancel_btn.setVisible(cancellable)

    def _done(self, message: str) -> None:
        self.progress_box.setVisible(False)
        window = self.window()
        if hasattr(window, "statusBar"):
            window.statusBar().showMessage(message, 8000)
        self.refresh()
        self.models_changed.emit()

    def _failed(self, info) -> None:
        self.progress_box.setVisible(False)
        show_error(self, info)
        self.refresh()

    def cancel_current(self) -> bool:
        if self.download_task is not None:
            self.download_task.cancel()
            return True
        return False
