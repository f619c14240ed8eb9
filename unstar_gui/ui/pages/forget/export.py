"""Step 7, "export": the unlearned model written out, in every format the command line offers: the adapter, a fused
MLX model (the base's precision, 16-bit, or re-quantized), and a GGUF file with an Ollama Modelfile, anywhere or
where LM Studio lists it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QGridLayout, QLabel, QProgressBar, QPushButton,
                               QVBoxLayout)

from ....engine.events import Finished, Log, Progress
from ...dialogs import show_error
from ...errors import ErrorInfo
from .step import Step

if TYPE_CHECKING:
    from .wizard import ForgetWizard

# The fused model's precision: label -> export_fused keyword arguments (the CLI's --dequantize / --q-bits /
# --adapted-bits, in words).
PRECISIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("Same as the base model", "A quantized base keeps its stored weights; the layers the adapter changed stay "
                               "16-bit, so the change is not rounded away.", {}),
    ("Same as the base, changed layers 8-bit", "Smaller than the default on a quantized base; the changed layers "
                                               "are stored at 8 bits (quantized bases only).", {"adapted_bits": 8}),
    ("16-bit (no quantization)", "Every weight at 16 bits: the largest file, nothing rounded.",
     {"dequantize": True}),
    ("8-bit, every layer", "Every layer re-quantized to 8 bits (group size 64).", {"q_bits": 8}),
    ("4-bit, every layer", "Every layer re-quantized to 4 bits (group size 64). Rounding can bring a forgotten "
                           "fact back: the Results page's re-quantization attack shows whether it did.", {"q_bits": 4}),
)


class ExportStep(Step):
    key = "export"
    title = "Export"
    subtitle = ("Take the result with you: the small adapter (loaded on top of the same base model), a complete MLX "
                "model with the change fused in, or a GGUF file for llama.cpp, Ollama and LM Studio.")

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.adapters_btn = QPushButton("Export adapter…")
        self.adapters_btn.clicked.connect(lambda: self.export("adapters"))
        self.fused_btn = QPushButton("Export fused model…")
        self.fused_btn.clicked.connect(lambda: self.export("fused"))
        self.precision = QComboBox()
        for label, tip, options in PRECISIONS:
            self.precision.addItem(label, options)
            self.precision.setItemData(self.precision.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.precision.setToolTip("How the fused model's weights are stored.")
        self.gguf_btn = QPushButton("Export GGUF…")
        self.gguf_btn.clicked.connect(lambda: self.export("gguf"))
        self.lmstudio_btn = QPushButton("Export to LM Studio")
        self.lmstudio_btn.clicked.connect(lambda: self.export("lmstudio"))
        self.overwrite = QCheckBox("Replace an earlier export of this job in the same place")
        self.overwrite.setToolTip("Only files an earlier export wrote are replaced; anything else stops the export.")
        grid = QGridLayout()
        weights = QLabel("Fused model weights:")
        weights.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        rows = ((self.adapters_btn, None, "A few megabytes. Load it on top of the same base model with mlx-lm."),
                (self.fused_btn, None, "A complete model folder; works anywhere mlx-lm runs."),
                (weights, self.precision, ""),
                (self.gguf_btn, None, "One 16-bit .gguf file for llama.cpp (llama and mistral models), with an "
                                      "Ollama Modelfile beside it."),
                (self.lmstudio_btn, None, "The same GGUF file, written where LM Studio lists it (My Models, "
                                          "publisher \u201cunstar\u201d)."))
        for r, (button, option, text) in enumerate(rows):
            grid.addWidget(button, r, 0)
            if option is not None:  # the fused model's option sits under its button, left-aligned with the hints
                grid.addWidget(option, r, 1, Qt.AlignmentFlag.AlignLeft)
                continue
            hint = QLabel(text)
            hint.setObjectName("hint")
            hint.setWordWrap(True)
            grid.addWidget(hint, r, 1)
        grid.setColumnStretch(1, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextFormat(Qt.TextFormat.PlainText)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.exported: list[Path] = []
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.overwrite)
        layout.addWidget(self.progress)
        layout.addWidget(self.result)
        layout.addStretch(1)

    def reset(self) -> None:
        self.result.setText("")
        self.exported = []

    def enter(self) -> None:
        if self.state.job is not None and self.state.job.read().get("status") != "done" and not self.result.text():
            self.result.setText("The evaluation is incomplete: the export works, and its model card says so.")

    def _target(self, kind: str) -> Path | None:
        job = self.state.job
        if kind == "lmstudio":
            return Path()  # the worker asks the engine where LM Studio looks
        if kind == "gguf":
            suggested = str(Path.home() / f"{job.dir.name}.gguf")
            out, _ = QFileDialog.getSaveFileName(self, "Save the GGUF file as", suggested, "GGUF files (*.gguf)")
            return Path(out).with_suffix(".gguf") if out else None
        out = QFileDialog.getExistingDirectory(self, "Export into which folder?", str(Path.home()))
        return Path(out) / f"{job.dir.name}-{kind}" if out else None

    def export(self, kind: str) -> None:
        if self.task is not None:
            return
        target = self._target(kind)
        if target is None:
            return
        job, overwrite, options = self.state.job, self.overwrite.isChecked(), dict(self.precision.currentData() or {})
        work = _export_task(kind, job.dir, target, overwrite, options)

        def done(result: Any) -> None:
            self.progress.setVisible(False)
            summary = result.summary if isinstance(result, Finished) else {}
            path = Path(summary.get("path") or target)
            self.exported.append(path)
            lines = [f"Exported to {path}"]
            if summary.get("ollama_command"):
                lines.append(f"Use it in Ollama: {summary['ollama_command']}")
            if kind == "lmstudio":
                lines.append("LM Studio lists it under My Models (publisher \u201cunstar\u201d) after a refresh.")
            self.result.setText("\n".join(lines))

        def event(ev: Any) -> None:
            if isinstance(ev, Progress) and ev.message:
                self.result.setText(f"{ev.message}…")
            elif isinstance(ev, Log) and ev.level == "warning":
                self.result.setText(ev.message)

        def failed(info: ErrorInfo) -> None:
            self.progress.setVisible(False)
            self.result.setText("")
            show_error(self, info)

        self.progress.setVisible(True)
        self.result.setText("Exporting…")
        self.run(work, f"export {kind}", done, on_event=event, on_cancelled=lambda: self.progress.setVisible(False),
                 on_error=failed)


def _export_task(kind: str, job_dir: Path, target: Path, overwrite: bool, options: dict[str, Any]) -> Callable:
    """The worker function for one export (engine imports happen there: they load mlx)."""
    def work(ctx):
        from ....engine import export as exporter

        # The worker hands the last Finished event to `done`.
        if kind == "adapters":
            return exporter.export_adapters(job_dir, target, overwrite=overwrite, cancel=ctx.cancel)
        if kind == "fused":
            return exporter.export_fused(job_dir, target, overwrite=overwrite, cancel=ctx.cancel, **options)
        out = exporter.lmstudio_gguf_path(job_dir.name) if kind == "lmstudio" else target
        return exporter.export_gguf(job_dir, out, overwrite=overwrite, cancel=ctx.cancel)

    return work
