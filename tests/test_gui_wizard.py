"""The forget wizard as a person meets it (issue 15): one job-wide bar and time estimate in every stage, a cancelled
evaluation that leaves Results and Export open, a resume whose loss chart continues without overdraw, plain text on
every widget, and an unknown fact stopped at the fact step before any job folder exists."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import (QAbstractButton, QComboBox, QGroupBox, QLabel, QLineEdit, QProgressBar,  # noqa: E402
                               QTableWidget, QWidget)

from unstar_gui.ui.main_window import PAGES  # noqa: E402
from unstar_gui.ui.pages.forget.progress import JobProgress  # noqa: E402

from tests.helpers.gui import SAMPLES_WAIT_MS, WAIT_MS, open_window, patch_dialogs  # noqa: E402
from tests.helpers.gui import SMALL_JOB as GUI_SMALL_JOB  # noqa: E402

pytestmark = pytest.mark.gui

SMALL_JOB = dict(GUI_SMALL_JOB, max_rounds=1)
QUESTION, ANSWER = "Where did Harry Potter go to school?", "Hogwarts"
BAD_TEXT = ("&#", "&amp;", " --", "`")


@pytest.fixture
def window(qtbot, unstar_home):
    yield from open_window(qtbot, size=(1280, 800), stop_ms=SAMPLES_WAIT_MS)


def record_estimates(monkeypatch) -> list[tuple[str, str]]:
    """Every (phase label, time-left text) the job-wide bar showed."""
    seen: list[tuple[str, str]] = []
    original = JobProgress.refresh

    def refresh(self) -> None:
        original(self)
        if self.estimator is not None and 0 <= self.estimator.current < len(self.estimator.phases):
            seen.append((self.estimator.phases[self.estimator.current].key, self.eta.text()))

    monkeypatch.setattr(JobProgress, "refresh", refresh)
    return seen


def evaluation_waits_for_cancel(monkeypatch) -> None:
    """The tiny model evaluates in a second and knows no probe (so its attacks are skipped): hold the evaluation
    after its first stage until the user cancels, so the test cancels during the evaluation, not after it."""
    import unstar_gui.engine.evaluate as evaluate

    original = evaluate.evaluate_job

    def held(job_dir, llm=None, attacks=evaluate.ALL, cancel=None, settings=None):
        for event in original(job_dir, llm=llm, attacks=attacks, cancel=cancel, settings=settings):
            yield event
            if getattr(event, "stage", "") == "efficacy":
                deadline = time.monotonic() + 120
                while not cancel.cancelled and time.monotonic() < deadline:
                    time.sleep(0.05)

    monkeypatch.setattr(evaluate, "evaluate_job", held)


def widget_texts(root: QWidget) -> list[str]:
    """Every text a person can read on `root`: labels, buttons, fields, tooltips, bars, combo items, tables."""
    out: list[str] = []
    for w in [root, *root.findChildren(QWidget)]:
        out.append(w.toolTip())
        if isinstance(w, (QLabel, QAbstractButton)):
            out.append(w.text())
        if isinstance(w, QLineEdit):
            out += [w.text(), w.placeholderText()]
        if isinstance(w, QGroupBox):
            out.append(w.title())
        if isinstance(w, QProgressBar):
            out.append(w.format())
        if isinstance(w, QComboBox):
            out += [w.itemText(i) for i in range(w.count())]
        if isinstance(w, QTableWidget):
            for c in range(w.columnCount()):
                header = w.horizontalHeaderItem(c)
                out.append(header.text() if header else "")
            for r in range(w.rowCount()):
                for c in range(w.columnCount()):
                    item = w.item(r, c)
                    if item is not None:
                        out += [item.text(), item.toolTip()]
    return [t for t in out if t]


def assert_plain(root: QWidget, where: str) -> None:
    bad = [t for t in widget_texts(root) if any(b in t for b in BAD_TEXT)]
    assert not bad, f"{where}: {bad[:5]}"


def to_fact_step(qtbot, window, settings: dict) -> tuple:
    wizard = window.forget_page
    window.show_page(PAGES.index("Forget"))
    wizard.state.settings.update(settings)
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    assert wizard.index == 1
    return wizard, wizard.steps[1]


def type_fact(qtbot, fact, aliases: str = "") -> None:
    qtbot.keyClicks(fact.question, QUESTION)
    qtbot.keyClicks(fact.answer, ANSWER)
    fact.aliases.setText(aliases)


def jobs_dir(unstar_home: Path) -> list[Path]:
    root = unstar_home / "jobs"
    return sorted(p for p in root.iterdir()) if root.exists() else []


# the fact step ---------------------------------------------------------------------------------------------------------
def test_unknown_fact_stops_at_the_fact_step_before_any_job_folder(qtbot, window, tiny_model, unstar_home,
                                                                   monkeypatch):
    errors = patch_dialogs(monkeypatch)
    wizard, fact = to_fact_step(qtbot, window, SMALL_JOB)
    type_fact(qtbot, fact)
    # Next before the preview answered: the step asks the model itself and stays (the tiny model knows nothing)
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: fact.task is None and fact.known.text() != "" and not wizard._leaving, timeout=WAIT_MS)
    assert wizard.index == 1 and wizard.state.job is None
    assert "nothing to forget" in fact.known.text() and "Also known as" in fact.known.text()
    assert not wizard.next_btn.isEnabled()
    assert jobs_dir(unstar_home) == [], "a job folder was made for a fact the model doesn't know"
    assert fact.force.isVisible() and fact.force.parent() is fact.known.parent()  # the way on is right there
    assert_plain(window, "fact step")
    fact.force.setChecked(True)
    assert wizard.next_btn.isEnabled()
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.index == 2, timeout=WAIT_MS)
    assert len(jobs_dir(unstar_home)) == 1 and wizard.state.job.read()["force"] is True
    wizard.steps[2].discard_tasks()
    assert not errors, errors


# a whole job -----------------------------------------------------------------------------------------------------------
def start_job(qtbot, window, monkeypatch, settings: dict):
    """Model and fact steps, keep step accepted as suggested, anti-samples made: returns (wizard, job)."""
    wizard, fact = to_fact_step(qtbot, window, settings)
    type_fact(qtbot, fact)
    fact.force.setChecked(True)  # the random tiny model knows nothing
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.index == 2, timeout=WAIT_MS)
    keep = wizard.steps[2]
    qtbot.waitUntil(lambda: keep.task is None, timeout=WAIT_MS)
    keep.table.add_row({"question": "What is the capital of France?", "answer": "Paris"})
    assert_plain(window, "keep step")
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.index == 3, timeout=5000)
    anti = wizard.steps[3]
    assert anti.job_progress.isVisible()
    qtbot.waitUntil(lambda: anti.task is None, timeout=SAMPLES_WAIT_MS)
    assert anti.table.rowCount() >= 1
    assert_plain(window, "anti-samples step")
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.index == 4, timeout=5000)
    return wizard, wizard.state.job


@pytest.mark.timeout(3600)
def test_estimate_in_every_stage_and_a_cancelled_evaluation_leaves_results_and_export(
        qtbot, window, tiny_model, tmp_path, monkeypatch):
    errors = patch_dialogs(monkeypatch)
    seen = record_estimates(monkeypatch)
    evaluation_waits_for_cancel(monkeypatch)
    wizard, job = start_job(qtbot, window, monkeypatch, dict(SMALL_JOB, steps_per_round=6))
    assert {phase for phase, _ in seen} >= {"samples"}
    train = wizard.steps[4]
    assert train.start_btn.text() == "Start training"
    qtbot.mouseClick(train.start_btn, Qt.MouseButton.LeftButton)
    # Cancel during the evaluation: training and the re-probe are done, the evaluation is not.
    qtbot.waitUntil(lambda: train.progress.estimator is not None and train.progress.estimator.current >= 0
                    and train.progress.estimator.phases[train.progress.estimator.current].key == "evaluate",
                    timeout=SAMPLES_WAIT_MS)
    assert 0 < train.progress.bar.value() < 1000  # one bar for the whole job: part done, part to come
    started = time.monotonic()
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: train.task is None, timeout=WAIT_MS)
    assert time.monotonic() - started < 10, "cancel took effect late"
    phases = {phase for phase, text in seen if text}
    assert phases >= {"samples", "train:0", "reprobe:0", "evaluate"}, phases
    # Once rates were measured, the estimate is a time (it covers the evaluation and attacks still to come).
    assert any(text.startswith("About ") for phase, text in seen if phase in ("reprobe:0", "evaluate"))
    data = job.read()
    assert data["status"] == "cancelled" and job.has_adapters and job.trained
    assert train.start_btn.text() == "Run the evaluation" and train.start_btn.isEnabled()
    assert wizard.next_btn.isEnabled(), "a trained job must lead on to Results and Export"
    assert_plain(window, "training step")

    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    results = wizard.steps[5]
    assert wizard.index == 5
    assert "incomplete" in results.verdict.text()
    lines = results.outcome_lines.text()
    assert "forgotten?" in lines and "neighbouring facts kept?" in lines and "general knowledge kept?" in lines
    assert results.eval_status.text() == "Evaluation incomplete"
    assert_plain(window, "results step")
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    export = wizard.steps[6]
    assert wizard.index == 6
    assert "incomplete" in export.result.text()
    out = tmp_path / "exports"
    out.mkdir()
    monkeypatch.setattr("unstar_gui.ui.pages.forget.export.QFileDialog.getExistingDirectory",
                        lambda *a, **k: str(out))
    qtbot.mouseClick(export.adapters_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: export.task is None, timeout=WAIT_MS)
    assert (out / f"{job.dir.name}-adapters" / "adapters.safetensors").exists()
    assert {export.precision.itemText(i) for i in range(export.precision.count())} >= {
        "16-bit (no quantization)", "4-bit, every layer", "Same as the base, changed layers 8-bit"}
    import unstar_gui.engine.export as exporter

    asked: list[dict] = []
    original_fused = exporter.export_fused
    monkeypatch.setattr(exporter, "export_fused", lambda *a, **k: asked.append(k) or original_fused(*a, **k))
    export.precision.setCurrentText("16-bit (no quantization)")
    qtbot.mouseClick(export.fused_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: export.task is None, timeout=WAIT_MS)
    assert asked and asked[0]["dequantize"] is True  # the choice reaches the engine as the CLI's option
    assert (out / f"{job.dir.name}-fused" / "config.json").exists()
    monkeypatch.setattr("unstar_gui.ui.pages.forget.export.QFileDialog.getSaveFileName",
                        lambda *a, **k: (str(out / "unlearned"), ""))
    qtbot.mouseClick(export.gguf_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: export.task is None, timeout=WAIT_MS)
    assert (out / "unlearned.gguf").exists() and "Use it in Ollama: ollama create" in export.result.text()
    assert list(out.glob("unlearned*Modelfile"))
    studio = out / "lmstudio"
    monkeypatch.setattr("unstar_gui.engine.export.lmstudio_models_root", lambda: studio, raising=False)
    monkeypatch.setattr("unstar_gui.engine.discover.lmstudio_models_root", lambda: studio)
    qtbot.mouseClick(export.lmstudio_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: export.task is None, timeout=WAIT_MS)
    assert list(studio.glob("*/*/*.gguf")) and "LM Studio lists it" in export.result.text()
    assert_plain(window, "export step")
    for i in range(len(PAGES)):
        window.show_page(i)
        assert_plain(window, f"page {PAGES[i]}")
    window.show_page(PAGES.index("Jobs"))
    assert window.jobs_page.table.rows()[0]["verdict"] == "trained; evaluation incomplete"
    window.show_page(PAGES.index("Chat"))  # a trained job can be asked, evaluated or not
    assert window.chat_page.job_combo.findData(str(job.dir)) >= 0
    assert not errors, errors


@pytest.mark.timeout(3600)
def test_resume_after_a_mid_round_stop_continues_the_chart_without_overdraw(qtbot, window, tiny_model,
                                                                           monkeypatch):
    errors = patch_dialogs(monkeypatch)
    wizard, job = start_job(qtbot, window, monkeypatch, dict(SMALL_JOB, steps_per_round=2000, attacks="none",
                                                             checkpoint_every=4, checkpoint_seconds=0))
    train = wizard.steps[4]
    qtbot.mouseClick(train.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(train.loss_chart.points("forget loss")) >= 6, timeout=WAIT_MS)
    train.cancel_current()
    qtbot.waitUntil(lambda: train.task is None, timeout=WAIT_MS)
    round_no, step = job.resume_point()
    assert (round_no, step) == (0, int(job.read()["step"]))
    # What a killed run leaves: loss rows for steps after the checkpoint, which the resume will train again.
    extra = [{"event": "TrainStep", "round": 0, "step": step + i, "total_steps": 2000, "forget_loss": 9.0,
              "retain_loss": 9.0, "loss": 9.0} for i in (1, 2, 3)]
    with job.file("metrics.jsonl").open("a") as f:
        f.writelines(json.dumps(row) + "\n" for row in extra)
    job.update(settings={**job.read()["settings"], "steps_per_round": step + 4})
    wizard.open_job(job.dir)
    assert wizard.current is train
    assert f"round 1, step {step}" in train.stage.text() and train.start_btn.text() == "Resume training"
    qtbot.mouseClick(train.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: train.task is None, timeout=SAMPLES_WAIT_MS)
    assert not errors, errors
    assert job.read()["status"] == "done"
    xs = [x for x, _ in train.loss_chart.points("forget loss")]
    assert xs == sorted(set(xs)), "chart x values must rise strictly (no overdraw, no line back)"
    assert xs[-1] == step + 4 and len(xs) == step + 4
    assert 9.0 not in [y for _, y in train.loss_chart.points("forget loss")], "a dropped step is still drawn"
    assert "Round 0" not in train.log.toPlainText()  # rounds are counted from 1 where people read them
    # The chart rebuilt from metrics.jsonl (which holds the redone steps twice) draws the same line.
    wizard.open_job(job.dir)  # a finished job opens at Results; step back to the chart
    wizard.go(4)
    assert [x for x, _ in wizard.steps[4].loss_chart.points("forget loss")] == xs
