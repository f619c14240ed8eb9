"""Settings: data folder, Hugging Face token, training defaults (with reset). Saved with store.save_settings.

Edits are kept until Save; leaving the page (or quitting) with unsaved edits asks whether to save or drop them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
                               QPushButton, QVBoxLayout, QWidget)

from ..services import Services, forget_settings_defaults, training_defaults
from .common import PageHeader, TrainingForm

HUB_TOKEN_KEY = "hf_token"  # read by engine.hub.resolve_token


class SettingsPage(QWidget):
    data_dir_changed = Signal()

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self._saved_state: tuple[str, dict[str, Any]] | None = None  # the form as last loaded or saved
        self.data_dir = QLineEdit()
        self.data_dir.setReadOnly(True)
        change = QPushButton("Change…")
        change.clicked.connect(self.choose_data_dir)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_dir, 1)
        data_row.addWidget(change)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("hf_… (only for gated models; stored in the data folder)")
        general = QGroupBox("General")
        gform = QFormLayout(general)
        gform.addRow("Data folder (models and jobs):", data_row)
        gform.addRow("Hugging Face token:", self.token)

        self.training = TrainingForm("Training defaults for new jobs")

        self.save_btn = QPushButton("Save")
        self.save_btn.setDefault(True)
        self.save_btn.clicked.connect(self.save)
        reset = QPushButton("Reset training defaults")
        reset.clicked.connect(self.reset_defaults)
        self.saved = QLabel("")
        self.saved.setObjectName("hint")
        buttons = QHBoxLayout()
        buttons.addWidget(reset)
        buttons.addStretch(1)
        buttons.addWidget(self.saved)
        buttons.addWidget(self.save_btn)

        layout = QVBoxLayout(self)
        layout.addWidget(PageHeader("Settings"))
        layout.addWidget(general)
        layout.addWidget(self.training)
        layout.addLayout(buttons)
        layout.addStretch(1)

    def refresh(self) -> None:
        """Shown again: reload from disk, unless edits are in progress (reloading would throw them away)."""
        if not self.has_unsaved_changes():
            self.load()

    def load(self) -> None:
        store = self.services.store()
        self.data_dir.setText(str(store.root))
        self.token.setText(str(store.load_settings().get(HUB_TOKEN_KEY, "") or ""))
        self.training.set_values(training_defaults(store))
        self.saved.setText("")
        self._saved_state = self._form_state()

    def _form_state(self) -> tuple[str, dict[str, Any]]:
        return self.token.text().strip(), self.training.values()

    def has_unsaved_changes(self) -> bool:
        return self._saved_state is not None and self._form_state() != self._saved_state

    def can_leave(self) -> bool:
        """Asked before the page is left: save the edits, drop them, or stay (False)."""
        if not self.has_unsaved_changes():
            return True
        buttons = QMessageBox.StandardButton
        answer = QMessageBox.question(self, "Unsaved settings",
                                      "You changed settings without saving them. Save the changes?",
                                      buttons.Save | buttons.Discard | buttons.Cancel, buttons.Save)
        if answer == buttons.Save:
            self.save()
        elif answer == buttons.Discard:
            self.load()
        return answer in (buttons.Save, buttons.Discard)

    def reset_defaults(self) -> None:
        self.training.set_values(forget_settings_defaults())
        self.saved.setText("Defaults restored; Save to keep them.")

    def save(self) -> None:
        store = self.services.store()
        settings = store.load_settings()
        settings[HUB_TOKEN_KEY] = self.token.text().strip()
        settings["training"] = self.training.values()
        store.save_settings(settings)
        self._saved_state = self._form_state()
        self.saved.setText("Saved.")

    def choose_data_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Where should UnStar keep models and jobs?",
                                                self.data_dir.text() or str(Path.home()))
        if path:
            self.services.set_data_dir(Path(path))
            self.load()  # the new folder's settings
            self.data_dir_changed.emit()

