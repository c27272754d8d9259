"""A ``concurrent.futures.Executor`` whose calls run as fabric tasks on one endpoint.

Two background threads: the *submitter* sends what :meth:`Executor.submit` queued, as few
``POST /v1/tasks`` as it can (everything queued while the previous one was in flight goes in the
next), and the cancellations futures asked for; the *reader* holds ONE event stream
(``POST /v1/tasks/watch``) naming the outstanding tasks and completes each future as its task
finishes. The stream is opened again when tasks are added, when its window of tasks is mostly
done, and when it drops.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import threading
import time
import weakref
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import _wire
from ._source import function_source
from ._watch import MAX_WATCH_IDS, SILENCE_S, WATCH_PATH, backoff, stream_error
from .client import Client, _encode_text
from .errors import BatchSubmitError, FabricError, TaskFailed


#: Seconds a background thread with nothing to do waits before it ends (a new one starts on demand).
IDLE_EXIT_S = 5.0


class FabricFuture(Future):
    """The future of one task. ``task_id`` is set once the task is submitted (``None`` before).
    :meth:`cancel` also cancels the remote task. The future stays pending until its task has
    finished (``running()`` is never true), so it can be cancelled until then."""

    def __init__(self, executor: "Executor") -> None:
        super().__init__()
        self.task_id: Optional[str] = None
        self._executor_ref = weakref.ref(executor)

    def cancel(self) -> bool:
        """Cancels the future and, once submitted, its task (best effort: a task finishing at the
        same moment keeps its outcome on the broker). False when the future is already done."""
        if not super().cancel():
            return False
        # Tell waiters (concurrent.futures.wait, as_completed) at once: no worker will.
        self.set_running_or_notify_cancel()
        executor = self._executor_ref()
        if executor is not None:
            executor._future_cancelled(self)
        return True


def _complete(future: FabricFuture, task: Dict[str, Any]) -> None:
    """Completes ``future`` with its finished task: result, TaskFailed, or cancelled."""
    state = task.get("state")
    try:
        if state == "success":
            future.set_result(task.get("result"))
        elif state == "cancelled":
            if Future.cancel(future):  # cancelled remotely: the future is cancelled, not failed
                future.set_running_or_notify_cancel()
        else:
            future.set_exception(TaskFailed.from_task(task))
    except InvalidStateError:
        pass  # cancelled locally meanwhile


def _fail(future: FabricFuture, err: BaseException) -> None:
    try:
        future.set_exception(err)
    except InvalidStateError:
        pass


class _Work:
    __slots__ = ("future", "task_json")

    def __init__(self, future: FabricFuture, task_json: bytes) -> None:
        self.future = future
        self.task_json = task_json


class Executor(concurrent.futures.Executor):
    """Runs ``fn(*args, **kwargs)`` as fabric tasks on ``endpoint_id`` (default: the client's).

    ``submit`` registers each function once (its source, as
    :meth:`Client.register_function` sends it, is hashed: the same source is the same function)
    and returns a :class:`FabricFuture`. Results arrive through one event stream read by a
    background thread, not by polling each task. ``map``, ``concurrent.futures.wait`` and
    ``as_completed`` work as with any executor. ``timeout_s`` bounds each task's run time;
    ``batch_size`` is the most tasks one submission carries; ``min_version`` is passed to each
    registration.

    Example::

        with Executor(client, endpoint_id) as ex:
            squares = list(ex.map(square, range(100)))
            future = ex.submit(square, 12)
            assert future.result(timeout=60) == 144
    """

    def __init__(
        self,
        client: Client,
        endpoint_id: Optional[str] = None,
        *,
        timeout_s: Optional[int] = None,
        batch_size: int = 1000,
        min_version: Optional[str] = None,
    ) -> None:
        self.client = client
        self.endpoint_id = client._endpoint(endpoint_id)
        self.timeout_s = timeout_s
        self.batch_size = max(1, int(batch_size))
        self.min_version = min_version
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: Deque[_Work] = collections.deque()
        self._cancels: List[str] = []
        self._shutdown = False
        self._submitter: Optional[threading.Thread] = None
        self._reader = _ResultReader(client)
        # Function ids: by function object, and by source hash (a function defined again with the
        # same source, as a re-run notebook cell does, is not registered again).
        self._by_function: "weakref.WeakKeyDictionary[Callable, str]" = weakref.WeakKeyDictionary()
        self._by_source: Dict[str, str] = {}
        self._register_lock = threading.Lock()
        self._fixed = (
            '{"functionId":%s,"endpointId":' + _encode_text(self.endpoint_id)
            + ("" if timeout_s is None else ',"timeoutS":%d' % int(timeout_s))
        )

    # -- public -----------------------------------------------------------------------------------

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> FabricFuture:
        """Runs ``fn(*args, **kwargs)`` remotely; returns its future. ``fn`` is registered on first
        use (a ``TypeError``/``ValueError`` here when its source cannot be sent). Arguments that
        JSON cannot carry fail the future with ``INVALID_ARGUMENT``."""
        return self._enqueue(self._function_id(fn), args, kwargs)

    def submit_registered(self, function_id: str, /, *args: Any, **kwargs: Any) -> FabricFuture:
        """Runs the already registered function ``function_id`` (any kind: Python, shell, JS)."""
        return self._enqueue(function_id, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new submissions after this. With ``cancel_futures``, every future not yet done is
        cancelled, and with it its remote task. With ``wait``, returns once every future is done
        and the background threads have ended; without, they end by themselves once done."""
        with self._lock:
            self._shutdown = True
            queued = [w.future for w in self._queue] if cancel_futures else []
            self._wake.notify_all()
        if cancel_futures:
            for future in queued + self._reader.outstanding_futures():
                future.cancel()
        self._reader.stop_when_idle()
        if wait:
            with self._lock:
                submitter = self._submitter
            if submitter is not None:
                submitter.join()
            self._reader.join()

    # -- registration -----------------------------------------------------------------------------

    def _function_id(self, fn: Callable) -> str:
        try:
            known = self._by_function.get(fn)
        except TypeError:  # not weak-referenceable: function_source refuses it below
            known = None
        if known is not None:
            return known
        source, entry_point = function_source(fn)
        key = hashlib.sha256(
            ("%s\0%s\0%s" % (entry_point, self.min_version or "", source)).encode("utf-8")
        ).hexdigest()
        with self._register_lock:
            fid = self._by_source.get(key)
            if fid is None:
                fid = self.client.register_python(source, entry_point, name=entry_point, min_version=self.min_version)
                self._by_source[key] = fid
            try:
                self._by_function[fn] = fid
            except TypeError:
                pass
        return fid

    # -- submission -------------------------------------------------------------------------------

    def _enqueue(self, function_id: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> FabricFuture:
        future = FabricFuture(self)
        parts = [self._fixed % _encode_text(function_id)]
        try:
            if args:
                parts += [',"args":', _wire.encode(list(args), "the arguments").decode("utf-8")]
            if kwargs:
                parts += [',"kwargs":', _wire.encode(kwargs, "the keyword arguments").decode("utf-8")]
        except FabricError as err:
            with self._lock:
                if self._shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown") from None
            future.set_exception(err)
            return future
        parts.append("}")
        work = _Work(future, "".join(parts).encode("utf-8"))
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.append(work)
            if self._submitter is None:
                self._submitter = threading.Thread(target=self._submit_loop, name="fabric-executor-submit", daemon=True)
                self._submitter.start()
            self._wake.notify()
        return future

    def _future_cancelled(self, future: FabricFuture) -> None:
        """A future was cancelled: its task, if it has one, is cancelled by the submitter."""
        with self._lock:
            task_id = future.task_id
            if task_id is None:
                return  # not submitted yet: the submitter drops it
            self._cancels.append(task_id)
            if self._submitter is None:
                self._submitter = threading.Thread(target=self._submit_loop, name="fabric-executor-submit", daemon=True)
                self._submitter.start()
            self._wake.notify()
        self._reader.forget(task_id)

    def _submit_loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._cancels and not self._shutdown:
                    if not self._wake.wait(IDLE_EXIT_S) and not self._queue and not self._cancels:
                        # Idle: end (the next submission starts a thread again), so an executor
                        # dropped without shutdown leaves no thread behind.
                        self._submitter = None
                        return
                if not self._queue and not self._cancels:
                    # Shut down and nothing left to send. A cancellation after this starts a new
                    # thread (_future_cancelled), so none is left unsent.
                    self._submitter = None
                    return
                batch: List[_Work] = []
                while self._queue and len(batch) < self.batch_size:
                    batch.append(self._queue.popleft())
                cancels, self._cancels = self._cancels, []
            if cancels:
                self._send_cancels(cancels)
            live = [w for w in batch if not w.future.cancelled()]
            if live:
                self._send(live)

    def _send_cancels(self, task_ids: List[str]) -> None:
        try:
            self.client.cancel(task_ids)
        except FabricError:
            pass  # best effort: the futures are cancelled already; the tasks may run to the end

    def _send(self, batch: List[_Work]) -> None:
        made: List[str] = []
        error: Optional[FabricError] = None
        try:
            made = self.client._submit_encoded([w.task_json for w in batch], "", self.batch_size)
        except BatchSubmitError as err:
            made, error = err.task_ids, err
        except FabricError as err:
            error = err
        except BaseException as err:  # never leave a future hanging on a bug
            for w in batch:
                _fail(w.future, err)
            raise
        submitted: Dict[str, FabricFuture] = {}
        late_cancels: List[str] = []
        with self._lock:
            for work, task_id in zip(batch, made):
                work.future.task_id = task_id
                if work.future.cancelled():
                    late_cancels.append(task_id)
                else:
                    submitted[task_id] = work.future
        if late_cancels:
            self._send_cancels(late_cancels)
        if submitted:
            self._reader.add(submitted)
        if error is not None:
            cause = error.__cause__ if isinstance(error, BatchSubmitError) else error
            for work in batch[len(made) :]:
                _fail(work.future, cause if isinstance(cause, BaseException) else error)


class _ResultReader:
    """The one thread that completes the executor's futures from an event stream of their tasks."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._outstanding: "collections.OrderedDict[str, FabricFuture]" = collections.OrderedDict()
        self._watching: set = set()
        self._stream = None
        self._dirty = False
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        #: Streams opened so far (a diagnostic: drops and additions each open one).
        self.streams_opened = 0

    def add(self, futures: Dict[str, FabricFuture]) -> None:
        with self._lock:
            self._outstanding.update(futures)
            if len(self._watching) < MAX_WATCH_IDS:
                # The open stream does not name them: open it again with them.
                self._dirty = True
                if self._stream is not None:
                    self._stream.interrupt()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fabric-executor-results", daemon=True)
                self._thread.start()
            self._wake.notify()

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._outstanding.pop(task_id, None)

    def outstanding_futures(self) -> List[FabricFuture]:
        with self._lock:
            return list(self._outstanding.values())

    def stop_when_idle(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify()

    def join(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        failures = 0
        spare = None  # the connection of the last stream that ended cleanly, for the next one
        while True:
            with self._lock:
                while not self._outstanding and not self._stopping:
                    if not self._wake.wait(IDLE_EXIT_S) and not self._outstanding:
                        break  # idle: end; the next add() starts a thread again
                if not self._outstanding:
                    self._thread = None
                    if spare is not None:
                        spare.close()
                    return
                window = list(self._outstanding)[:MAX_WATCH_IDS]
                self._watching = set(window)
                self._dirty = False
            body = _wire.encode({"taskIds": window})
            try:
                self.streams_opened += 1
                stream = self._client._http.open_stream(WATCH_PATH, body, SILENCE_S, conn=spare)
            except FabricError as err:
                if err.retryable:
                    failures += 1
                    time.sleep(backoff(failures))
                else:
                    self._fail_window(window, err)
                continue
            finally:
                spare = None
            with self._lock:
                self._stream = stream
                if self._dirty:
                    stream.interrupt()
            try:
                how = self._read(stream)
            except FabricError as err:
                how = "dropped"
                if not err.retryable:  # the broker's own error event, and not one of "not now"
                    self._fail_window(window, err)
            finally:
                with self._lock:
                    self._stream = None
            if how == "done":
                spare = stream.release()
            else:
                stream.close()
            if how == "dropped" and not stream.interrupted:
                failures += 1
                time.sleep(backoff(failures))
            else:
                failures = 0

    def _read(self, stream) -> str:
        """Completes futures from ``stream``; answers how it ended: ``"done"`` (its done event),
        ``"reopen"`` (most of its window is done while more tasks wait), or ``"dropped"`` (it
        ended, or was interrupted, without its done event)."""
        for event in stream:
            if event.event == "task":
                task = _wire.decode(event.data)
                with self._lock:
                    future = self._outstanding.pop(task.get("id"), None)
                    self._watching.discard(task.get("id"))
                    reopen = len(self._watching) < MAX_WATCH_IDS // 2 and len(self._outstanding) > len(self._watching)
                if future is not None:
                    _complete(future, task)
                if reopen:
                    return "reopen"
            elif event.event == "done":
                return "done"
            elif event.event == "error":
                raise stream_error(event.data)
        return "dropped"

    def _fail_window(self, window: List[str], err: FabricError) -> None:
        with self._lock:
            futures = [self._outstanding.pop(t) for t in window if t in self._outstanding]
        for future in futures:
            _fail(future, err)
