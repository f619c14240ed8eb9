"""Step 1, "model": which model to unlearn on, and the training settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PySide6.QtWidgets import QComboBox, QFormLayout, QLabel, QVBoxLayout

from ....engine.fsutil import human_bytes
from ..common import TrainingForm
from .step import Step

if TYPE_CHECKING:
    from .wizard import ForgetWizard


class ModelStep(Step):
    key = "model"
    title = "Model"
    subtitle = "Which local model should forget something? Training settings have good defaults."

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(420)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_info = QLabel("")
        self.model_info.setObjectName("hint")
        self.model_info.setWordWrap(True)
        self.model_combo.currentIndexChanged.connect(self._show_info)

        self.training = TrainingForm("Training settings")

        top = QFormLayout()
        top.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        top.addRow("Model:", self.model_combo)
        top.addRow("", self.model_info)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.training)
        layout.addStretch(1)

    def reset(self) -> None:
        store = self.wizard.services.store()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        records = store.list()
        default = store.default()
        if not records:
            self.model_combo.addItem("SmolLM2-135M-Instruct (built in; set up on first use)", None)
        for rec in sorted(records, key=lambda r: (not r.default, r.id)):
            self.model_combo.addItem(f"{rec.id}  ({rec.architecture}, {rec.quantization})", rec.id)
        wanted = self.state.model_id or (default.id if default else None)
        index = self.model_combo.findData(wanted)
        if self.state.model_id and index < 0:
            self.model_combo.addItem(f"{self.state.model_id} (not installed)", self.state.model_id)
            index = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(max(index, 0))
        self.model_combo.blockSignals(False)
        self.training.set_values(self.state.settings)
        self._show_info()

    def enter(self) -> None:
        if self.state.job is None:
            self.reset_models_keep_choice()

    def reset_models_keep_choice(self) -> None:
        chosen = self.model_combo.currentData()
        self.save_draft()
        self.state.model_id = chosen
        self.reset()

    def _show_info(self) -> None:
        model_id = self.model_combo.currentData()
        if model_id is None:
            self.model_info.setText("The built-in model ships with the app: no download, no network.")
            return
        store = self.wizard.services.store()
        if not store.has(model_id):
            self.model_info.setText("This model is not installed any more; pick another one.")
            return
        rec = store.get(model_id)
        self.model_info.setText(f"{human_bytes(rec.size_bytes)} on disk · {rec.source}")

    def save_draft(self) -> None:
        self.state.model_id = self.model_combo.currentData()
        self.state.settings.update(self.training.values())

    def leave(self, proceed: Callable[[bool], None]) -> None:
        previous_model = self.state.model_id
        self.save_draft()
        job = self.state.job
        if job is not None:
            if job.read().get("status") != "created" or (previous_model != self.state.model_id):
                # A trained job, or another model: the old job stays as it is; the next step starts a new one.
                self.wizard.detach_job()
            else:
                job.merge_settings(self.state.settings)
        proceed(True)
