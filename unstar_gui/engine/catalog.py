"""The models UnStar knows how to download (models/catalog.json), with what is installed merged in.

The GUI's model manager and `unstar models catalog` show these entries; `engine.hub.download_model` accepts an
entry (or its id) and installs it under the entry's id.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import InvalidInput, StorageError
from .fsutil import read_json
from .store import EMBEDDED_ID, ModelStore, partial_bytes

CATALOG_PATH = Path(__file__).resolve().parents[2] / "models" / "catalog.json"


@dataclass
class CatalogEntry:
    id: str  # the id the model is installed under (`unstar chat --model ID`)
    name: str
    repo: str  # Hugging Face repo id; "" for the embedded model
    revision: str
    architecture: str
    parameters_b: float  # billions of parameters (float32 on CPU needs about 4 GB per billion)
    size_bytes: int  # on disk, approximate; the downloader reads the exact size from the Hub
    run_memory_gb: float
    train_memory_gb: float
    license: str
    notes: str = ""
    default: bool = False  # the recommended download
    embedded: bool = False  # ships inside a Python package: installed without a download
    # merged from the store by catalog_entries():
    installed: bool = False
    installed_path: str = ""
    partial_bytes: int = 0  # bytes of an interrupted download waiting to be resumed

    @property
    def hub_url(self) -> str:
        return f"https://huggingface.co/{self.repo}" if self.repo else ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CatalogEntry":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def load_catalog(path: Path | None = None) -> list[CatalogEntry]:
    """The catalog as shipped, without install status."""
    path = Path(path) if path is not None else CATALOG_PATH
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise StorageError(f"The model catalog {path} is missing or has no 'models' list.",
                           "Reinstall UnStar Studio to restore it.")
    return [CatalogEntry.from_dict(d) for d in data["models"]]


def find_entry(name: str, entries: list[CatalogEntry] | None = None) -> CatalogEntry | None:
    """The entry whose id or Hub repo is `name` (case-insensitive), or None."""
    wanted = name.strip().lower()
    for entry in entries if entries is not None else load_catalog():
        if wanted in (entry.id.lower(), entry.repo.lower()):
            return entry
    return None


def get_entry(name: str) -> CatalogEntry:
    entries = load_catalog()
    entry = find_entry(name, entries)
    if entry is None:
        raise InvalidInput(f"'{name}' is not in the model catalog.",
                           "See `unstar models catalog`, or give a Hub repo id such as "
                           "mlx-community/Mistral-7B-Instruct-v0.3-4bit.")
    return entry


def catalog_entries(store: ModelStore | None = None, path: Path | None = None) -> list[CatalogEntry]:
    """The catalog with `installed`, `installed_path` and `partial_bytes` filled in from the store."""
    store = store or ModelStore()
    installed = {r.id: r for r in store.list()}
    entries = load_catalog(path)
    for entry in entries:
        record = installed.get(entry.id)
        if record is not None and Path(record.path).exists():
            entry.installed, entry.installed_path = True, record.path
        elif entry.embedded and entry.id == EMBEDDED_ID:
            entry.installed = _embedded_available()  # registered from its package on first use, no download
        else:
            entry.partial_bytes = partial_bytes(store, entry.id)
    return entries


def _embedded_available() -> bool:
    from .embedded import embedded_gguf_path
    from .errors import ModelNotFound

    try:
        embedded_gguf_path()
    except ModelNotFound:
        return False
    return True
