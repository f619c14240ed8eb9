"""Find the GGUF models people already have: LM Studio's models folder and Ollama's library.

LM Studio keeps plain files: <models folder>/<publisher>/<repo>/<file>.gguf, the folder being ~/.lmstudio/models
(older versions: ~/.cache/lm-studio/models). Ollama keeps content-addressed blobs: a manifest per model and tag at
<models>/manifests/<registry>/<namespace>/<model>/<tag> (JSON) names, in the layer whose mediaType is
application/vnd.ollama.image.model, the digest "sha256:<hex>" of the GGUF weights, stored as
<models>/blobs/sha256-<hex>; <models> is $OLLAMA_MODELS or ~/.ollama/models.

Only each file's GGUF header is read (architecture, file type, tensor types) with the bounded reader of headers.py:
listing never loads weights, never needs MLX (the desktop app runs it beside the MLX worker, not on it), and a
truncated, corrupt or hostile file becomes an entry that says "can't read: <reason>" instead of an exception.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .errors import ImportFailed
from .headers import GGUFHeader, read_gguf_header
from .store import ModelStore, slugify

OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
OLLAMA_DEFAULT_REGISTRY = "registry.ollama.ai"
_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
_MAX_MANIFEST_BYTES = 1_000_000


@dataclass(frozen=True)
class FoundModel:
    """One model found on this computer. `reason` says why it cannot be imported ("" when it can)."""

    app: str  # "LM Studio" | "Ollama"
    name: str  # what that app calls it: "llama3.2:3b", or the file name
    path: str
    size_bytes: int
    architecture: str = ""
    quantization: str = ""
    importable: bool = False
    reason: str = ""
    suggested_id: str = ""

    @property
    def import_command(self) -> str:
        import shlex

        return f"unstar models import {shlex.quote(self.path)} --id {shlex.quote(self.suggested_id)}"


# Where the apps keep models -----------------------------------------------------------------------------------------
def lmstudio_roots() -> list[Path]:
    """LM Studio's models folders, current location first."""
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def lmstudio_models_root() -> Path:
    """The folder LM Studio reads models from here: the first that exists, else where a new install puts it."""
    return next((root for root in lmstudio_roots() if root.is_dir()), lmstudio_roots()[0])


def ollama_models_dir() -> Path:
    """$OLLAMA_MODELS, else ~/.ollama/models, else the Linux installer's service account's folder."""
    if os.environ.get("OLLAMA_MODELS"):
        return Path(os.environ["OLLAMA_MODELS"]).expanduser()
    mine = Path.home() / ".ollama" / "models"
    service = Path("/usr/share/ollama/.ollama/models")
    return service if not mine.is_dir() and service.is_dir() else mine


# GGUF header -------------------------------------------------------------------------------------------------------
def _type_name(enum: str, value: int) -> str:
    """A GGML tensor type or llama.cpp file type by name ("Q4_K", "Q4_K_M"), from llama.cpp's gguf package."""
    import gguf.constants

    try:
        name = getattr(gguf.constants, enum)(value).name
    except ValueError:  # a type newer than the installed package
        return f"type {value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def architecture_of(header: GGUFHeader) -> str:
    return str(header.metadata.get("general.architecture") or "")


def quantization_label(header: GGUFHeader) -> str:
    """The file type llama.cpp recorded ("Q4_K_M"), else the tensor type holding most of the weights' bytes."""
    file_type = header.metadata.get("general.file_type")
    if isinstance(file_type, int) and not isinstance(file_type, bool):
        return _type_name("LlamaFileType", file_type)
    bytes_by_type: Counter = Counter()
    for tensor in header.tensors:
        bytes_by_type[tensor.type] += tensor.nbytes
    if not bytes_by_type:
        return "no tensors"
    return _type_name("GGMLQuantizationType", bytes_by_type.most_common(1)[0][0])


def why_not_importable(header: GGUFHeader) -> str:
    """"" when our GGUF importer converts the file, else the reason in a few words."""
    from .gguf import SUPPORTED_ARCHITECTURES  # looked up at call time: the importer's list grows

    architecture = architecture_of(header)
    if architecture not in SUPPORTED_ARCHITECTURES:
        return (f"a '{architecture or 'unknown'}' model; the importer reads "
                f"{', '.join(SUPPORTED_ARCHITECTURES)} models")
    return ""


