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
        with open(path, "a+b") as fh:
            # A process killed mid-line left no newline: start a fresh line, so the torn one stays alone.
            torn = False
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
            fh.write((("\n" if torn else "") + json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    except OSError as exc:
        raise _storage_error(exc, path) from exc


CLEAN_HINT = ("Restore it from a backup, or run `unstar doctor --clean` to set it aside (kept as *.corrupt-<time>) "
              "and start a fresh one.")


def corrupt_record(path: Path, what: str, hint: str = CLEAN_HINT) -> StorageError:
    """The one message for a damaged record: which file, what is wrong, and that nothing was overwritten."""
    return StorageError(f"{path} is damaged: {what}. It was left exactly as it is.", hint)


def read_json(path: Path, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise corrupt_record(path, f"not valid JSON ({type(exc).__name__})") from exc
    except OSError as exc:
        raise StorageError(f"Could not read {path}: {exc.strerror or exc}.", "Check the file's permissions.") from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file. A line that does not parse is a torn write from a killed process and is skipped;
    a file that is not text, holds rows that are not objects, or has no readable row at all is damaged."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise corrupt_record(path, "not text") from exc
    rows: list[dict[str, Any]] = []
    torn = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            torn += 1
            continue
        if not isinstance(row, dict):
            raise corrupt_record(path, f"line {len(rows) + torn + 1} is not a JSON object")
        rows.append(row)
    if torn and not rows:
        raise corrupt_record(path, "no line is valid JSON")
    return rows


def set_aside(path: Path) -> Path:
    """Rename a damaged record to `<name>.corrupt-<time>` (never delete it); returns the new path."""
    import datetime as _dt

    path = Path(path)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    i = 2
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{i}")
        i += 1
    os.replace(path, target)
    return target


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, with symlinks and '..' resolved, is `root` or lies below it."""
    p, r = Path(path).resolve(), Path(root).resolve()
    return p == r or r in p.parents


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
