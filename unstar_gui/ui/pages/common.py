"""Small pieces the pages share: a page header, time formatting, a fact summary, a job verdict."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QLabel, QSpinBox, QVBoxLayout,
                               QWidget)


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


TRAINING_LABELS = {"max_rounds": "Rounds (train, re-probe, regenerate):",
                   "steps_per_round": "Training steps per round:", "rank": "LoRA rank:",
                   "num_layers": "Layers with adapters:", "learning_rate": "Learning rate:", "seed": "Seed:"}


RECIPES = (("", "Original UNSTAR recipe (default)"),
           ("locality", "Keep more general knowledge (experimental: may lose related facts)"))


class TrainingForm(QGroupBox):
    """The training settings a person may change (ForgetSettings names), in the wizard and in Settings."""

    def __init__(self, title: str) -> None:
        super().__init__(title)
        self.fields: dict[str, QSpinBox | QDoubleSpinBox] = {
            "max_rounds": _int_box(1, 20), "steps_per_round": _int_box(1, 2000), "rank": _int_box(1, 256),
            "num_layers": _int_box(-1, 200), "seed": _int_box(0, 2**31 - 1)}
        self.fields["num_layers"].setSpecialValueText("all")
        lr = QDoubleSpinBox()
        lr.setDecimals(6)
        lr.setRange(1e-6, 1e-1)
        lr.setSingleStep(1e-5)
        self.fields["learning_rate"] = lr
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        # The recipe: the default is the paper's; the locality recipe keeps more general knowledge but can lose
        # related facts (README "Locality"), so it is an explicit choice.
        self.recipe = QComboBox()
        for key, text in RECIPES:
            self.recipe.addItem(text, key)
        self.recipe.setToolTip("How the adapter is trained. The experimental recipe keeps more general knowledge "
                               "but lost related facts (other wordings, other people) in our measurements.")
        form.addRow("Recipe:", self.recipe)
        for key, label in TRAINING_LABELS.items():
            self.fields[key].setMinimumWidth(140)
            form.addRow(label, self.fields[key])

    def values(self) -> dict[str, Any]:
        from ...engine.pipeline import PRESETS, ForgetSettings

        out: dict[str, Any] = {key: box.value() for key, box in self.fields.items()}
        preset = self.recipe.currentData() or ""
        recipe_keys = set().union(*PRESETS.values())
        defaults = ForgetSettings()
        out.update({k: getattr(defaults, k) for k in recipe_keys if k not in self.fields})
        if preset:
            out.update({k: v for k, v in PRESETS[preset].items() if k not in self.fields})
        out["preset"] = preset
        return out

    def set_values(self, values: dict[str, Any]) -> None:
        for key, box in self.fields.items():
            if key in values:
                box.setValue(values[key])
        index = self.recipe.findData(values.get("preset") or "")
        self.recipe.setCurrentIndex(max(index, 0))


def _int_box(lo: int, hi: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    return box
