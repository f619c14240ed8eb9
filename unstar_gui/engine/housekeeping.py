"""`unstar doctor --clean`: what crashed or killed work left in the data folder, found and tidied.

Every importer and download already removes its staging folder on failure and success; a process killed with
SIGKILL can't, so its leftovers wait here: import staging folders, unheld download locks, temporary files of
atomic writes. Damaged records (registry.json, settings.json) are set aside as *.corrupt-<time>, never deleted.
Partial downloads (.download-<id>/) are kept: the next download continues from them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StorageError
from .fsutil import dir_size, human_bytes, read_json, set_aside
from .store import ModelStore

# Younger leftovers may belong to work still running in another process.
MIN_AGE_S = 600.0
IMPORT_STAGING = ".import-"


@dataclass
class CleanReport:
    removed: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    freed_bytes: int = 0

    def lines(self) -> list[str]:
        out = [f"removed {p}" for p in self.removed] + [f"set aside {p}" for p in self.set_aside]
        out += [f"kept {p}" for p in self.kept]
        out.append(f"freed {human_bytes(self.freed_bytes)}")
        return out


def _old(path: Path, now: float, min_age_s: float) -> bool:
    try:
        return now - path.stat().st_mtime >= min_age_s
    except OSError:
        return False


def _lock_is_free(path: Path) -> bool:
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    lock.release()
    return True


def clean_data_folder(store: ModelStore | None = None, min_age_s: float = MIN_AGE_S) -> CleanReport:
    store = store or ModelStore()
    report = CleanReport()
    now = time.time()
    models = store.models_dir
    if models.is_dir():
        for p in sorted(models.iterdir()):
            if p.name.startswith(IMPORT_STAGING) and p.is_dir() and not p.is_symlink() and _old(p, now, min_age_s):
                report.freed_bytes += dir_size(p)
                shutil.rmtree(p, ignore_errors=True)
                report.removed.append(str(p))
            elif p.name.startswith(".download-") and p.name.endswith(".lock") and _lock_is_free(p):
                p.unlink(missing_ok=True)
                report.removed.append(str(p))
            elif p.name.startswith(".download-") and p.is_dir():
                report.kept.append(f"{p} (a partial download, {human_bytes(dir_size(p))}: the next download of "
                                   "this model continues from it; `unstar models download --restart` drops it)")
    for folder in (store.root, models, *(d for d in store.jobs_dir.glob("*") if d.is_dir())):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            if tmp.is_file() and _old(tmp, now, min_age_s):
                report.freed_bytes += tmp.stat().st_size
                tmp.unlink(missing_ok=True)
                report.removed.append(str(tmp))
    for record in (store.registry_path, store.settings_path):
        if _damaged(record, store):
            report.set_aside.append(f"{record} -> {set_aside(record)}")
    return report


def _damaged(path: Path, store: ModelStore) -> bool:
    if not path.exists():
        return False
    try:
        if path == store.registry_path:
            store.list()
        elif path == store.settings_path:
            store.load_settings()
        else:
            read_json(path)
    except StorageError:
        return True
    return False
