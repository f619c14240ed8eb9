"""Bring a model into the store: a GGUF file, a Hugging Face safetensors folder, or an MLX folder.

Every importer writes into a staging folder inside the store and only renames it into place and registers it when
everything succeeded, so a failed import leaves neither files nor a registry entry behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import ImportFailed, InvalidInput, UnsupportedModel
from .fsutil import dir_size, ensure_free_space, read_json
from .store import ModelRecord, ModelStore


def _staging(store: ModelStore) -> Path:
    store.check_writable()
    store.models_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".import-", dir=store.models_dir))


def _finish(store: ModelStore, staging: Path, model_id: str, **fields: Any) -> ModelRecord:
    final = store.model_dir_for(model_id)
    staging.rename(final)
    record = ModelRecord(id=model_id, path=str(final), size_bytes=dir_size(final), **fields)
    try:
        return store.register(record)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise


def _quant_label(config: dict[str, Any]) -> str:
    q = config.get("quantization") or config.get("quantization_config")
    if not q:
        return str(config.get("torch_dtype", "float16"))
    if "bits" in q:
        return f"{q['bits']}bit-g{q.get('group_size', 64)}"
    return "quantized"


def import_gguf(store: ModelStore, path: Path, model_id: str | None = None, default: bool = False,
                source: str | None = None) -> ModelRecord:
    from .gguf import convert_gguf

    path = Path(path).expanduser()
    if not path.exists():
        raise ImportFailed(f"No such file: {path}.", "Check the path and try again.")
    if model_id is not None and store.has(model_id):
        raise InvalidInput(f"A model named '{model_id}' is already installed.",
                           "Choose another id or remove the old one first (`unstar models remove`).")
    ensure_free_space(store.root, int(path.stat().st_size * 1.3) + 50_000_000, f"importing {path.name}")
    model_id = model_id or store.unique_id(path.stem.lower())
    staging = _staging(store)
    try:
        info = convert_gguf(path, staging)
        return _finish(store, staging, model_id, architecture=info["architecture"],
                       quantization=info["quantization"], source=source or f"gguf:{path}", default=default,
                       extra={"name": info["name"], "license": info["license"]})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def validate_mlx_folder(folder: Path) -> dict[str, Any]:
    """Check a folder looks loadable by mlx-lm; return its config."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportFailed(f"No such folder: {folder}.", "Check the path and try again.")
    if not (folder / "config.json").exists():
        raise ImportFailed(f"{folder} has no config.json, so it is not a model folder.",
                           "Pick the folder that holds config.json and the .safetensors files.")
    config = read_json(folder / "config.json")
    if not isinstance(config, dict) or "model_type" not in config:
        raise ImportFailed(f"{folder}/config.json has no model_type.", "The folder is incomplete; download it again.")
    if not list(folder.glob("*.safetensors")):
        raise ImportFailed(f"{folder} holds no .safetensors weights.",
                           "PyTorch .bin checkpoints are not supported; use a safetensors model.")
    if not ((folder / "tokenizer.json").exists() or (folder / "tokenizer.model").exists()
            or (folder / "tokenizer_config.json").exists()):
        raise ImportFailed(f"{folder} has no tokenizer files.", "The folder is incomplete; download it again.")
    from mlx_lm.utils import MODEL_REMAPPING
    import importlib

    model_type = MODEL_REMAPPING.get(config["model_type"], config["model_type"])
    try:
        importlib.import_module(f"mlx_lm.models.{model_type}")
    except ImportError as exc:
        raise UnsupportedModel(f"mlx-lm does not support the '{config['model_type']}' architecture.",
                               "Pick a model whose architecture mlx-lm supports (Llama, Mistral, Qwen, ...).") from exc
    return config


def is_mlx_folder(folder: Path) -> bool:
    """MLX folders carry weights already in mlx-lm's layout (a 'quantization' key, or the format metadata)."""
    config = read_json(Path(folder) / "config.json", default={}) or {}
    if "quantization" in config:
        return True
    for f in Path(folder).glob("*.safetensors"):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        return header.get("__metadata__", {}).get("format") == "mlx"
    return False


def import_mlx_folder(store: ModelStore, folder: Path, model_id: str | None = None, copy: bool = False,
                      source: str | None = None) -> ModelRecord:
    """Register an MLX folder; in place by default (the user's folder stays where it is)."""
    folder = Path(folder).expanduser().resolve()
    config = validate_mlx_folder(folder)
    model_id = model_id or store.unique_id(folder.name.lower())
    fields = dict(architecture=config["model_type"], quantization=_quant_label(config),
                  source=source or f"folder:{folder}")
    if not copy:
        return store.register(ModelRecord(id=model_id, path=str(folder), size_bytes=dir_size(folder), **fields))
    ensure_free_space(store.root, dir_size(folder), f"copying {folder.name}")
    staging = _staging(store)
    try:
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        return _finish(store, staging, model_id, **fields)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def import_hf_folder(store: ModelStore, folder: Path, model_id: str | None = None, quantize_bits: int | None = None,
                     group_size: int = 64) -> ModelRecord:
    """Convert a Hugging Face safetensors folder with mlx-lm (optionally quantizing) into the store."""
    from mlx_lm.convert import convert

    folder = Path(folder).expanduser().resolve()
    config = validate_mlx_folder(folder)
    model_id = model_id or store.unique_id(folder.name.lower())
    ensure_free_space(store.root, dir_size(folder), f"converting {folder.name}")
    staging = _staging(store)
    target = staging / "model"
    try:
        kwargs: dict[str, Any] = {"quantize": quantize_bits is not None}
        if quantize_bits is not None:
            kwargs.update(q_bits=quantize_bits, q_group_size=group_size)
        convert(str(folder), mlx_path=str(target), **kwargs)
        shutil.rmtree(staging / ".." / staging.name, ignore_errors=False) if False else None
        final_tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=store.models_dir))
        final_tmp.rmdir()
        target.rename(final_tmp)
        shutil.rmtree(staging, ignore_errors=True)
        new_config = read_json(final_tmp / "config.json")
        return _finish(store, final_tmp, model_id, architecture=config["model_type"],
                       quantization=_quant_label(new_config), source=f"hf-folder:{folder}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def import_any(store: ModelStore, path: Path, model_id: str | None = None, quantize_bits: int | None = None,
               copy: bool = False) -> ModelRecord:
    """Pick the importer from what `path` is."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ImportFailed(f"No such file or folder: {path}.", "Check the path and try again.")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            with open(path, "rb") as fh:
                if fh.read(4) != b"GGUF":
                    raise ImportFailed(f"{path.name} is neither a GGUF file nor a model folder.",
                                       "Pick a .gguf file or a folder holding config.json and .safetensors files.")
        return import_gguf(store, path, model_id)
    if is_mlx_folder(path) and quantize_bits is None:
        return import_mlx_folder(store, path, model_id, copy=copy)
    return import_hf_folder(store, path, model_id, quantize_bits=quantize_bits)
