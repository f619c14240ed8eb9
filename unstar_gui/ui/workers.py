"""One long-lived QThread that owns every piece of MLX work in the app.

MLX streams belong to the thread that created them, so models are loaded, used for generation and trained on this
one thread only. The GUI submits tasks: a task is a callable `fn(ctx) -> iterator of engine events | value`.
Events travel to the GUI thread through a queued signal; results, errors and cancellations are separate callbacks
(the napari/superqt shape). Cancel is a flag object set directly from the GUI thread (a queued signal would never
reach a busy worker); the engine checks it between steps. A cancelled task's late events and result are dropped
in the GUI thread, so stale results never land (the Orange3 shape).

Events are coalesced: the worker appends them to a locked list and emits one "ready" signal per batch; the GUI
drains the batch on a short timer, so a chatty generator cannot flood the event loop.

The queue is visible: `tasks()` lists what runs and what waits, `queue_changed` says when that changed. A task
cancelled while it still waits ends at once (its callbacks run now), instead of minutes later when the worker
would have reached it.
"""

from __future__ import annotations

import gc
import itertools
import queue
import threading
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from ..engine.errors import Cancelled
from ..engine.events import Finished
from ..engine.embedded import resolve_model
from ..engine.store import ModelStore
from .errors import ErrorInfo

# How long the GUI waits to drain a batch of events: bounds GUI work to ~30 redraws a second during training.
DRAIN_INTERVAL_MS = 30


def new_cancel_token() -> Any:
    """The engine's CancelToken (pipeline.py): `.cancel()`, `.cancelled`, `.check()` raising Cancelled."""
    from ..engine.cancel import CancelToken

    return CancelToken()


class TaskHandle:
    """The GUI's grip on one submitted task. Callbacks run in the GUI thread."""

    def __init__(self, task_id: int, name: str, token: Any,
                 on_event: Callable[[Any], None] | None, on_result: Callable[[Any], None] | None,
                 on_error: Callable[[ErrorInfo], None] | None, on_cancelled: Callable[[], None] | None,
                 on_done: Callable[[], None] | None, on_started: Callable[[], None] | None = None,
                 on_cancel: Callable[["TaskHandle"], None] | None = None) -> None:
        self.id = task_id
        self.name = name
        self.token = token
        self.on_event, self.on_result, self.on_error = on_event, on_result, on_error
        self.on_cancelled, self.on_done, self.on_started = on_cancelled, on_done, on_started
        self._on_cancel = on_cancel  # the worker's hook: a waiting task ends at once
        self.started = False
        self.finished = False

    @property
    def cancelled(self) -> bool:
        return bool(self.token.cancelled)

    @property
    def state(self) -> str:
        """"waiting", "running" or "stopping" (cancelled while running: the engine stops at its next check)."""
        if not self.started:
            return "waiting"
        return "stopping" if self.cancelled else "running"

    def cancel(self) -> None:
        """Set the flag the engine polls; from now on nothing but `on_cancelled` reaches the GUI for this task."""
        self.token.cancel()
        if self._on_cancel is not None:
            self._on_cancel(self)

    def discard(self) -> None:
        """Cancel without any callback (a superseded preview, a closed page)."""
        self.on_cancelled = None
        self.on_done = None
        self.cancel()


class TaskContext:
    """What a task function receives on the worker thread: its cancel flag, the store and the loaded model."""

    def __init__(self, worker: "MlxWorker", token: Any) -> None:
        self._worker = worker
        self.cancel = token

    @property
    def store(self) -> ModelStore:
        # Fresh every time: Settings may have pointed the data folder elsewhere.
        return ModelStore()

    def llm(self, model: str | None = None) -> Any:
        """The model `model` (id, path or None = default) loaded on this thread, without any adapter."""
        return self._worker._load_llm(self.store, model)

    def llm_with_adapter(self, model: str | None, adapter_dir: Any) -> Any:
        llm = self.llm(model)
        llm.load_adapter(adapter_dir)
        return llm


