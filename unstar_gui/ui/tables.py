"""A table of dict rows: shows chosen keys as columns, lets the user edit some, and gives the rows back.

Each row keeps its original dict, so keys that are not shown (ids, provenance, round) survive an edit and go back
to the jsonl file untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

ROW_ROLE = Qt.ItemDataRole.UserRole + 1


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    editable: bool = False
    stretch: bool = False
    width: int = 0  # a fixed starting width (long values elide; the tooltip has them whole)
    show: Callable[[Any], str] | None = None  # how to show a value that is not plain text
    tip: Callable[[Any], str] | None = None  # the cell's tooltip (default: the shown text, whole)


class RowsTable(QTableWidget):
    def __init__(self, columns: list[Column], parent=None) -> None:
        super().__init__(0, len(columns), parent)
        self.columns = columns
        self.setHorizontalHeaderLabels([c.title for c in columns])
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setAlternatingRowColors(True)
        self.setWordWrap(True)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        for i, c in enumerate(columns):
            if c.width:
                header.setSectionResizeMode(i, QHeaderView.ResizeMode.Interactive)
                header.resizeSection(i, c.width)
            else:
                mode = QHeaderView.ResizeMode.Stretch if c.stretch else QHeaderView.ResizeMode.ResizeToContents
                header.setSectionResizeMode(i, mode)
        if not any(c.editable for c in columns):
            self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        self.setRowCount(0)
        for row in rows:
            self.add_row(row)

    def add_row(self, row: dict[str, Any] | None = None) -> int:
        row = dict(row or {})
        r = self.rowCount()
        self.insertRow(r)
        for i, c in enumerate(self.columns):
            value = row.get(c.key, "")
            text = c.show(value) if c.show else _text(value)
            item = QTableWidgetItem(text)
            item.setToolTip(c.tip(value) if c.tip else text)
            if not c.editable:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            if i == 0:
                item.setData(ROW_ROLE, row)
            self.setItem(r, i, item)
        return r

    def remove_selected(self) -> int:
        rows = sorted({i.row() for i in self.selectedIndexes()}, reverse=True)
        for r in rows:
            self.removeRow(r)
        return len(rows)

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts: the original keys, with the editable columns' current text."""
        out = []
        for r in range(self.rowCount()):
            first = self.item(r, 0)
            row = dict(first.data(ROW_ROLE) or {}) if first is not None else {}
            for i, c in enumerate(self.columns):
                item = self.item(r, i)
                if c.editable and item is not None:
                    row[c.key] = item.text().strip()
            out.append(row)
        return out

    def selected_row(self) -> dict[str, Any] | None:
        rows = sorted({i.row() for i in self.selectedIndexes()})
        if not rows:
            return None
        first = self.item(rows[0], 0)
        return dict(first.data(ROW_ROLE) or {}) if first is not None else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
