"""Hostile and damaged input: every case ends in a clear UnstarError, runs no code from a model folder, writes
nothing outside the data folder and leaves the data folder as it was where nothing should change."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from unstar_gui.cli import main
from unstar_gui.engine.errors import ImportFailed, InvalidInput, StorageError, UnstarError, UnsupportedModel
from unstar_gui.engine.fsutil import append_jsonl, read_jsonl
from unstar_gui.engine.headers import read_gguf_header, read_safetensors_header
from unstar_gui.engine.importers import import_any
from unstar_gui.engine.store import ModelStore


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes: 'byte-for-byte unchanged' is equality of two of these."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.err


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# untrusted model folders ---------------------------------------------------------------------------------------------
def test_auto_map_folder_never_runs_its_code(tiny_model_dir, tmp_path, unstar_home, capsys):
    folder = copy_model(tiny_model_dir, tmp_path / "evil")
    marker = tmp_path / "code-ran"
    (folder / "tokenization_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    before = snapshot(unstar_home)
    rc, err = cli(capsys, "models", "import", str(folder))
    assert rc == UnsupportedModel.exit_code and "runs code from a model folder" in err.replace("never runs", "runs")
    assert not marker.exists()
    assert snapshot(unstar_home) == before
    # Every load goes through load_model_files, which refuses remote code: asked directly, it either loads the plain
    # tokenizer or fails, but the folder's Python never runs (mlx_lm.load alone would run it: its default trusts).
    from unstar_gui.engine.llm import load_model_files

    try:
        load_model_files(folder)
    except Exception:
        pass
    assert not marker.exists()


@pytest.mark.parametrize("bad_id", ["../x", "../../escape", "a/b", ".", "..", "/abs/path", "a..b", ""])
def test_bad_model_ids_are_refused_before_any_file_operation(tiny_model_dir, tmp_path, unstar_home, capsys,
                                                             bad_id):
    outside = unstar_home.parent / "escape"
    before = snapshot(unstar_home)
    rc, err = cli(capsys, "models", "import", str(tiny_model_dir), "--copy", "--id", bad_id)
    assert rc == InvalidInput.exit_code and "not a valid model id" in err
    assert snapshot(unstar_home) == before and not outside.exists() and not (unstar_home.parent / "x").exists()


def test_preexisting_folder_at_an_ids_place_is_never_touched(tiny_model_dir, unstar_home, capsys):
    own = ModelStore().models_dir / "mine"
    own.mkdir(parents=True)
    (own / "notes.txt").write_text("mine")
    rc, err = cli(capsys, "models", "import", str(tiny_model_dir), "--copy", "--id", "mine")
    assert rc == InvalidInput.exit_code and "not a registered model" in err
    assert (own / "notes.txt").read_text() == "mine"


def test_symlink_under_models_cannot_lead_outside(tiny_model_dir, tmp_path, unstar_home, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    ModelStore().models_dir.mkdir(parents=True, exist_ok=True)
    (ModelStore().models_dir / "link").symlink_to(target, target_is_directory=True)
    rc, err = cli(capsys, "models", "import", str(tiny_model_dir), "--copy", "--id", "link")
    assert rc == InvalidInput.exit_code and "outside the data folder" in err
    assert list(target.iterdir()) == []


def test_registry_path_outside_models_is_never_deleted(tiny_model, tmp_path, unstar_home):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("x")
    reg = json.loads(ModelStore().registry_path.read_text())
    reg["models"]["tiny"]["path"] = str(ModelStore().models_dir / ".." / ".." / victim.name)
    ModelStore().registry_path.write_text(json.dumps(reg))
    ModelStore().remove("tiny")
    assert (victim / "keep.txt").exists()


# GGUF and safetensors headers ----------------------------------------------------------------------------------------
def _first_key_len_offset() -> int:
    return 4 + 4 + 8 + 8  # magic, version, tensor count, kv count


def test_gguf_with_a_huge_key_length_is_a_clear_error_not_a_crash(tiny_gguf, tmp_path, unstar_home, capsys):
    data = bytearray(tiny_gguf.read_bytes())
    struct.pack_into("<Q", data, _first_key_len_offset(), 2 ** 62)
    bad = tmp_path / "huge-key.gguf"
    bad.write_bytes(bytes(data))
    before = snapshot(unstar_home)
    # In a child process: were native code to see this file, a segfault would show as a negative return code.
    proc = subprocess.run([sys.executable, "-m", "unstar_gui", "models", "import", str(bad)], capture_output=True,
                          text=True, env=dict(os.environ, UNSTAR_HOME=str(unstar_home)), timeout=120)
    assert proc.returncode == ImportFailed.exit_code, proc.stderr
    assert "not a valid GGUF file" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(unstar_home) == before
    assert not list(ModelStore().models_dir.glob(".import-*"))


def test_corrupt_safetensors_header_is_a_clear_error(tiny_model_dir, tmp_path, unstar_home, capsys):
    folder = copy_model(tiny_model_dir, tmp_path / "bad-header")
    weights = folder / "model.safetensors"
    raw = weights.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    weights.write_bytes(raw[:8] + b"{" * n + raw[8 + n:])  # same length, not JSON
    before = snapshot(unstar_home)
    rc, err = cli(capsys, "models", "import", str(folder))
    assert rc == ImportFailed.exit_code and "not a valid safetensors file" in err
    assert snapshot(unstar_home) == before


def test_truncated_weights_and_empty_tokenizer_are_not_registered(tiny_model_dir, tmp_path, unstar_home, capsys):
    cut = copy_model(tiny_model_dir, tmp_path / "cut")
    (cut / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes()[:-1000])
    empty_tok = copy_model(tiny_model_dir, tmp_path / "empty-tok")
    (empty_tok / "tokenizer.json").write_text("")
    before = snapshot(unstar_home)
    for folder, words in ((cut, "outside the file"), (empty_tok, "tokenizer.json is not valid JSON")):
        rc, err = cli(capsys, "models", "import", str(folder))
        assert rc == ImportFailed.exit_code and words in err, err
    assert snapshot(unstar_home) == before


def test_weights_mlx_lm_refuses_are_not_registered(tiny_model_dir, tmp_path, unstar_home, capsys):
    """Valid files whose config promises a layer the weights lack: the load-and-one-token check catches it."""
    folder = copy_model(tiny_model_dir, tmp_path / "missing-layer")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] += 1
    (folder / "config.json").write_text(json.dumps(cfg))
    before = snapshot(unstar_home)
    rc, err = cli(capsys, "models", "import", str(folder))
    assert rc == ImportFailed.exit_code and "does not load as a working model" in err, err
    assert snapshot(unstar_home) == before


def _mutants(data: bytes, header_end: int, n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        b = bytearray(data)
        kind = i % 4
        if kind == 0:  # a few random bytes in the header
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(header_end)] = rng.randrange(256)
        elif kind == 1:  # a length or count field set to something huge
            pos = rng.randrange(0, header_end - 8)
            struct.pack_into("<Q", b, pos, rng.choice([2 ** 63, 2 ** 40, len(data) * 3, 0xFFFFFFFF]))
        elif kind == 2:  # cut anywhere
            b = b[:rng.randrange(1, len(b))]
        else:  # a 32-bit field (types, dims, version) scrambled
            pos = rng.randrange(0, header_end - 4)
            struct.pack_into("<I", b, pos, rng.randrange(2 ** 32))
        out.append(bytes(b))
    return out


def test_fuzzed_gguf_files_end_in_clear_errors(tiny_gguf, tmp_path, unstar_home):
    """A few hundred mutated copies of a valid GGUF: each imports or ends in an UnstarError; nothing else."""
    data = tiny_gguf.read_bytes()
    header_end = read_gguf_header(tiny_gguf).data_start
    store = ModelStore()
    refused = imported = 0
    for i, blob in enumerate(_mutants(data, header_end, 240, seed=1)):
        f = tmp_path / f"m{i}.gguf"
        f.write_bytes(blob)
        before = snapshot(unstar_home)
        try:
            record = import_any(store, f, f"fuzz-{i}")
        except UnstarError as exc:
            assert exc.message and exc.hint, exc
            assert snapshot(unstar_home) == before, f"mutant {i} changed the data folder"
            refused += 1
        else:
            imported += 1
            store.remove(record.id)
        f.unlink()
        assert not list(store.models_dir.glob(".import-*")), f"mutant {i} left a staging folder"
    assert refused > 150  # the mutations mostly break something the checks must see


def test_fuzzed_safetensors_headers_end_in_clear_errors(tiny_model_dir, tmp_path):
    import mlx.core as mx

    data = (tiny_model_dir / "model.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    refused = 0
    for i, blob in enumerate(_mutants(data, header_end, 200, seed=2)):
        f = tmp_path / f"m{i}.safetensors"
        f.write_bytes(blob)
        try:
            read_safetensors_header(f)
        except ValueError:
            refused += 1
        else:
            mx.load(str(f))  # the header passed: the native reader must cope too
        f.unlink()
    assert refused > 100


# damaged records -----------------------------------------------------------------------------------------------------
@pytest.fixture
def finished_job_dir(tiny_model, tmp_path) -> Path:
    from unstar_gui.engine.jobs import create_job

    job = create_job(tmp_path / "job", {"fact": {"question": "Q?", "answer": "A"},
                                        "model": {"id": "tiny", "path": tiny_model.path}, "settings": {}})
    return job.dir


@pytest.mark.parametrize("content", ["[1, 2, 3]", '{"status": "running"}', '{"fact": "x", "model": {}}',
                                     "not json {", '{"fact": {"question": "Q", "answer": "A"}, "model": {"id": "t"},'
                                     ' "status": "exploded"}'])
def test_damaged_job_json_is_reported_and_never_rewritten(finished_job_dir, tmp_path, capsys, content):
    path = finished_job_dir / "job.json"
    path.write_text(content)
    for argv in (["forget", "--resume", str(finished_job_dir)], ["eval", "--job", str(finished_job_dir)],
                 ["export", "--job", str(finished_job_dir), "--adapter", str(tmp_path / "out")]):
        rc, err = cli(capsys, *argv)
        assert rc == StorageError.exit_code, (argv, err)
        assert "job.json is damaged" in err and "left exactly as it is" in err
        assert path.read_text() == content
    from unstar_gui.engine.jobs import list_jobs

    listed = [j for j in list_jobs(ModelStore()) if j["dir"] == str(finished_job_dir)]
    assert path.read_text() == content and (not listed or listed[0]["status"] == "failed")


@pytest.mark.parametrize("content", ['[]', '{"models": []}', '{"models": {"x": 5}}',
                                     '{"models": {"x": {"id": "x", "path": 3}}}', "\x00\x01binary"])
def test_damaged_registry_is_reported_then_set_aside_by_doctor(unstar_home, capsys, content):
    reg = ModelStore().registry_path
    reg.parent.mkdir(parents=True, exist_ok=True)
    reg.write_text(content)
    rc, err = cli(capsys, "models", "list")
    assert rc == StorageError.exit_code and "registry.json is damaged" in err and "doctor --clean" in err
    assert reg.read_text() == content
    assert main(["doctor", "--clean"]) == 0
    aside = list(reg.parent.glob("registry.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == content and not reg.exists()


def test_metrics_file_damage(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 1})
    with open(path, "a") as fh:
        fh.write('{"step": 2, "lo')  # a process killed mid-line
    append_jsonl(path, {"step": 3})  # the next run starts a fresh line
    assert read_jsonl(path) == [{"step": 1}, {"step": 3}]
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(StorageError, match="metrics.jsonl is damaged"):
        read_jsonl(path)
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(StorageError, match="line 2 is not a JSON object"):
        read_jsonl(path)


# silent acceptance, outputs, data folder -----------------------------------------------------------------------------
@pytest.mark.parametrize("flags, words", [(["--lr", "inf"], "Learning rate (--lr) must be a finite number"),
                                          (["--retain-weight", "nan"],
                                           "Retain weight (--retain-weight) must be a finite number"),
                                          (["--attacks", "bogus"], "Unknown attack 'bogus'")])
def test_bad_numbers_and_attacks_stop_before_a_job_exists(tiny_model, unstar_home, capsys, flags, words):
    rc, err = cli(capsys, "forget", "--model", "tiny", "-q", "Where did Harry Potter go to school?", "-a", "Hogwarts",
                  *flags)
    assert rc == InvalidInput.exit_code and words in err, err
    assert not ModelStore().jobs_dir.exists() or not any(ModelStore().jobs_dir.iterdir())


def test_report_never_overwrites_a_jobs_own_files(finished_job_dir, capsys):
    from unstar_gui.engine.jobs import open_job

    open_job(finished_job_dir).write_report({"metrics": {}})
    before = snapshot(finished_job_dir)
    for target in ("job.json", "report.json"):
        rc, err = cli(capsys, "report", "--job", str(finished_job_dir), "--html", str(finished_job_dir / target))
        assert rc == InvalidInput.exit_code and ("does not end in .html" in err or "not overwritten" in err), err
    (finished_job_dir / "notes.html").write_text("mine")
    before = snapshot(finished_job_dir)
    rc, err = cli(capsys, "report", "--job", str(finished_job_dir), "--html", str(finished_job_dir / "notes.html"))
    assert rc == InvalidInput.exit_code and "not overwritten" in err
    assert snapshot(finished_job_dir) == before


def test_forget_out_must_be_new_or_empty(tiny_model, tmp_path, capsys):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "thesis.tex").write_text("chapter 1")
    rc, err = cli(capsys, "forget", "--model", "tiny", "-q", "Q?", "-a", "A", "--out", str(mine))
    assert rc == InvalidInput.exit_code and "not an empty folder" in err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


def test_unwritable_data_folder_fails_before_any_model_load(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("UNSTAR_HOME", str(blocker / "data"))  # can't be created: its parent is a file
    rc, err = cli(capsys, "forget", "-q", "Q?", "-a", "A")
    assert rc == StorageError.exit_code and "not writable" in err and "Traceback" not in err


def test_doctor_clean_removes_leftovers_and_keeps_partial_downloads(unstar_home, capsys):
    models = ModelStore().models_dir
    stale = models / ".import-abc123"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    os.utime(stale, (0, 0))
    fresh = models / ".import-running"
    fresh.mkdir()
    (models / ".download-foo.lock").write_bytes(b"")
    partial = models / ".download-foo"
    partial.mkdir()
    (partial / "model.safetensors.part").write_bytes(b"y" * 10)
    assert main(["doctor", "--clean"]) == 0
    out = capsys.readouterr().out
    assert not stale.exists() and fresh.exists() and partial.exists()
    assert not (models / ".download-foo.lock").exists()
    assert "partial download" in out and "freed 1.0 KB" in out


# killed processes ----------------------------------------------------------------------------------------------------
def test_a_signal_stop_stays_an_interruption_when_a_plain_cancel_follows():
    """The app's SIGTERM handler cancels with reason "signal", then stopping the worker cancels again: the job must
    still end as interrupted (resumable), not as cancelled by the user."""
    from unstar_gui.engine.errors import Cancelled, Interrupted
    from unstar_gui.engine.trainer import CancelToken

    token = CancelToken()
    token.cancel(reason="signal")
    token.cancel()
    with pytest.raises(Interrupted):
        token.check()
    plain = CancelToken()
    plain.cancel()
    with pytest.raises(Cancelled) as info:
        plain.check()
    assert not isinstance(info.value, Interrupted)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["wrong_answers", "train", "evaluate"])
def test_kill_9_at_any_moment_then_resume_finishes_with_a_valid_adapter(tiny_model, tmp_path, unstar_home, moment):
    """kill -9 during sample generation, training and the final writes: `--resume` ends each job with an adapter
    that plain mlx-lm loads."""
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten

    from tests.test_pipeline import resume_in_child, tiny_request
    from unstar_gui.engine.events import Finished
    from unstar_gui.engine.jobs import effective_status, open_job
    from unstar_gui.engine.pipeline import create_forget_job, resume_forget

    job = create_forget_job(tiny_request(tmp_path, "killed", steps_per_round=6))
    proc = resume_in_child(job.dir, unstar_home, "--json", stdout=subprocess.PIPE)
    seen = False
    for line in proc.stdout:
        ev = json.loads(line)
        if (moment == "train" and ev.get("event") == "TrainStep" and ev["step"] == 3) or (
                ev.get("event") == "StageStarted" and ev.get("stage") == moment):
            proc.kill()
            seen = True
            break
    _, err = proc.communicate()
    assert seen, f"the job never reached {moment}: {err[-2000:]}"
    assert effective_status(open_job(job.dir).read()) == "interrupted"
    events = list(resume_forget(job.dir))
    assert isinstance(events[-1], Finished) and open_job(job.dir).status == "done"
    model, _ = mlx_lm.load(tiny_model.path, adapter_path=str(job.dir / "adapters"))
    lora = [v for k, v in tree_flatten(model.parameters()) if "lora_" in k]
    assert lora and all(bool(mx.all(mx.isfinite(v)).item()) for v in lora)
