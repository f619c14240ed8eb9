"""The desktop app, driven with pytest-qt (offscreen) on the tiny model: the whole forget wizard from fact entry to
export (with cancel and resume), the other pages, the worker's cancel/stale-result rules and the error dialog.

Every main page and wizard step is saved as a screenshot under tests/_artifacts/screens/ and checked for content.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from unstar_gui.engine.errors import InvalidInput  # noqa: E402
from unstar_gui.engine.events import Log, Progress  # noqa: E402
from unstar_gui.ui import dialogs  # noqa: E402
from unstar_gui.ui.main_window import PAGES  # noqa: E402
from unstar_gui.ui.workers import MlxWorker  # noqa: E402

from tests.helpers.gui import SAMPLES_WAIT_MS, SMALL_JOB, WAIT_MS, open_window, patch_dialogs  # noqa: E402

pytestmark = pytest.mark.gui

SCREENS = Path(__file__).parent / "_artifacts" / "screens"


# helpers ---------------------------------------------------------------------------------------------------------------
def screenshot(widget, name: str) -> Path:
    """Save a screenshot and check it is a real picture: many colours, not one flat background."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    QApplication.processEvents()  # let pending layout requests (status bar labels) settle first
    image = widget.grab().toImage()
    assert image.save(str(path)), path
    check_not_blank(image, name)
    return path


def check_not_blank(image: QImage, name: str) -> None:
    w, h = image.width(), image.height()
    assert w > 400 and h > 300, (name, w, h)
    colours: dict[int, int] = {}
    step = 3
    for y in range(0, h, step):
        for x in range(0, w, step):
            rgb = image.pixel(x, y)
            colours[rgb] = colours.get(rgb, 0) + 1
    total = sum(colours.values())
    background = max(colours.values())
    assert len(colours) >= 40, f"{name}: only {len(colours)} colours"
    assert background / total < 0.92, f"{name}: {background / total:.0%} of the picture is one colour"


@pytest.fixture
def window(qtbot, unstar_home):
    yield from open_window(qtbot, stop_ms=SAMPLES_WAIT_MS)


def wait_idle(qtbot, step, timeout=WAIT_MS):
    qtbot.waitUntil(lambda: step.task is None, timeout=timeout)


