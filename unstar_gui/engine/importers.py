"""Bring a model into the store: a GGUF file, a Hugging Face safetensors folder, or an MLX folder.

Every importer writes into a staging folder inside the store and only renames it into place and registers it when
everything succeeded, so a failed import leaves neither files nor a registry entry behind.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import ImportFailed, InvalidInput, StorageError, UnstarError, UnsupportedModel
from .fsutil import dir_size, ensure_free_space, read_json
from .headers import read_safetensors_header
from .store import ModelRecord, ModelStore, check_model_id

# config.json's model_type becomes a module name (mlx_lm.models.<type>): only a plain identifier may get there.
_MODEL_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Files whose `auto_map` asks transformers to import Python shipped in the model folder.
_CODE_MAP_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
STAGING_PREFIX = ".import-"


def check_new_id(store: ModelStore, model_id: str) -> str:
    """Before any file is touched: the id is safe, free in the registry, and no folder holds its place."""
    check_model_id(model_id)
    if store.has(model_id):
        raise InvalidInput(f"A model named '{model_id}' is already installed.",
                           "Choose another id or remove the old one first (`unstar models remove`).")
    if store.model_dir_for(model_id).exists():
        raise InvalidInput(f"The data folder already has a folder models/{model_id} that is not a registered model.",
                           "Choose another id, or move that folder away.")
    return model_id


def _staging(store: ModelStore) -> Path:
    store.check_writable()
    store.models_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=store.models_dir))


def _finish(store: ModelStore, staging: Path, model_id: str, **fields: Any) -> ModelRecord:
    from .llm import check_generates

    check_generates(staging, name=model_id)
    final = store.model_dir_for(model_id)
    if final.exists():  # never rename onto (and later remove) a folder we did not make
        raise InvalidInput(f"models/{model_id} appeared while importing.", "Choose another id and import again.")
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
                source: str | None = None, precision: str = "auto") -> ModelRecord:
    """precision: what weights the file stores in types MLX can't keep become (gguf.PRECISIONS)."""
    from .gguf import check_precision, convert_gguf, estimate_output_bytes

    path = Path(path).expanduser()
    if not path.exists():
        raise ImportFailed(f"No such file: {path}.", "Check the path and try again.")
    if model_id is not None:
        check_new_id(store, model_id)
    precision = check_precision(precision)
    # Reading the header also refuses a corrupt or non-GGUF file before the staging folder exists.
    ensure_free_space(store.root, estimate_output_bytes(path, precision) + 50_000_000, f"importing {path.name}")
    model_id = model_id or store.unique_id(path.stem.lower())
    staging = _staging(store)
    try:
        info = convert_gguf(path, staging, precision)
        return _finish(store, staging, model_id, architecture=info["architecture"],
                       quantization=info["quantization"], source=source or f"gguf:{path}", default=default,
                       extra={"name": info["name"], "license": info["license"]})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _refuse_remote_code(folder: Path) -> None:
    """A folder whose configs carry `auto_map` needs its own Python to load; UnStar never runs code from a model."""
    for name in _CODE_MAP_FILES:
        data = read_json(folder / name, default={}) if (folder / name).is_file() else {}
        if isinstance(data, dict) and data.get("auto_map"):
            raise UnsupportedModel(
                f"{folder.name}/{name} asks to run Python code shipped in the model folder (auto_map); UnStar never "
                "runs code from a model folder, so it can't import this model.",
                "Use a version of the model that works with standard transformers classes (most MLX community "
                "conversions do).")


def _check_weight_files(folder: Path, files: list[Path]) -> None:
    for f in files:
        try:
            read_safetensors_header(f)
        except ValueError as exc:
            raise ImportFailed(f"{folder.name}/{f.name} is not a valid safetensors file: {exc}.",
                               "The download is incomplete or damaged: download the model again.") from exc
        except OSError as exc:
            raise ImportFailed(f"Could not read {f}: {exc.strerror or exc}.", "Check the file's permissions.") from exc


def _check_tokenizer_files(folder: Path) -> None:
    if not ((folder / "tokenizer.json").exists() or (folder / "tokenizer.model").exists()
            or (folder / "tokenizer_config.json").exists()):
        raise ImportFailed(f"{folder} has no tokenizer files.", "The folder is incomplete; download it again.")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (folder / name).exists():
            try:
                data = read_json(folder / name)
            except StorageError as exc:
                raise ImportFailed(f"{folder.name}/{name} is not valid JSON.",
                                   "The folder is incomplete; download it again.") from exc
            if not isinstance(data, dict) or (name == "tokenizer.json" and not data.get("model")):
                raise ImportFailed(f"{folder.name}/{name} is empty or not a tokenizer description.",
                                   "The folder is incomplete; download it again.")


