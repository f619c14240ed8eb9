"""Small pieces the pages share: a page header, time formatting, a fact summary, a job verdict."""

from __future__ import annotations

from dataclasses import Field
from typing import Any

from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QLabel, QSpinBox, QVBoxLayout,
                               QWidget)

from ...engine.settings import PRESETS, ForgetSettings, default_of, gui_fields


class PageHeader(QWidget):
    def __init__(self, title: str, subtitle: str = "") -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 6)
        self.title = QLabel(title)
        self.title.setObjectName("pageTitle")
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.title.setFont(font)
        self.subtitle = QLabel(subtitle)
        self.subtitle.setObjectName("hint")
        self.subtitle.setWordWrap(True)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        self.subtitle.setVisible(bool(subtitle))

    def set_subtitle(self, text: str) -> None:
        self.subtitle.setText(text)
        self.subtitle.setVisible(bool(text))


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s left"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s left"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min left"


def percent(value: Any) -> str:
    try:
        return f"{100 * float(value):.0f}%"
    except (TypeError, ValueError):
        return "–"


def job_verdict(job: dict[str, Any], report: dict[str, Any] | None) -> str:
    """One line a person can read: did the model forget, and did it keep the rest?"""
    status = job.get("status", "")
    if status in ("cancelled", "interrupted", "failed") and job.get("stage") == "evaluate" and report:
        return "trained; evaluation incomplete"  # its adapter is saved: the model can be used and exported
    if status != "done" or not report:
        return {"running": "training…", "interrupted": "interrupted: resume it", "cancelled": "cancelled",
                "failed": "failed", "created": "not trained yet"}.get(status, status)
    m = report.get("metrics", {})
    if m.get("probes_known") == 0:
        return "nothing to forget: the model never gave the answer"
    eff = m.get("efficacy_heldout", m.get("efficacy_train"))
    ret = m.get("retention_neighbours")
    return f"forgot {percent(eff)} of probes, kept {percent(ret)} of neighbours"


class TrainingForm(QGroupBox):
    """The training settings a person may change, in the wizard and in Settings: one row per ForgetSettings field
    marked "gui" in its metadata (engine/settings.py), with its label, its help as the tooltip, a spin box within
    its bounds or a combo box of its choices. The "preset" row is the recipe: it brings the preset's other values."""

    def __init__(self, title: str) -> None:
        super().__init__(title)
        self.fields: dict[str, QSpinBox | QDoubleSpinBox | QComboBox] = {}
        self._defaults: dict[str, Any] = {}
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        for f in gui_fields():
            box = setting_widget(f)
            box.setMinimumWidth(140)
            self.fields[f.name], self._defaults[f.name] = box, default_of(f)
            form.addRow(f"{f.metadata['label']}:", box)
        self.recipe = self.fields["preset"]  # the default is the paper's recipe; the other is an explicit choice
        # A subject edit trains no LoRA adapter: its rank, layers and learning rate do nothing, so they are greyed out.
        self._lora_only = {f.name: self.fields[f.name].toolTip() for f in gui_fields() if f.metadata.get("lora_only")}
        self.recipe.currentIndexChanged.connect(self._recipe_changed)
        self._recipe_changed()

    def _recipe_changed(self, *_: Any) -> None:
        editing = PRESETS.get(self.recipe.currentData() or "", {}).get("update") == "subject_edit"
        for name, tip in self._lora_only.items():
            self.fields[name].setEnabled(not editing)
            self.fields[name].setToolTip("Not used by the subject edit (it trains no LoRA adapter)." if editing else tip)

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: widget_value(box) for key, box in self.fields.items()}
        preset = out["preset"] or ""
        recipe_keys = set().union(*PRESETS.values())
        defaults = ForgetSettings()
        out.update({k: getattr(defaults, k) for k in recipe_keys if k not in self.fields})
        if preset:
            out.update({k: v for k, v in PRESETS[preset].items() if k not in self.fields})
        out["preset"] = preset
        return out

    def set_values(self, values: dict[str, Any]) -> None:
        """Spin boxes keep their value when `values` lacks theirs; a combo box (the recipe) falls back to its
        field's default."""
        for key, box in self.fields.items():
            if isinstance(box, QComboBox):
                box.setCurrentIndex(max(box.findData(values.get(key) or self._defaults[key]), 0))
            elif key in values:
                box.setValue(values[key])


def widget_value(box: QSpinBox | QDoubleSpinBox | QComboBox) -> Any:
    return box.currentData() if isinstance(box, QComboBox) else box.value()


def setting_widget(f: Field) -> QSpinBox | QDoubleSpinBox | QComboBox:
    """The editor of one ForgetSettings field, from its metadata: a combo box of its choices (the "items" of its
    "gui" entry, value -> text, when it names them), else a spin box from its bounds and the form's own limits."""
    meta, gui = f.metadata, f.metadata["gui"]
    if "choices" in meta:
        combo = QComboBox()
        for key, text in gui.get("items", {c: c for c in meta["choices"]}).items():
            combo.addItem(text, key)
        widget: QSpinBox | QDoubleSpinBox | QComboBox = combo
    else:
        bounds = meta.get("bounds")
        lo = gui.get("min", bounds.lo if bounds is not None else None)
        hi = gui.get("max", bounds.hi if bounds is not None else None)
        if isinstance(default_of(f), float):
            widget = QDoubleSpinBox()
            widget.setDecimals(gui.get("decimals", 2))
            widget.setSingleStep(gui.get("step", 0.1))
            widget.setRange(-1e9 if lo is None else lo, 1e9 if hi is None else hi)
        else:
            widget = QSpinBox()
            widget.setRange(-2**31 if lo is None else int(lo), 2**31 - 1 if hi is None else int(hi))
        if "special" in gui:
            widget.setSpecialValueText(gui["special"])  # shown at the minimum (num_layers -1: "all")
    widget.setToolTip(meta["help"])
    return widget