# the wizard, end to end ------------------------------------------------------------------------------------------------
@pytest.mark.timeout(3600)
def test_wizard_end_to_end_with_cancel_resume_and_export(qtbot, window, tiny_model, tmp_path, monkeypatch):
    errors = patch_dialogs(monkeypatch)
    wizard = window.forget_page
    window.show_page(PAGES.index("Forget"))
    assert wizard.index == 0

    # 1. model: the tiny model is the only (so default) one; long rounds so there is time to cancel
    model_step = wizard.steps[0]
    assert model_step.model_combo.currentData() == "tiny"
    model_step.training.fields["max_rounds"].setValue(1)
    model_step.training.fields["steps_per_round"].setValue(2000)
    wizard.state.settings.update(SMALL_JOB)
    screenshot(window, "wizard-1-model")
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    assert wizard.index == 1 and wizard.state.job is None

    # 2. fact: typing asks the model (debounced, in the worker); Next creates the job folder
    fact = wizard.steps[1]
    qtbot.keyClicks(fact.question, "Where did Harry Potter go to school?")
    qtbot.keyClicks(fact.answer, "Hogwarts")
    fact.aliases.setText("Hogwarts School")
    qtbot.waitUntil(lambda: fact.preview is None and "asking" not in fact.current_answer.text()
                    and fact.known.text() != "", timeout=WAIT_MS)
    assert "Type a question" not in fact.current_answer.text()
    fact.force.setChecked(True)  # the random tiny model knows nothing
    screenshot(window, "wizard-2-fact")
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.index == 2, timeout=WAIT_MS)
    job = wizard.state.job
    data = job.read()
    assert data["fact"] == {"question": "Where did Harry Potter go to school?", "answer": "Hogwarts",
                            "aliases": ["Hogwarts School"]}
    assert data["model"]["id"] == "tiny" and data["force"] is True
    assert data["settings"]["steps_per_round"] == 2000 and data["settings"]["n_paraphrases"] == 4

    # 3. keep: neighbour suggestions with the model's answers; add one, save into job.json
    keep = wizard.steps[2]
    wait_idle(qtbot, keep)
    suggested = keep.table.rowCount()
    keep.table.add_row({"question": "What is the capital of France?", "answer": "Paris"})
    screenshot(window, "wizard-3-keep")
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.index == 3, timeout=5000)
    saved_keep = job.read()["keep"]
    assert ["What is the capital of France?", "Paris"] in saved_keep and len(saved_keep) >= 1
    assert len(saved_keep) <= suggested + 1

    # 4. anti-samples: generated in the worker, edited, a row deleted, saved back to antisamples.jsonl
    anti = wizard.steps[3]
    qtbot.waitUntil(lambda: anti.task is None and anti.status.text() != "", timeout=SAMPLES_WAIT_MS)
    assert not errors, errors
    n = anti.table.rowCount()
    assert n >= 2
    assert len(job.read_rows("antisamples.jsonl")) == n
    anti.table.item(0, 1).setText("Durmstrang")
    anti.table.selectRow(n - 1)
    anti.delete_selected()
    screenshot(window, "wizard-4-antisamples")
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.index == 4, timeout=5000)
    rows = job.read_rows("antisamples.jsonl")
    assert len(rows) == n - 1 and rows[0]["wrong_answer"] == "Durmstrang"
    assert "provenance" in rows[0] and "id" in rows[0]  # hidden columns survive the edit

    # 5. training: live chart points, Cancel, then Resume from the checkpoint
    train = wizard.steps[4]
    assert not wizard.next_btn.isEnabled()
    qtbot.mouseClick(train.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(train.loss_chart.points("forget loss")) >= 5, timeout=WAIT_MS)
    assert not wizard.back_btn.isEnabled()
    qtbot.keyClick(window, Qt.Key.Key_Escape)  # Esc cancels, like the Cancel button
    wait_idle(qtbot, train)
    assert job.read()["status"] in ("cancelled", "interrupted")
    assert train.start_btn.text() == "Resume training" and train.start_btn.isEnabled()
    assert not train.done
    checkpoints = list(job.checkpoints_dir.glob("*"))
    assert checkpoints, "training left no checkpoint to resume from"
    # A short round so the resumed run ends soon: the next steps come after the checkpoint.
    job.update(settings={**job.read()["settings"], "steps_per_round": int(job.read()["step"]) + 3})
    points_before = len(train.loss_chart.points("forget loss"))

    # Jobs lists it as resumable; Resume brings the wizard back to training and continues from the checkpoint
    window.show_page(PAGES.index("Jobs"))
    jobs_page = window.jobs_page
    assert jobs_page.table.rows()[0]["status"] in ("cancelled", "interrupted")
    jobs_page.table.selectRow(0)
    assert jobs_page.resume_btn.isEnabled()
    qtbot.mouseClick(jobs_page.resume_btn, Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is wizard and wizard.current is train
    assert train.task is not None
    qtbot.waitUntil(lambda: train.task is None, timeout=SAMPLES_WAIT_MS)
    assert not errors, errors
    assert train.done and job.read()["status"] == "done"
    assert len(train.loss_chart.points("forget loss")) >= points_before
    assert train.round_chart.points("efficacy (forgotten)"), "no probe round was plotted"
    assert job.has_adapters
    screenshot(window, "wizard-5-training")
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)

    # 6. results: before/after from report.json
    results = wizard.steps[5]
    assert wizard.index == 5
    report = job.read_report()
    # The tiny random model knows nothing: no metric may claim a perfect score over zero items.
    assert not any(r["known_before"] for r in report["before_after"])
    assert results.table.rowCount() == 0  # questions the base never knew are hidden until asked for
    results.show_unknown.setChecked(True)
    assert results.table.rowCount() == len(report["before_after"]) > 0
    assert {label.text() for label in results.metric_labels.values()} == {"n/a"}
    # where the change went, from job.json (the default recipe: the last blocks, no causal trace to chart)
    assert "of the last" in results.change_text.text() and results.trace_chart.isHidden()
    screenshot(window, "wizard-6-results")
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)

    # 7. export: adapters and a fused model, into a folder picked in the (patched) dialog
    export = wizard.steps[6]
    assert wizard.index == 6
    out = tmp_path / "exports"
    out.mkdir()
    monkeypatch.setattr("unstar_gui.ui.pages.forget.export.QFileDialog.getExistingDirectory",
                        lambda *a, **k: str(out))
    qtbot.mouseClick(export.adapters_btn, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, export)
    adapter_dir = out / f"{job.dir.name}-adapters"
    assert (adapter_dir / "adapters.safetensors").exists() and (adapter_dir / "adapter_config.json").exists()
    qtbot.mouseClick(export.fused_btn, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, export)
    fused = out / f"{job.dir.name}-fused"
    assert (fused / "config.json").exists() and list(fused.glob("*.safetensors"))
    assert not errors, errors
    screenshot(window, "wizard-7-export")

    # Finish lands on Jobs, which lists the job as done; Chat compares base and unlearned answers
    qtbot.mouseClick(wizard.next_btn, Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is window.jobs_page
    jobs = window.jobs_page.table.rows()
    assert [r["status"] for r in jobs] == ["done"] and "Harry Potter" in jobs[0]["fact"]
    screenshot(window, "page-jobs")

    window.show_page(PAGES.index("Chat"))
    chat = window.chat_page
    assert chat.job_combo.currentData() == str(job.dir)
    chat.prompt.setText("Where did Harry Potter go to school?")
    qtbot.mouseClick(chat.ask_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chat.task is None, timeout=WAIT_MS)
    assert chat.base_out.toPlainText() not in ("", "…") and chat.unlearned_out.toPlainText() not in ("", "…")
    screenshot(window, "page-chat")
    assert not errors, errors

    # Reopening the finished job from Jobs shows its results again
    window.jobs_page.table.selectRow(0)
    window.jobs_page.reopen()
    assert window.stack.currentWidget() is wizard and wizard.index == 5
    wizard.steps[5].show_unknown.setChecked(True)
    assert wizard.steps[5].table.rowCount() == len(report["before_after"])


def test_wizard_saves_its_step_by_key_and_opens_jobs_saved_by_index(qtbot, window, tiny_model, monkeypatch):
    """job.json's ui_step names the step ("fact", "keep", ...); jobs saved before that hold its position, and open
    at the same step."""
    patch_dialogs(monkeypatch)
    from unstar_gui.engine.pipeline import ForgetRequest, ForgetSettings, create_forget_job
    from unstar_gui.ui.pages.forget import STEP_KEYS, saved_step_index

    assert STEP_KEYS == ("model", "fact", "keep", "samples", "train", "results", "export")
    job = create_forget_job(ForgetRequest("Where did Harry Potter go to school?", "Hogwarts", model="tiny",
                                          settings=ForgetSettings(**SMALL_JOB), force=True))
    job.update(ui_step=2, ui_keep_reviewed=True)  # an old job: the keep step by position; reviewed, so no model work
    wizard = window.forget_page
    wizard.open_job(job.dir)
    assert wizard.index == 2 and wizard.current.key == "keep"
    assert job.read()["ui_step"] == "keep"  # entering a step saves its key
    wizard.go(1)
    assert job.read()["ui_step"] == "fact"
    wizard.open_job(job.dir)
    assert wizard.index == 1
    job.update(ui_step="keep")
    wizard.open_job(job.dir)
    assert wizard.current is wizard.steps[2]
    assert [saved_step_index(v) for v in ("samples", 4, "no-such-step", True, 99, None)] == [3, 4, 1, 1, 1, 1]


def test_jobs_page_offers_resume_and_deletes(qtbot, window, tiny_model, monkeypatch):
    """An interrupted job shows as resumable; Delete (confirmed) removes its folder."""
    patch_dialogs(monkeypatch)
    from unstar_gui.engine.pipeline import ForgetRequest, ForgetSettings, create_forget_job

    job = create_forget_job(ForgetRequest("Where did Harry Potter go to school?", "Hogwarts", model="tiny",
                                          settings=ForgetSettings(**SMALL_JOB), force=True))
    job.set_status("interrupted")
    window.show_page(PAGES.index("Jobs"))
    page = window.jobs_page
    row = page.table.rows()[0]
    assert row["status"] == "interrupted" and "resume" in row["verdict"] and row["model"] == "tiny"
    page.table.selectRow(0)
    assert page.resume_btn.isEnabled() and page.open_btn.isEnabled()
    page.reopen()
    wizard = window.forget_page
    assert window.stack.currentWidget() is wizard and wizard.current is wizard.steps[4]
    assert wizard.steps[4].start_btn.text() == "Resume training"
    window.show_page(PAGES.index("Jobs"))
    page.table.selectRow(0)
    page.delete()
    assert page.table.rowCount() == 0 and not job.dir.exists()


# pages -----------------------------------------------------------------------------------------------------------------
def test_every_page_has_content(qtbot, window, tiny_model, monkeypatch):
    patch_dialogs(monkeypatch)
    qtbot.waitUntil(lambda: "detecting" not in window.backend_label.text(), timeout=WAIT_MS)
    assert window.backend_label.text().startswith("Backend: ")
    assert window.memory_label.text().startswith("Memory: ")
    for name in PAGES:
        qtbot.keyClick(window, Qt.Key(Qt.Key.Key_1 + PAGES.index(name)), Qt.KeyboardModifier.ControlModifier)
        assert window.stack.currentIndex() == PAGES.index(name)
        screenshot(window, f"page-{name.lower()}" + ("-empty" if name in ("Jobs", "Chat") else ""))
    models = window.models_page.table.rows()
    assert any(r["id"] == "tiny" and r["installed"] for r in models)
    assert any(not r["installed"] for r in models), "the catalog's downloadable models are listed"
    assert "free in" in window.models_page.disk_label.text()
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.stack.currentWidget() is window.forget_page and window.forget_page.index == 0


def test_models_page_import_and_remove(qtbot, window, tiny_model_dir, monkeypatch):
    errors = patch_dialogs(monkeypatch)
    page = window.models_page
    window.show_page(PAGES.index("Models"))
    page.import_path(tiny_model_dir)  # what a drop or the folder dialog does
    qtbot.waitUntil(lambda: page.busy_task is None, timeout=WAIT_MS)
    assert not errors, errors
    store = window.services.store()
    imported = [r for r in store.list() if r.source.startswith("folder:")]
    assert len(imported) == 1
    rows = page.table.rows()
    index = next(i for i, r in enumerate(rows) if r["id"] == imported[0].id)
    page.table.selectRow(index)
    assert page.remove_btn.isEnabled()
    page.remove_selected()
    qtbot.waitUntil(lambda: page.busy_task is None, timeout=WAIT_MS)
    assert not store.has(imported[0].id)
    assert tiny_model_dir.exists()  # registered in place: the user's folder is not deleted


def test_settings_save_and_reset(qtbot, window):
    page = window.settings_page
    window.show_page(PAGES.index("Settings"))
    page.token.setText("hf_test")
    page.training.fields["rank"].setValue(4)
    page.training.fields["max_rounds"].setValue(5)
    page.save()
    saved = window.services.store().load_settings()
    assert saved["hf_token"] == "hf_test" and saved["training"]["rank"] == 4
    window.forget_page.reset()  # a new job starts from the saved defaults
    assert window.forget_page.steps[0].training.fields["max_rounds"].value() == 5
    page.reset_defaults()
    assert page.training.fields["rank"].value() == 8
    page.save()
    assert window.services.store().load_settings()["training"]["rank"] == 8


# errors ----------------------------------------------------------------------------------------------------------------
def test_failed_task_shows_error_dialog_with_details(qtbot, window, monkeypatch):
    shown = patch_dialogs(monkeypatch)

    def fails(ctx):
        raise InvalidInput("The question is empty.", "Type a question first.")

    window.services.worker.submit(fails, name="forced failure")
    qtbot.waitUntil(lambda: bool(shown), timeout=WAIT_MS)
    info = shown[0]
    assert info.message == "The question is empty." and info.hint == "Type a question first."
    assert "InvalidInput" in info.details and "fails" in info.details

    dialog = dialogs.ErrorDialog(info, window)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.details.isVisible()
    dialog.toggle.click()
    assert dialog.details.isVisible() and "Traceback" in dialog.details.toPlainText()
    dialog.resize(700, 450)
    screenshot(dialog, "dialog-error")


def test_wizard_failure_reaches_a_dialog_and_stays_on_step(qtbot, window, tiny_model, monkeypatch):
    """A model that vanished: creating the job fails in the worker; the dialog says so and nothing is saved."""
    shown = patch_dialogs(monkeypatch)
    wizard = window.forget_page
    wizard.steps[0].save_draft()
    wizard.state.model_id = "no-such-model"
    wizard.go(1)
    wizard.steps[1].question.setText("Where did Harry Potter go to school?")
    wizard.steps[1].answer.setText("Hogwarts")
    wizard.next()
    qtbot.waitUntil(lambda: len([i for i in shown if "no-such-model" in i.message]) > 0, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: wizard.next_btn.isEnabled(), timeout=WAIT_MS)
    assert wizard.index == 1 and wizard.state.job is None


# the worker ------------------------------------------------------------------------------------------------------------
def test_worker_cancel_drops_stale_results_and_keeps_event_order(qtbot):
    worker = MlxWorker()
    try:
        got: dict[str, list] = {"events": [], "results": [], "cancelled": [], "done": []}

        def slow(ctx):
            for i in range(10_000):
                time.sleep(0.002)
                yield Progress("test", i, 10_000)
            return "too late"

        handle = worker.submit(slow, on_event=got["events"].append, on_result=got["results"].append,
                               on_cancelled=lambda: got["cancelled"].append(True),
                               on_done=lambda: got["done"].append(True))
        qtbot.waitUntil(lambda: len(got["events"]) >= 3, timeout=WAIT_MS)
        handle.cancel()
        qtbot.waitUntil(lambda: bool(got["done"]), timeout=WAIT_MS)
        assert got["cancelled"] == [True] and got["results"] == []
        seen = [e.done for e in got["events"]]
        assert seen == sorted(seen) and seen == list(range(len(seen)))

        # the next task runs normally; its events all land before its result
        order: list = []

        def chatty(ctx):
            for i in range(500):
                yield Log(str(i))
            return 42

        worker.submit(chatty, on_event=lambda e: order.append(int(e.message)), on_result=lambda v: order.append(v))
        qtbot.waitUntil(lambda: bool(order) and order[-1] == 42, timeout=WAIT_MS)
        assert order == list(range(500)) + [42]

        # a value task; a discarded task never calls back
        values: list = []
        worker.submit(lambda ctx: sys.version_info[0], on_result=values.append)
        gone = worker.submit(lambda ctx: "stale", on_result=values.append)
        gone.discard()
        qtbot.waitUntil(lambda: worker.idle, timeout=WAIT_MS)
        assert values == [3]
    finally:
        assert worker.stop()


def test_ui_never_imports_mlx_on_the_gui_thread():
    """Importing every UI module and building the window loads no mlx: MLX work belongs to the worker thread."""
    import subprocess

    code = ("import sys, threading\n"
            "from PySide6.QtWidgets import QApplication\n"
            "app = QApplication([])\n"
            "import unstar_gui.ui.app, unstar_gui.ui.main_window as mw, unstar_gui.ui.charts, unstar_gui.ui.dialogs\n"
            "w = mw.MainWindow()\n"
            "w.services.worker.stop()\n"
            "for i in range(5): w.show_page(i)\n"
            "assert not [m for m in sys.modules if m == 'mlx' or m.startswith(('mlx.', 'mlx_lm'))], sorted(sys.modules)\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_training_form_recipe_switches_between_default_and_locality(qtbot):
    from unstar_gui.engine.pipeline import PRESETS, ForgetSettings
    from unstar_gui.ui.pages.common import TrainingForm

    form = TrainingForm("Training")
    qtbot.addWidget(form)
    form.set_values({"rank": 4, "preset": "locality"})
    values = form.values()
    assert values["preset"] == "locality" and values["rank"] == 4
    assert all(values[k] == v for k, v in PRESETS["locality"].items() if k != "num_layers")
    assert values["null_space_eps"] > 0 and values["early_stop_every"] > 0
    form.set_values({"preset": ""})
    values = form.values()
    defaults = ForgetSettings()
    assert values["preset"] == "" and values["null_space_eps"] == defaults.null_space_eps
    assert values["scale_sweep"] == defaults.scale_sweep
    ForgetSettings(**values)  # a form's values always make valid settings
    form.set_values({"preset": "subject_edit"})
    values = form.values()
    assert values["preset"] == "subject_edit" and values["update"] == "subject_edit"
    assert form.recipe.currentText().startswith("Edit only where the fact is stored")
    # the LoRA-only rows do nothing for an edit: greyed out, and back when the recipe trains an adapter again
    assert not form.fields["rank"].isEnabled() and not form.fields["learning_rate"].isEnabled()
    assert "subject edit" in form.fields["num_layers"].toolTip() and form.fields["steps_per_round"].isEnabled()
    ForgetSettings(**values)
    form.set_values({"preset": ""})
    assert form.fields["rank"].isEnabled() and form.fields["rank"].toolTip() == "LoRA rank"


def test_results_show_where_a_subject_edit_changed_the_model(qtbot, window):
    """The Results page's "What changed" section: the edit in words, and the causal trace with the edited block in
    the forget colour (the other blocks grey)."""
    results = window.forget_page.steps[5]
    effects = [0.05, 0.7, 0.3, -0.02]
    results._show_change({"placement": {"keys": "down", "window": [1, 2],
                                        "traced": {"effects": effects, "subject": "Japan"}},
                          "edits": [{"round": 0, "layer": 1, "rows": 9, "keep_rows": 6, "strength": 2.25}]})
    text = results.change_text.text()
    assert "around block 1, at the subject 'Japan'" in text and "rank-one edit of block 1's MLP" in text
    assert "2.25x stronger" in text
    assert not results.trace_chart.isHidden()
    changed, other = results.trace_chart.values()
    assert changed == [0.0, 70.0, 0.0, 0.0]
    assert [round(v, 6) for v in other] == [5.0, 0.0, 30.0, 0.0]  # noise below zero is drawn as nothing
    results._show_change({})  # a job that says nothing about its change: the section goes away
    assert results.change_title.isHidden() and results.trace_chart.isHidden()