def validate_mlx_folder(folder: Path) -> dict[str, Any]:
    """Check a folder looks loadable by mlx-lm without running anything from it; return its config."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportFailed(f"No such folder: {folder}.", "Check the path and try again.")
    if not (folder / "config.json").is_file():
        raise ImportFailed(f"{folder} has no config.json, so it is not a model folder.",
                           "Pick the folder that holds config.json and the .safetensors files.")
    try:
        config = read_json(folder / "config.json")
    except StorageError as exc:
        raise ImportFailed(f"{folder.name}/config.json is not valid JSON.",
                           "The folder is incomplete; download it again.") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ImportFailed(f"{folder}/config.json has no model_type.", "The folder is incomplete; download it again.")
    if not _MODEL_TYPE_RE.match(config["model_type"]):
        raise UnsupportedModel(f"{folder.name}/config.json names an unknown architecture.",
                               "Pick a model whose architecture mlx-lm supports (Llama, Mistral, Qwen, ...).")
    _refuse_remote_code(folder)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ImportFailed(f"{folder} holds no .safetensors weights.",
                           "PyTorch .bin checkpoints are not supported; use a safetensors model.")
    _check_weight_files(folder, weights)
    _check_tokenizer_files(folder)
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
    """MLX folders carry weights already in mlx-lm's layout (a 'quantization' key, or the format metadata).
    Call after validate_mlx_folder (the headers are trusted here)."""
    config = read_json(Path(folder) / "config.json", default={}) or {}
    if "quantization" in config:
        return True
    for f in sorted(Path(folder).glob("*.safetensors")):
        meta = read_safetensors_header(f).get("__metadata__") or {}
        return meta.get("format") == "mlx"
    return False


def import_mlx_folder(store: ModelStore, folder: Path, model_id: str | None = None, copy: bool = False,
                      source: str | None = None) -> ModelRecord:
    """Register an MLX folder; in place by default (the user's folder stays where it is)."""
    folder = Path(folder).expanduser().resolve()
    config = validate_mlx_folder(folder)
    model_id = check_new_id(store, model_id or store.unique_id(folder.name.lower()))
    fields = dict(architecture=config["model_type"], quantization=_quant_label(config),
                  source=source or f"folder:{folder}")
    if not copy:
        from .llm import check_generates

        check_generates(folder, name=folder.name)
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
    model_id = check_new_id(store, model_id or store.unique_id(folder.name.lower()))
    ensure_free_space(store.root, dir_size(folder), f"converting {folder.name}")
    staging = _staging(store)
    target = staging / "model"
    try:
        kwargs: dict[str, Any] = {"quantize": quantize_bits is not None}
        if quantize_bits is not None:
            kwargs.update(q_bits=quantize_bits, q_group_size=group_size)
        try:
            convert(str(folder), mlx_path=str(target), trust_remote_code=False, **kwargs)
        except (ValueError, KeyError, TypeError, RuntimeError, OSError) as exc:  # mlx-lm refusing the weights
            raise ImportFailed(f"mlx-lm could not convert {folder.name} ({str(exc)[:300] or type(exc).__name__}).",
                               "The folder is incomplete or not a supported model; download it again.") from exc
        new_config = read_json(target / "config.json")
        # _finish moves `target` out of the staging folder; whatever is left (all of it on failure) goes.
        return _finish(store, target, model_id, architecture=config["model_type"],
                       quantization=_quant_label(new_config), source=f"hf-folder:{folder}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def import_any(store: ModelStore, path: Path, model_id: str | None = None, quantize_bits: int | None = None,
               copy: bool = False, gguf_precision: str = "auto") -> ModelRecord:
    """Pick the importer from what `path` is. `gguf_precision` applies to GGUF files, `quantize_bits` to Hugging
    Face folders."""
    path = Path(path).expanduser()
    if model_id is not None:
        check_new_id(store, model_id)  # before anything is read or written
    if not path.exists():
        raise ImportFailed(f"No such file or folder: {path}.", "Check the path and try again.")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            with open(path, "rb") as fh:
                if fh.read(4) != b"GGUF":
                    raise ImportFailed(f"{path.name} is neither a GGUF file nor a model folder.",
                                       "Pick a .gguf file or a folder holding config.json and .safetensors files.")
        try:  # import_gguf reads the header with bounds (headers.py) before anything native sees the file
            return import_gguf(store, path, model_id, precision=gguf_precision)
        except UnstarError:
            raise
        except Exception as exc:  # mlx, numpy and tokenizers raise many types for a damaged file
            detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise ImportFailed(f"{path.name} could not be converted ({detail}); nothing was added.",
                               "The file is damaged or laid out in a way UnStar does not know: download it again, "
                               "or import the model's Hugging Face folder.") from exc
    if gguf_precision != "auto":
        raise InvalidInput("--gguf-precision applies to .gguf files only.",
                           "For a Hugging Face folder use --quantize 4 or 8.")
    validate_mlx_folder(path)  # before is_mlx_folder reads any weight header
    if is_mlx_folder(path) and quantize_bits is None:
        return import_mlx_folder(store, path, model_id, copy=copy)
    return import_hf_folder(store, path, model_id, quantize_bits=quantize_bits)
