"""What every page shares: the one MLX worker, the app preferences, the detected backend, training defaults."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings

from ..engine.store import HOME_ENV, ModelStore, data_dir
from .workers import MlxWorker

PREF_DATA_DIR = "data_dir"


def forget_settings_defaults() -> dict[str, Any]:
    """ForgetSettings' own defaults, as a dict (engine/settings.py imports neither mlx nor Qt)."""
    from ..engine.settings import ForgetSettings

    return {f.name: getattr(ForgetSettings(), f.name) for f in fields(ForgetSettings)}


def training_defaults(store: ModelStore) -> dict[str, Any]:
    """The engine defaults overlaid with what the user saved in Settings."""
    defaults = forget_settings_defaults()
    saved = store.load_settings().get("training", {}) or {}
    defaults.update({k: v for k, v in saved.items() if k in defaults})
    return defaults


@dataclass
class Services:
    worker: MlxWorker
    prefs: QSettings | None = None  # None in tests: nothing is written to the user's real preferences
    backend: Any = None  # engine Backend, filled in by the worker shortly after start
    extras: dict[str, Any] = field(default_factory=dict)

    def store(self) -> ModelStore:
        return ModelStore()

    @property
    def on_cpu(self) -> bool:
        if self.backend is not None:
            return bool(self.backend.dequantize)
        return sys.platform != "darwin"

    def set_data_dir(self, path: Path) -> None:
        os.environ[HOME_ENV] = str(path)
        if self.prefs is not None:
            self.prefs.setValue(PREF_DATA_DIR, str(path))

    @staticmethod
    def data_dir() -> Path:
        return data_dir()


def apply_saved_data_dir(prefs: QSettings) -> None:
    """At start-up: a data folder chosen in Settings wins over the platform default (an explicit env var wins)."""
    saved = prefs.value(PREF_DATA_DIR)
    if saved and not os.environ.get(HOME_ENV):
        os.environ[HOME_ENV] = str(saved)
