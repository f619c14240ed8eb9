"""Model downloads over real HTTP against a fake Hub on 127.0.0.1: progress, cancel, resume, checks, errors, CLI."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.fake_hub import FakeHub, FakeRepo, corrupt_header, sharded_model_files
from unstar_gui.engine import hub as hub_module
from unstar_gui.engine.catalog import catalog_entries, get_entry, load_catalog
from unstar_gui.engine.errors import Cancelled, DownloadError, InvalidInput, StorageError
from unstar_gui.engine.events import DownloadProgress, Finished, Log, StageStarted
from unstar_gui.engine.hub import discard_partial, download_model, safetensors_tensor_names
from unstar_gui.engine.store import EMBEDDED_ID, ModelStore, partial_bytes, staging_dir

REPO = "org/tiny"
SHARD1 = "model-00001-of-00002.safetensors"  # the bigger shard (about 280 KB)
MODEL_FILES = (SHARD1, "model-00002-of-00002.safetensors", "model.safetensors.index.json", "config.json",
               "tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="session")
def repo_files(tiny_model_dir) -> dict[str, bytes]:
    return sharded_model_files(tiny_model_dir)


@pytest.fixture
def fake_hub(repo_files, monkeypatch):
    """A fresh fake Hub per test; huggingface_hub's offline switch (set by conftest) is lifted for it."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_module, "_RETRY_DELAYS_S", (0.05, 0.05))
    corrupt = dict(repo_files, **{SHARD1: corrupt_header(repo_files[SHARD1])})
    hub = FakeHub({REPO: FakeRepo(repo_files), "org/gated": FakeRepo(repo_files, gated=True),
                   "org/corrupt": FakeRepo(corrupt)})
    with hub:
        yield hub


def model_bytes(files: dict[str, bytes]) -> int:
    return sum(len(files[name]) for name in MODEL_FILES)


def run(source=REPO, hub=None, **kwargs) -> list:
    kwargs.setdefault("model_id", "tiny-dl")
    return list(download_model(source, endpoint=hub.url if hub else kwargs.pop("endpoint"), **kwargs))


def nothing_installed(store: ModelStore, model_id: str = "tiny-dl") -> bool:
    return not store.has(model_id) and not store.model_dir_for(model_id).exists()


def download_until(hub: FakeHub, stop_when, cancel: threading.Event, **kwargs) -> tuple[list, float]:
    """Download, setting `cancel` once stop_when(progress_events) is true; returns (events, seconds to stop)."""
    events, cancelled_at = [], None
    with pytest.raises(Cancelled) as info:
        for ev in download_model(REPO, endpoint=hub.url, model_id="tiny-dl", cancel=cancel, **kwargs):
            events.append(ev)
            progress = [e for e in events if isinstance(e, DownloadProgress)]
            if cancelled_at is None and progress and stop_when(progress):
                cancel.set()
                cancelled_at = time.monotonic()
    assert "Run the same download again" in info.value.hint
    return events, time.monotonic() - cancelled_at


# the happy path ------------------------------------------------------------------------------------------------------

def test_download_registers_a_model_that_loads_and_answers_like_the_original(fake_hub, repo_files, tiny_model_dir):
    from mlx_lm import load

    from unstar_gui.engine.llm import LLM

    events = run(hub=fake_hub)
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.summary["model_id"] == "tiny-dl"
    total = model_bytes(repo_files)
    progress = [e for e in events if isinstance(e, DownloadProgress)]
    assert progress[-1].done_bytes == progress[-1].total_bytes == total
    assert finished.summary["downloaded_bytes"] == total == fake_hub.served()
    assert any(isinstance(e, StageStarted) and e.stage == "verify" for e in events)
    # only what mlx-lm loads, and only the weight files the index names
    fetched = {p.rsplit("/", 1)[-1] for p in fake_hub.requested() if "/resolve/" in p}
    assert fetched == set(MODEL_FILES)

    record = ModelStore().get("tiny-dl")
    assert record.source == f"hub:{REPO}@{FakeRepo({}).sha}" and record.revision == FakeRepo({}).sha
    assert record.size_bytes == total and record.architecture == "llama"
    assert record.default  # the first model of an empty library
    assert not staging_dir(ModelStore(), "tiny-dl").exists()
    assert not list(ModelStore().models_dir.glob(".download-*"))  # no lock file or staging folder is left
    model, tokenizer = load(record.path)
    assert tokenizer.encode("Paris")
    question = ["What is the capital of France?"]
    assert LLM(record.path).answer(question, max_tokens=6) == LLM(tiny_model_dir).answer(question, max_tokens=6)

    # a second call finds it installed and fetches nothing
    served = fake_hub.served()
    again = run(hub=fake_hub)
    assert again[-1].summary["already_installed"] and fake_hub.served() == served


