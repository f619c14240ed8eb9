"""Model store: registry round trips, atomic writes, and clear errors for bad data folders."""

from __future__ import annotations

import json
import os

import pytest

from unstar_gui.engine.errors import InvalidInput, ModelNotFound, StorageError
from unstar_gui.engine.fsutil import atomic_write_json, read_json, read_jsonl
from unstar_gui.engine.store import ModelRecord, ModelStore


def _rec(i: str, **kw) -> ModelRecord:
    return ModelRecord(id=i, path=f"/x/{i}", architecture="llama", quantization="4bit-g64", size_bytes=10,
                       source="test", **kw)


def test_home_env_redirects_data_dir(unstar_home):
    assert ModelStore().root == unstar_home


def test_register_list_get_remove(unstar_home):
    store = ModelStore()
    store.register(_rec("a", default=True))
    store.register(_rec("b"))
    assert [r.id for r in store.list()] == ["a", "b"]
    assert store.default().id == "a"
    store.set_default("b")
    assert store.default().id == "b" and not store.get("a").default
    store.remove("a", delete_files=False)
    assert [r.id for r in store.list()] == ["b"]


def test_unknown_model_lists_known_ids(unstar_home):
    store = ModelStore()
    store.register(_rec("known"))
    with pytest.raises(ModelNotFound) as e:
        store.get("nope")
    assert "nope" in e.value.message and "known" in e.value.hint


def test_invalid_id_rejected_and_registry_untouched(unstar_home):
    store = ModelStore()
    store.register(_rec("ok"))
    before = store.registry_path.read_bytes()
    with pytest.raises(InvalidInput):
        store.register(_rec("bad id/with slash"))
    assert store.registry_path.read_bytes() == before


def test_corrupt_registry_gives_clear_error(unstar_home):
    store = ModelStore()
    store.root.mkdir(parents=True)
    store.registry_path.write_text("{not json")
    with pytest.raises(StorageError) as e:
        store.list()
    assert "corrupt" in e.value.message


def test_readonly_data_dir_is_reported_and_registry_intact(tmp_path, monkeypatch):
    # A data folder below a *file* cannot be created, even as root: the same path every read-only case takes.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = ModelStore(blocker / "home")
    with pytest.raises(StorageError) as e:
        store.check_writable()
    assert "not writable" in e.value.message and "UNSTAR_HOME" in e.value.hint
    with pytest.raises(StorageError):
        store.register(_rec("a"))


def test_atomic_write_keeps_old_file_when_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    atomic_write_json(target, {"v": 1})

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError) as e:
        atomic_write_json(target, {"v": 2})
    assert "disk is full" in e.value.message
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_read_jsonl_skips_torn_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"a": 1}) + "\n" + '{"a": 2')
    assert read_jsonl(p) == [{"a": 1}]


def test_full_disk_refuses_import_before_writing(tiny_gguf, unstar_home, monkeypatch):
    from unstar_gui.engine.importers import import_gguf

    monkeypatch.setenv("UNSTAR_FAKE_FREE_BYTES", "1000")
    store = ModelStore()
    with pytest.raises(StorageError) as e:
        import_gguf(store, tiny_gguf)
    assert "Not enough disk space" in e.value.message
    assert store.list() == []
    assert not any(p.name.startswith(".import-") for p in store.models_dir.glob("*")) if store.models_dir.exists() \
        else True


def test_resolve_only_looks_and_resolve_model_provisions_the_embedded_default(unstar_home, monkeypatch):
    from unstar_gui.engine import embedded

    store = ModelStore()
    with pytest.raises(ModelNotFound, match="No model is installed"):
        store.resolve(None)  # a lookup: nothing is imported behind the caller's back
    assert store.list() == []
    installed = _rec(embedded.EMBEDDED_ID, default=True)
    monkeypatch.setattr(embedded, "ensure_default_model", lambda s: s.register(installed) or installed)
    for name in (None, "default", embedded.EMBEDDED_ID):
        assert embedded.resolve_model(store, name).id == embedded.EMBEDDED_ID
    store.register(_rec("b"))
    assert store.resolve("b").id == "b" and embedded.resolve_model(store, "b").id == "b"
    assert store.resolve(None).id == embedded.EMBEDDED_ID  # the default, looked up
    with pytest.raises(ModelNotFound, match="Unknown model 'nope'"):
        embedded.resolve_model(store, "nope")