def describe(app: str, name: str, path: Path, suggested_id: str) -> FoundModel:
    """A FoundModel for one GGUF file; any problem reading it becomes the entry's reason, never an exception."""
    base = dict(app=app, name=name, path=str(path), suggested_id=slugify(suggested_id.lower()))
    try:
        size = path.stat().st_size
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        return FoundModel(size_bytes=0, reason=f"can't read: {'the file is missing' if missing else exc}", **base)
    if not path.is_file():  # a folder, or a FIFO whose open() would block the search forever
        return FoundModel(size_bytes=0, reason="can't read: not a regular file", **base)
    try:
        header = read_gguf_header(path)  # bounded: a hostile header ends here as ImportFailed
    except ImportFailed as exc:
        return FoundModel(size_bytes=size, reason=f"can't read: {exc.message}", **base)
    reason = why_not_importable(header)
    return FoundModel(size_bytes=size, architecture=architecture_of(header), quantization=quantization_label(header),
                      importable=not reason, reason=reason, **base)


# LM Studio ---------------------------------------------------------------------------------------------------------
def find_lmstudio(roots: list[Path] | None = None) -> list[FoundModel]:
    """Every <root>/<publisher>/<repo>/<file>.gguf (LM Studio shows nothing deeper or shallower)."""
    found: list[FoundModel] = []
    seen: set[Path] = set()
    for root in roots if roots is not None else lmstudio_roots():
        for path in sorted(Path(root).expanduser().glob("*/*/*.gguf")):
            if path.resolve() in seen or not path.is_file():
                continue
            seen.add(path.resolve())
            found.append(describe("LM Studio", path.name, path, path.stem))
    return found


# Ollama ------------------------------------------------------------------------------------------------------------
def ollama_name(registry: str, namespace: str, model: str, tag: str) -> str:
    """The name `ollama list` shows: "llama3.2:3b" for the official library, "user/model:tag" for a user's,
    "hf.co/org/repo:tag" for another registry."""
    if registry != OLLAMA_DEFAULT_REGISTRY:
        return f"{registry}/{namespace}/{model}:{tag}"
    return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"


class _ManifestError(Exception):
    """An Ollama manifest that names no usable weights; the message is the reason shown."""


def _model_blob(manifest: Path, blobs: Path) -> Path:
    """The weights blob a manifest names; _ManifestError (with the reason) when the manifest does not name one."""
    try:
        if manifest.stat().st_size > _MAX_MANIFEST_BYTES:
            raise _ManifestError("the manifest is too large to be one")
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _ManifestError(f"unreadable manifest ({exc})") from exc
    layers = data.get("layers") if isinstance(data, dict) else None
    layer = next((x for x in layers or [] if isinstance(x, dict) and x.get("mediaType") == OLLAMA_MODEL_MEDIA_TYPE),
                 None)
    if layer is None:
        raise _ManifestError("the manifest names no model weights")
    # The digest becomes a file name: only a well-formed one, so a hostile manifest cannot point outside blobs/.
    match = _DIGEST.fullmatch(str(layer.get("digest", "")))
    if match is None:
        raise _ManifestError("the manifest's weights digest is malformed")
    return blobs / f"sha256-{match.group(1)}"


def find_ollama(models_dir: Path | None = None) -> list[FoundModel]:
    """One entry per model tag in Ollama's library (two tags of one blob are two entries, as in `ollama list`)."""
    models_dir = Path(models_dir or ollama_models_dir()).expanduser()
    manifests = models_dir / "manifests"
    found: list[FoundModel] = []
    for manifest in sorted(manifests.glob("*/*/*/*")):
        if not manifest.is_file():
            continue
        name = ollama_name(*manifest.relative_to(manifests).parts)
        suggested = name.rsplit("/", 1)[-1].replace(":", "-")
        try:
            blob = _model_blob(manifest, models_dir / "blobs")
        except _ManifestError as exc:
            found.append(FoundModel(app="Ollama", name=name, path=str(manifest), size_bytes=0,
                                    reason=f"can't read: {exc}", suggested_id=slugify(suggested)))
            continue
        found.append(describe("Ollama", name, blob, suggested))
    return sorted(found, key=lambda m: m.name.lower())  # as people read model names, not by registry folder


def discover(lmstudio_dirs: list[Path] | None = None, ollama_dir: Path | None = None) -> list[FoundModel]:
    """Every GGUF model LM Studio and Ollama have on this computer (the default folders unless given)."""
    return find_lmstudio(lmstudio_dirs) + find_ollama(ollama_dir)


def imported_ids(found: list[FoundModel], store: ModelStore) -> dict[str, str]:
    """path -> model id, for the found models already imported (the importer records "gguf:<path>" as source)."""
    by_source = {r.source: r.id for r in store.list()}
    return {m.path: by_source[f"gguf:{m.path}"] for m in found if f"gguf:{m.path}" in by_source}
