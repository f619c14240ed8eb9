"""Step 7, "export": the unlearned model written out (adapter, fused model, GGUF)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QGridLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout

from ...dialogs import show_error
from .step import Step

if TYPE_CHECKING:
    from .wizard import ForgetWizard


class ExportStep(Step):
    key = "export"
    title = "Export"
    subtitle = ("Take the result with you: the small adapter (for mlx-lm: `mlx_lm.generate --adapter-path`) or a "
                "full model with the change fused in.")

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.adapters_btn = QPushButton("Export adapter…")
        self.adapters_btn.clicked.connect(lambda: self.export("adapters"))
        self.fused_btn = QPushButton("Export fused model…")
        self.fused_btn.clicked.connect(lambda: self.export("fused"))
        adapter_hint = QLabel("A few megabytes. Load it on top of the same base model.")
        adapter_hint.setObjectName("hint")
        fused_hint = QLabel("A complete model folder (as large as the base model); works anywhere mlx-lm runs.")
        fused_hint.setObjectName("hint")
        grid = QGridLayout()
        grid.addWidget(self.adapters_btn, 0, 0)
        grid.addWidget(adapter_hint, 0, 1)
        grid.addWidget(self.fused_btn, 1, 0)
        grid.addWidget(fused_hint, 1, 1)
        grid.setColumnStretch(1, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.exported: list[Path] = []
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.progress)
        layout.addWidget(self.result)
        layout.addStretch(1)

    def reset(self) -> None:
        self.result.setText("")
        self.exported = []

    def export(self, kind: str) -> None:
        if self.task is not None:
            return
        job = self.state.job
        start = str(Path.home())
        out = QFileDialog.getExistingDirectory(self, "Export into which folder?", start)
        if not out:
            return
        target = Path(out) / f"{job.dir.name}-{kind}"

        def export(ctx):
            from ....engine import export as exporter

            if kind == "adapters":
                return exporter.export_adapters(job.dir, target)
            return exporter.export_fused(job.dir, target)

        def done(_: Any) -> None:
            self.progress.setVisible(False)
            self.exported.append(target)
            self.result.setText(f"Exported to <b>{target}</b>")

        self.progress.setVisible(True)
        self.result.setText(f"Exporting to {target}…")
        self.run(export, f"export {kind}", done, on_cancelled=lambda: self.progress.setVisible(False),
                 on_error=lambda info: (self.progress.setVisible(False), show_error(self, info)))
