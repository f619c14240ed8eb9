"""Dialogs: the error dialog (summary + expandable details) and a yes/no confirmation."""

from __future__ import annotations

import html

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QMessageBox, QPlainTextEdit,
                               QPushButton, QStyle, QVBoxLayout, QWidget)

from .errors import ErrorInfo


class ErrorDialog(QDialog):
    """What went wrong and what to do, in plain words; the traceback only for those who open the details."""

    def __init__(self, info: ErrorInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.info = info
        self.setWindowTitle("UnStar Studio: something went wrong")
        self.setMinimumWidth(520)

        icon = QLabel()
        icon.setPixmap(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning).pixmap(40, 40))
        self.summary = QLabel(f"<b>{html.escape(info.message)}</b>")
        self.summary.setWordWrap(True)
        self.hint = QLabel(html.escape(info.hint))
        self.hint.setWordWrap(True)
        self.hint.setVisible(bool(info.hint))
        text = QVBoxLayout()
        text.addWidget(self.summary)
        text.addWidget(self.hint)
        top = QHBoxLayout()
        top.addWidget(icon, 0)
        top.addLayout(text, 1)

        self.details = QPlainTextEdit(info.details or "(no details)")
        self.details.setReadOnly(True)
        self.details.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.details.setMinimumHeight(220)
        self.details.setVisible(False)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        self.toggle = QPushButton("Show details")
        self.toggle.setCheckable(True)
        self.toggle.toggled.connect(self._toggle_details)
        self.toggle.setEnabled(bool(info.details))
        copy = QPushButton("Copy")
        copy.clicked.connect(self._copy)
        buttons.addButton(self.toggle, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.accepted.connect(self.accept)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.details, 1)
        layout.addWidget(buttons)

    def _toggle_details(self, shown: bool) -> None:
        self.details.setVisible(shown)
        self.toggle.setText("Hide details" if shown else "Show details")
        self.adjustSize()

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(f"{self.info.message}\n{self.info.hint}\n\n{self.info.details}")


def show_error(parent: QWidget | None, info: ErrorInfo) -> None:
    ErrorDialog(info, parent).exec()


def confirm(parent: QWidget | None, title: str, text: str) -> bool:
    answer = QMessageBox.question(parent, title, text,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes

