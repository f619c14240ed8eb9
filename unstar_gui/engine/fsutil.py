"""File-system helpers: atomic writes and free-space checks, shared by the store, jobs and exports."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .errors import StorageError

# Tests set this to simulate a full disk without filling one.
FAKE_FREE_BYTES_ENV = "UNSTAR_FAKE_FREE_BYTES"


def free_bytes(path: Path) -> int:
    """Free space on the file system holding `path` (or its nearest existing parent)."""
    fake = os.environ.get(FAKE_FREE_BYTES_ENV)
    if fake is not None:
        return int(fake)
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def ensure_free_space(path: Path, needed: int, what: str) -> None:
    """Raise a StorageError before starting work that would run out of disk half-way."""
    available = free_bytes(path)
    if available < needed:
        raise StorageError(
            f"Not enough disk space for {what}: needs {human_bytes(needed)}, "
            f"{human_bytes(available)} free at {path}.",
            "Free some space or choose another data folder (Settings, or the UNSTAR_HOME variable).",
        )


def _storage_error(exc: OSError, path: Path) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"The disk is full while writing {path}.", "Free some space and try again.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(
            f"Cannot write to {path}: permission denied or read-only.",
            "Choose a writable data folder (Settings, or the UNSTAR_HOME variable).",
        )
    return StorageError(f"Could not write {path}: {exc.strerror or exc}.", "Check the folder and try again.")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers never see half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _storage_error(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(Path(tmp))
        raise _storage_error(exc, path) from exc
    except BaseException:
        _unlink_quietly(Path(tmp))
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: Path, row: Any) -> None:
    """Append one line; a crash can at worst leave a torn last line, which read_jsonl skips."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise _storage_error(exc, path) from exc


def read_json(path: Path, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(f"{path} is corrupt ({exc}).", "Restore it from a backup or delete it.") from exc


def read_jsonl(path: Path) -> list[Any]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line from a killed process
    return rows


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def dir_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