# cancel and resume ---------------------------------------------------------------------------------------------------

def test_cancel_mid_file_stops_fast_and_the_next_call_fetches_only_the_rest(fake_hub, repo_files):
    fake_hub.faults.bytes_per_s = 150_000
    events, stop_s = download_until(fake_hub, lambda p: p[-1].done_bytes > 120_000, threading.Event())
    assert stop_s < 2.0
    time.sleep(0.3)  # let the server notice the closed connection
    first = fake_hub.served()
    total = model_bytes(repo_files)
    assert first < total * 0.7, "the transfer went on after cancel"
    store = ModelStore()
    assert nothing_installed(store)
    kept = partial_bytes(store, "tiny-dl")
    assert kept > 100_000
    assert next(e for e in catalog_entries(store) if e.id == EMBEDDED_ID).installed

    fake_hub.faults.bytes_per_s = None
    events = run(hub=fake_hub)
    second = fake_hub.served() - first
    assert second < total - 100_000, "the resumed download fetched the kept bytes again"
    assert any(r.startswith("bytes=") for _, _, r in fake_hub.requests), "no Range request was made"
    assert events[-1].summary["resumed_bytes"] > 100_000
    assert "continuing with" in next(e.message for e in events if isinstance(e, StageStarted) and "files" in e.message)
    assert store.has("tiny-dl") and partial_bytes(store, "tiny-dl") == 0


def test_cancel_on_a_stalled_connection_returns_at_once_and_the_worker_keeps_the_lock(fake_hub):
    fake_hub.faults.stall_after[SHARD1] = 50_000
    seen = []

    def stalled(progress):  # the same byte count for half a second while the shard is the current file
        seen.append((time.monotonic(), progress[-1].done_bytes, progress[-1].file))
        recent = [d for t, d, f in seen if t > time.monotonic() - 0.5 and f == SHARD1]
        return len(recent) >= 2 and len(set(recent)) == 1 and seen[0][0] < time.monotonic() - 0.6

    _, stop_s = download_until(fake_hub, stalled, threading.Event())
    assert stop_s < 2.0  # the default read timeout is 30 s: cancel did not wait for it
    # the cancelled worker is still blocked on its read: a new attempt must not write into the same file
    with pytest.raises(DownloadError, match="still stopping"):
        run(hub=fake_hub)
    del fake_hub.faults.stall_after[SHARD1]  # data flows again: the old worker sees it was cancelled and exits
    deadline = time.monotonic() + 10
    while True:
        try:
            events = run(hub=fake_hub)
            break
        except DownloadError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert isinstance(events[-1], Finished) and events[-1].summary["resumed_bytes"] >= 50_000


# failures ------------------------------------------------------------------------------------------------------------

def test_dropped_connection_is_retried_then_explained_and_resumable(fake_hub, repo_files):
    fake_hub.faults.drop_after[SHARD1] = 100_000
    with pytest.raises(DownloadError, match="connection to .* broke") as info:
        run(hub=fake_hub)
    assert "continue" in info.value.hint
    store = ModelStore()
    assert nothing_installed(store)
    gets_of_shard = [p for p in fake_hub.requested() if p.endswith(SHARD1)]
    assert len(gets_of_shard) == 1 + len(hub_module._RETRY_DELAYS_S) + 1  # first try, retries, the last straw
    first = fake_hub.served()

    del fake_hub.faults.drop_after[SHARD1]
    run(hub=fake_hub)
    assert fake_hub.served() - first == len(repo_files[SHARD1]) - 100_000  # exactly the missing tail
    assert store.has("tiny-dl")


