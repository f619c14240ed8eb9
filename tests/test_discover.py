"""Finding the models people already have: fake LM Studio and Ollama folders laid out like the real ones, holding the
tiny GGUF (as a plain file and as a content-addressed blob with its manifest), a non-llama GGUF, and broken files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from unstar_gui.engine import discover
from unstar_gui.engine.store import ModelStore

MODEL_LAYER = "application/vnd.ollama.image.model"


def with_file_type(src: Path, out: Path, file_type: int) -> Path:
    """`src` rewritten with general.file_type set (llama.cpp records it; our own test files do not)."""
    import mlx.core as mx

    tensors, meta = mx.load(str(src), return_metadata=True)
    mx.save_gguf(str(out), tensors, dict(meta, **{"general.file_type": mx.array(file_type, dtype=mx.uint32)}))
    return out


def add_ollama_model(models: Path, gguf: Path, namespace: str, model: str, tag: str) -> Path:
    """Lay `gguf` out the way `ollama pull` does: blobs/sha256-<hex> plus a manifest naming it."""
    data = gguf.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    blob = models / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    write_manifest(models, namespace, model, tag, [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 10},
        {"mediaType": MODEL_LAYER, "digest": f"sha256:{digest}", "size": len(data)}])
    return blob


def write_manifest(models: Path, namespace: str, model: str, tag: str, layers: list | str) -> None:
    path = models / "manifests" / "registry.ollama.ai" / namespace / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    text = layers if isinstance(layers, str) else json.dumps({"schemaVersion": 2, "layers": layers})
    path.write_text(text)


def hostile_gguf() -> bytes:
    """A GGUF header whose first key claims to be 2**62 bytes long (it once crashed MLX's reader)."""
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62) + b"general.architecture"


@pytest.fixture
def shelves(tmp_path, tiny_gguf, tiny_model_dir) -> dict:
    """An LM Studio models folder and an Ollama models folder with good, foreign and broken entries."""
    from tests.helpers.tiny import make_tiny_gguf

    lms = tmp_path / "lmstudio" / "models"
    good = lms / "tiny-org" / "Tiny-GGUF" / "tiny.Q8_0.gguf"
    good.parent.mkdir(parents=True)
    with_file_type(tiny_gguf, good, 7)  # 7 = MOSTLY_Q8_0 in llama.cpp's file types
    (lms / "other" / "Qwen-GGUF").mkdir(parents=True)
    qwen = make_tiny_gguf(tiny_model_dir, lms / "other" / "Qwen-GGUF" / "qwen.gguf", architecture="qwen2")
    (lms / "broken" / "Broken-GGUF").mkdir(parents=True)
    (lms / "broken" / "Broken-GGUF" / "truncated.gguf").write_bytes(tiny_gguf.read_bytes()[:300])
    (lms / "broken" / "Broken-GGUF" / "hostile.gguf").write_bytes(hostile_gguf())
    (lms / "broken" / "Broken-GGUF" / "notes.txt").write_text("not a model")  # not a .gguf: not listed
    (lms / "too-shallow.gguf").write_bytes(tiny_gguf.read_bytes())  # LM Studio does not list it either

    ollama = tmp_path / "ollama" / "models"
    blob = add_ollama_model(ollama, tiny_gguf, "library", "tiny", "latest")
    add_ollama_model(ollama, tiny_gguf, "someone", "tiny", "q8")  # same blob, another name
    write_manifest(ollama, "library", "gone", "latest",
                   [{"mediaType": MODEL_LAYER, "digest": "sha256:" + "a" * 64, "size": 5}])
    write_manifest(ollama, "library", "escape", "latest",
                   [{"mediaType": MODEL_LAYER, "digest": "sha256:../../../etc/passwd", "size": 5}])
    write_manifest(ollama, "library", "garbled", "latest", "{not json")
    fifo_digest = "f" * 64  # a named pipe where a blob should be: opening it would hang the search
    write_manifest(ollama, "library", "pipe", "latest",
                   [{"mediaType": MODEL_LAYER, "digest": f"sha256:{fifo_digest}", "size": 5}])
    os.mkfifo(ollama / "blobs" / f"sha256-{fifo_digest}")
    return {"lms": lms, "good": good, "qwen": qwen, "ollama": ollama, "blob": blob, "tiny": tiny_gguf}


def by_name(found: list) -> dict:
    return {m.name: m for m in found}