class _WorkerThread(QThread):
    def __init__(self, worker: "MlxWorker") -> None:
        super().__init__()
        self.setObjectName("unstar-mlx-worker")
        self._worker = worker

    def run(self) -> None:
        self._worker._loop()


class MlxWorker(QObject):
    """Owns the worker thread and the one loaded model. Create it in the GUI thread; call `stop()` before exit."""

    # Emitted from the worker thread; the receivers are this object's slots in the GUI thread (queued).
    _events_ready = Signal()
    _task_ended = Signal(object)  # (task_id, outcome, payload)
    _task_started = Signal(object)  # task_id
    # Public: the loaded model changed (a short label); a task started or the queue ran empty (busy label or "");
    # a task was queued, started, cancelled or ended (read `tasks()`).
    model_changed = Signal(object)
    busy_changed = Signal(object)
    queue_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._queue: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._handles: dict[int, TaskHandle] = {}
        self._pending: list[tuple[int, Any]] = []
        self._pending_lock = threading.Lock()
        self._ready_signalled = False
        self._llm: Any = None
        self._llm_path = ""
        self._drain_timer = QTimer(self)
        self._drain_timer.setSingleShot(True)
        self._drain_timer.setInterval(DRAIN_INTERVAL_MS)
        self._drain_timer.timeout.connect(self._drain)
        self._events_ready.connect(self._schedule_drain)
        self._task_ended.connect(self._on_task_ended)
        self._task_started.connect(self._on_task_started)
        self._thread = _WorkerThread(self)
        self._thread.start()

    # GUI side ----------------------------------------------------------------------------------------------------
    def submit(self, fn: Callable[[TaskContext], Any], *, name: str = "",
               on_event: Callable[[Any], None] | None = None, on_result: Callable[[Any], None] | None = None,
               on_error: Callable[[ErrorInfo], None] | None = None, on_cancelled: Callable[[], None] | None = None,
               on_done: Callable[[], None] | None = None,
               on_started: Callable[[], None] | None = None) -> TaskHandle:
        """Queue `fn` for the worker thread. `name` is what the queue shows, in plain words. `on_started` runs when
        the worker takes the task up; `on_done` after whichever of result/error/cancelled came."""
        handle = TaskHandle(next(self._ids), name or getattr(fn, "__name__", "task"), new_cancel_token(),
                            on_event, on_result, on_error, on_cancelled, on_done, on_started,
                            on_cancel=self._end_if_waiting)
        self._handles[handle.id] = handle
        self._queue.put((handle.id, handle.name, fn, handle.token))
        self.queue_changed.emit()
        return handle

    def tasks(self) -> list[TaskHandle]:
        """What runs and what waits, in queue order (the running task first)."""
        return [h for h in self._handles.values() if not h.finished]

    def ahead_of(self, handle: TaskHandle) -> list[TaskHandle]:
        """The tasks that run before `handle` (empty once it runs)."""
        ahead = []
        for other in self.tasks():
            if other is handle:
                return ahead
            ahead.append(other)
        return []

    def cancel_all(self, reason: str = "user") -> None:
        """`reason` "signal": the app is being stopped (SIGTERM); jobs end as interrupted, resumable."""
        for handle in list(self._handles.values()):
            handle.token.cancel(reason=reason)
            handle.cancel()

    @property
    def idle(self) -> bool:
        return not self._handles

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Cancel everything, end the thread and wait for it; True when it ended in time."""
        for handle in list(self._handles.values()):
            handle.discard()
        self._queue.put(None)
        ended = self._thread.wait(timeout_ms)
        self._drain_timer.stop()
        self._handles.clear()  # their outcomes can no longer arrive
        return bool(ended)

    @Slot()
    def _schedule_drain(self) -> None:
        if not self._drain_timer.isActive():
            self._drain_timer.start()

    @Slot()
    def _drain(self) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending, []
            self._ready_signalled = False
        for task_id, event in batch:
            handle = self._handles.get(task_id)
            if handle is None or handle.cancelled or handle.on_event is None:
                continue
            handle.on_event(event)

    @Slot(object)
    def _on_task_started(self, task_id: int) -> None:
        handle = self._handles.get(task_id)
        if handle is None:
            return  # ended while it waited
        handle.started = True
        self.queue_changed.emit()
        if handle.on_started is not None and not handle.cancelled:
            handle.on_started()

    def _end_if_waiting(self, handle: TaskHandle) -> None:
        """A cancelled task the worker has not reached ends now; the worker skips it later (its flag is set)."""
        if handle.started or handle.finished or handle.id not in self._handles:
            self.queue_changed.emit()  # a running task now shows as stopping
            return
        self._finish(handle.id, "cancelled", None)

    @Slot(object)
    def _on_task_ended(self, message: tuple[int, str, Any]) -> None:
        task_id, outcome, payload = message
        self._drain()  # events always land before their task's outcome
        self._finish(task_id, outcome, payload)

    def _finish(self, task_id: int, outcome: str, payload: Any) -> None:
        handle = self._handles.pop(task_id, None)
        if not self._handles:
            self.busy_changed.emit("")
        if handle is None:
            return
        handle.finished = True
        self.queue_changed.emit()
        if handle.cancelled or outcome == "cancelled":
            callback = (lambda: handle.on_cancelled()) if handle.on_cancelled else None
        elif outcome == "error":
            callback = (lambda: handle.on_error(payload)) if handle.on_error else None
            if handle.on_error is None:
                from .dialogs import show_error  # a task nobody watches still must not fail silently

                callback = lambda: show_error(None, payload)  # noqa: E731
        else:
            callback = (lambda: handle.on_result(payload)) if handle.on_result else None
        try:
            if callback is not None:
                callback()
        finally:
            if handle.on_done is not None:
                handle.on_done()

    # worker side -------------------------------------------------------------------------------------------------
    def _post_event(self, task_id: int, event: Any) -> None:
        with self._pending_lock:
            self._pending.append((task_id, event))
            signal = not self._ready_signalled
            self._ready_signalled = True
        if signal:
            self._events_ready.emit()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            task_id, name, fn, token = item
            if token.cancelled:
                self._task_ended.emit((task_id, "cancelled", None))
                continue
            self._task_started.emit(task_id)
            self.busy_changed.emit(name)
            outcome, payload = self._run_one(task_id, fn, token)
            self._task_ended.emit((task_id, outcome, payload))
        self._unload()

    def _run_one(self, task_id: int, fn: Callable[[TaskContext], Any], token: Any) -> tuple[str, Any]:
        try:
            out = fn(TaskContext(self, token))
            if isinstance(out, Iterator):
                out = self._iterate(task_id, out, token)
            if token.cancelled:
                return "cancelled", None
            return "result", out
        except Cancelled:
            return "cancelled", None
        except Exception as exc:  # every failure reaches the GUI as a dialog, never a dead thread
            return "error", ErrorInfo.from_exception(exc)

    def _iterate(self, task_id: int, events: Iterator[Any], token: Any) -> Any:
        """Run an engine generator, forwarding its events; its result is a Finished event or the return value."""
        result = None
        try:
            while True:
                if token.cancelled:
                    raise Cancelled()
                try:
                    event = next(events)
                except StopIteration as stop:
                    return stop.value if stop.value is not None else result
                if isinstance(event, Finished):
                    result = event
                self._post_event(task_id, event)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # the generator's finally blocks run here (job status, checkpoints)

    def _load_llm(self, store: ModelStore, model: str | None) -> Any:
        from ..engine.llm import LLM

        record = resolve_model(store, model)
        if self._llm is not None and self._llm_path == record.path:
            if self._llm.lora is not None:
                self._llm.detach_lora()
            return self._llm
        self._unload()
        self.model_changed.emit(f"loading {record.id}…")
        self._llm = LLM(record.path, model_id=record.id)
        self._llm_path = record.path
        self.model_changed.emit(record.id)
        return self._llm

    def _unload(self) -> None:
        if self._llm is not None:
            self._llm = None
            self._llm_path = ""
            gc.collect()  # free the old weights before the next model loads
            self.model_changed.emit("")