def test_server_error_mid_download_explains_and_registers_nothing(fake_hub):
    fake_hub.faults.status[SHARD1] = 500
    with pytest.raises(DownloadError, match=r"server error \(HTTP 500\)") as info:
        run(hub=fake_hub)
    assert "try again" in info.value.hint
    store = ModelStore()
    assert nothing_installed(store) and store.list() == []
    kept = partial_bytes(store, "tiny-dl")  # the smaller files arrived before the failing shard
    assert kept > 0 and discard_partial(store, "tiny-dl") == kept and partial_bytes(store, "tiny-dl") == 0
    assert not list(store.models_dir.glob(".download-*.lock"))  # a failure leaves no lock file either


def test_hub_listing_down_explains(fake_hub):
    fake_hub.faults.api_status = 503
    with pytest.raises(DownloadError, match=r"HTTP 503"):
        run(hub=fake_hub)


def test_full_disk_is_refused_before_any_weights_move(fake_hub, monkeypatch):
    monkeypatch.setenv("UNSTAR_FAKE_FREE_BYTES", "1000")
    with pytest.raises(StorageError, match="Not enough disk space"):
        run(hub=fake_hub)
    assert fake_hub.served(".safetensors") == 0
    assert nothing_installed(ModelStore())


def test_repo_with_a_corrupt_safetensors_file_is_rejected(fake_hub):
    with pytest.raises(DownloadError, match="not a valid safetensors file") as info:
        run("org/corrupt", hub=fake_hub)
    assert "Nothing was installed" in info.value.hint
    store = ModelStore()
    assert nothing_installed(store) and partial_bytes(store, "tiny-dl") == 0


def test_bytes_damaged_in_transit_are_caught_and_fetched_again(fake_hub, repo_files):
    fake_hub.faults.tamper.add(SHARD1)
    with pytest.raises(DownloadError, match="arrived damaged"):
        run(hub=fake_hub)
    assert nothing_installed(ModelStore())
    first = fake_hub.served()
    fake_hub.faults.tamper.clear()
    run(hub=fake_hub)
    assert fake_hub.served() - first == len(repo_files[SHARD1])  # only the damaged file came again


def test_silent_connection_times_out_with_a_clear_message_and_restart_starts_over(fake_hub, repo_files, monkeypatch):
    monkeypatch.setattr(hub_module, "_READ_TIMEOUT_S", 0.3)
    fake_hub.faults.stall_after[SHARD1] = 10_000
    with pytest.raises(DownloadError, match="stopped answering"):
        run(hub=fake_hub)
    del fake_hub.faults.stall_after[SHARD1]
    assert partial_bytes(ModelStore(), "tiny-dl") > 10_000
    before = len(fake_hub.requests)
    events = run(hub=fake_hub, restart=True)  # start over instead of continuing
    assert any(isinstance(e, Log) and "Discarding" in e.message for e in events)
    summary = events[-1].summary
    assert summary["resumed_bytes"] == 0 and summary["downloaded_bytes"] == model_bytes(repo_files)
    assert not [r for _, _, r in fake_hub.requests[before:] if r], "a restarted download sent a Range request"


def test_offline_missing_repo_and_missing_revision_messages(fake_hub):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(DownloadError, match="Cannot connect to") as info:
        run(endpoint=dead)
    assert "internet connection" in info.value.hint
    with pytest.raises(DownloadError, match="There is no model 'org/nope'"):
        run("org/nope", hub=fake_hub)
    with pytest.raises(DownloadError, match="has no revision 'v9'"):
        run(hub=fake_hub, revision="v9")
    with pytest.raises(InvalidInput, match="neither a catalog model nor a Hub repo id"):
        run("not a repo", hub=fake_hub)