def test_lmstudio_models_are_listed_with_what_their_header_says(shelves):
    found = by_name(discover.find_lmstudio([shelves["lms"]]))
    assert sorted(found) == ["hostile.gguf", "qwen.gguf", "tiny.Q8_0.gguf", "truncated.gguf"]
    good = found["tiny.Q8_0.gguf"]
    assert (good.app, good.path, good.size_bytes) == ("LM Studio", str(shelves["good"]), shelves["good"].stat().st_size)
    assert (good.architecture, good.quantization, good.importable, good.reason) == ("llama", "Q8_0", True, "")
    assert good.suggested_id == "tiny.q8_0"

    qwen = found["qwen.gguf"]
    assert qwen.architecture == "qwen2" and qwen.quantization == "F32"  # no file type: the tensors' own type
    from unstar_gui.engine.gguf import SUPPORTED_ARCHITECTURES

    assert qwen.importable == ("qwen2" in SUPPORTED_ARCHITECTURES)
    if not qwen.importable:
        assert "'qwen2' model" in qwen.reason


def test_broken_files_are_listed_as_unreadable_not_raised(shelves):
    found = by_name(discover.find_lmstudio([shelves["lms"]]))
    for name in ("truncated.gguf", "hostile.gguf"):
        entry = found[name]
        assert not entry.importable and entry.reason.startswith("can't read: ") and not entry.architecture
        assert entry.size_bytes == (shelves["lms"] / "broken" / "Broken-GGUF" / name).stat().st_size
    assert f"{2**62} bytes long" in found["hostile.gguf"].reason
    assert "past the end of the file" in found["truncated.gguf"].reason


def test_ollama_library_names_blobs_sizes_and_bad_manifests(shelves):
    found = by_name(discover.find_ollama(shelves["ollama"]))
    assert sorted(found) == ["escape:latest", "garbled:latest", "gone:latest", "pipe:latest", "someone/tiny:q8",
                             "tiny:latest"]
    tiny = found["tiny:latest"]
    assert (tiny.app, tiny.path, tiny.size_bytes) == ("Ollama", str(shelves["blob"]), shelves["tiny"].stat().st_size)
    assert (tiny.architecture, tiny.quantization, tiny.importable) == ("llama", "F32", True)
    assert tiny.suggested_id == "tiny-latest" and found["someone/tiny:q8"].path == tiny.path
    assert found["gone:latest"].reason == "can't read: the file is missing"
    assert found["escape:latest"].reason == "can't read: the manifest's weights digest is malformed"
    assert found["garbled:latest"].reason.startswith("can't read: unreadable manifest")
    assert found["pipe:latest"].reason == "can't read: not a regular file"
    assert not any(found[n].importable for n in ("gone:latest", "escape:latest", "garbled:latest", "pipe:latest"))


def test_default_folders_follow_home_and_ollama_models(shelves, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    assert discover.lmstudio_models_root() == home / ".lmstudio" / "models"
    assert discover.ollama_models_dir() == home / ".ollama" / "models"
    old = home / ".cache" / "lm-studio" / "models"
    shutil.copytree(shelves["lms"] / "tiny-org", old / "tiny-org")  # only the older LM Studio folder exists
    assert discover.lmstudio_models_root() == old
    monkeypatch.setenv("OLLAMA_MODELS", str(shelves["ollama"]))
    found = discover.discover()
    assert [(m.app, m.name) for m in found if m.importable] == [
        ("LM Studio", "tiny.Q8_0.gguf"), ("Ollama", "someone/tiny:q8"), ("Ollama", "tiny:latest")]


def test_ollama_names():
    assert discover.ollama_name("registry.ollama.ai", "library", "llama3.2", "3b") == "llama3.2:3b"
    assert discover.ollama_name("registry.ollama.ai", "me", "m", "latest") == "me/m:latest"
    assert discover.ollama_name("hf.co", "org", "Repo-GGUF", "Q4_K_M") == "hf.co/org/Repo-GGUF:Q4_K_M"


def test_cli_discover_then_import_an_ollama_blob(shelves, capsys):
    from unstar_gui.cli import main

    dirs = ["--lmstudio-dir", str(shelves["lms"]), "--ollama-dir", str(shelves["ollama"])]
    assert main(["models", "discover", *dirs]) == 0
    table = capsys.readouterr().out
    assert "tiny:latest" in table and "can't read: the file is missing" in table
    blob = shelves["blob"]
    assert f"unstar models import {blob} --id tiny-latest" in table

    assert main(["models", "import", str(blob), "--id", "tiny-latest"]) == 0  # no .gguf suffix: found by magic
    capsys.readouterr()
    record = ModelStore().get("tiny-latest")
    assert record.architecture == "llama" and Path(record.path, "config.json").is_file()

    assert main(["models", "discover", *dirs, "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tiny:latest"]["imported_as"] == "tiny-latest" and rows["gone:latest"]["imported_as"] is None
    assert rows["tiny.Q8_0.gguf"]["import_command"].endswith("--id tiny.q8_0")