def test_gated_repo_needs_a_token_with_access(fake_hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(Path(os.environ["UNSTAR_HOME"]) / "hf-home"))  # no `hf auth login` token
    with pytest.raises(DownloadError, match="gated model") as info:
        run("org/gated", hub=fake_hub)
    assert "HF_TOKEN" in info.value.hint and fake_hub.served() == 0
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(DownloadError, match="token has no access"):
        run("org/gated", hub=fake_hub)
    monkeypatch.delenv("HF_TOKEN")
    store = ModelStore()
    store.save_settings({"hf_token": fake_hub.token})  # the app's Settings
    assert isinstance(run("org/gated", hub=fake_hub)[-1], Finished)


# catalog -------------------------------------------------------------------------------------------------------------

def test_catalog_lists_the_default_mistral_and_the_embedded_model():
    entries = load_catalog()
    default = [e for e in entries if e.default]
    assert [e.repo for e in default] == ["mlx-community/Mistral-7B-Instruct-v0.3-4bit"]
    assert {"mlx-community/Mistral-7B-Instruct-v0.2-4bit", "mlx-community/Llama-3.2-3B-Instruct-4bit",
            "mlx-community/Qwen2.5-1.5B-Instruct-4bit", "mlx-community/Qwen2.5-3B-Instruct-4bit"} <= {
        e.repo for e in entries}
    for e in entries:
        assert e.size_bytes > 0 and 0 < e.run_memory_gb <= e.train_memory_gb and e.license
    embedded = get_entry(EMBEDDED_ID)
    assert embedded.embedded and not embedded.repo
    assert get_entry("mlx-community/mistral-7b-instruct-v0.3-4bit").id == "mistral-7b-instruct-v0.3-4bit"
    with pytest.raises(InvalidInput):
        get_entry("nope")


def test_safetensors_check_reads_real_files_and_rejects_truncated_ones(tiny_model_dir, tmp_path):
    names = safetensors_tensor_names(tiny_model_dir / "model.safetensors")
    assert "model.embed_tokens.weight" in names
    cut = tmp_path / "model.safetensors"
    cut.write_bytes((tiny_model_dir / "model.safetensors").read_bytes()[:-10])
    with pytest.raises(ValueError, match="tensor .* lies outside the file|cover"):
        safetensors_tensor_names(cut)


# the command line ----------------------------------------------------------------------------------------------------

def _unstar_on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Run `unstar` with its stdout on a pseudo-terminal (the live progress line only shows on a terminal)."""
    exe = shutil.which("unstar") or os.path.join(os.path.dirname(sys.executable), "unstar")
    master, slave = pty.openpty()
    proc = subprocess.Popen([exe, *args], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), out.decode(errors="replace")


def test_cli_download_shows_a_live_progress_line_and_chat_works_after(fake_hub, unstar_home, capsys, tiny_model_dir):
    from unstar_gui.cli import main
    from unstar_gui.engine.llm import LLM

    assert main(["models", "catalog"]) == 0
    assert "mistral-7b-instruct-v0.3-4bit" in capsys.readouterr().out

    fake_hub.faults.bytes_per_s = 400_000  # about a second: several updates of the live line
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(HF_ENDPOINT=fake_hub.url, HF_HUB_OFFLINE="0", UNSTAR_HOME=str(unstar_home))
    rc, out = _unstar_on_a_terminal(["models", "download", REPO, "--id", "tiny-cli"], env)
    assert rc == 0, out
    live = [line for line in out.split("\r\x1b[K") if "%" in line]
    assert len(live) >= 3 and "/s" in live[-1], out  # percent, bytes, speed, rewritten in place
    assert "installed tiny-cli" in out and "unstar chat --model tiny-cli" in out

    # in this process (same data folder); sampled, so that the random tiny model says something: the same words
    # as the original weights
    question = "What is the capital of France?"
    assert main(["chat", "--model", "tiny-cli", "--max-tokens", "6", "--temperature", "1.0", "--seed", "1", "--json",
                 question]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"] == "tiny-cli" and answer["answer"].strip()
    assert answer["answer"] == LLM(tiny_model_dir).answer([question], max_tokens=6, temperature=1.0, seed=1)[0]
