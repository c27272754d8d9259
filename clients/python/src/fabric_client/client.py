"""The client of the broker's HTTP/JSON API: functions, endpoints, tasks and their results."""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import ssl
import time
import uuid
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _wire
from ._http import Transport, path_of, query_items
from ._source import function_source
from .errors import BatchSubmitError, FabricError, ResultTimeout, TaskFailed

#: States a task never leaves.
TERMINAL_STATES = frozenset({"success", "failed", "cancelled", "expired"})

# Most ids one get, cancel, wait or watch names (the API's bound on get and cancel).
MAX_IDS = 1000
# Longest single long-poll the API takes (POST /v1/tasks/wait's timeoutMs).
MAX_WAIT_MS = 60_000
# Tasks per POST /v1/tasks when a batch is split (the broker's limits.maxBatchSize defaults to 10,000).
DEFAULT_CHUNK = 1000

_encode_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class TaskIds(list):
    """The ids of submitted tasks, in the order of the calls, and ``group_id``: the group they
    were submitted in (watchable as one)."""

    def __init__(self, ids: Iterable[str] = (), group_id: str = "") -> None:
        super().__init__(ids)
        self.group_id = group_id


class TaskPage:
    """One page of a task listing: ``tasks`` (newest first) and ``next_cursor`` (``""`` when
    there is no more). A page may hold fewer tasks than asked for while more follow."""

    def __init__(self, tasks: List[Dict[str, Any]], next_cursor: str) -> None:
        self.tasks = tasks
        self.next_cursor = next_cursor

    def __repr__(self) -> str:
        return "TaskPage(%d tasks, next_cursor=%r)" % (len(self.tasks), self.next_cursor)


class TaskListing:
    """The tasks matching a :meth:`Client.list_tasks` filter, fetched lazily a page at a time.

    Iterating yields every matching task (a summary dict: ``id``, ``functionId``,
    ``endpointId``, ``groupId``, ``state``, ``createdAtMs``, ``completedAtMs``), newest first,
    following the cursor until the listing ends. :meth:`pages` yields the pages themselves;
    after iterating part of the way, :attr:`next_cursor` is where to resume (pass it as
    ``cursor=`` to a later :meth:`Client.list_tasks`).
    """

    def __init__(self, client: "Client", query: List[Tuple[str, Any]], cursor: str) -> None:
        self._client = client
        self._query = query
        self.next_cursor = cursor
        self._started = False

    def pages(self) -> Iterator[TaskPage]:
        """The pages, from the cursor the listing was made with, each one request."""
        cursor = self.next_cursor
        first = not self._started
        self._started = True
        while first or cursor:
            first = False
            page = self._client._list_page(self._query, cursor)
            cursor = page.next_cursor
            self.next_cursor = cursor
            yield page

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for page in self.pages():
            for task in page.tasks:
                yield task


def result_of(task: Mapping[str, Any]) -> Any:
    """A finished task's result; :class:`TaskFailed` when it failed, expired or was cancelled."""
    state = task.get("state")
    if state == "success":
        return task.get("result")
    if state in TERMINAL_STATES:
        raise TaskFailed.from_task(task)
    raise FabricError("FAILED_PRECONDITION", "task %s has not finished (state %s)" % (task.get("id"), state))


def _ms(value: Union[None, float, int, _dt.datetime], what: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value * 1000)
    raise TypeError("%s must be a datetime or seconds since the epoch, got %s" % (what, type(value).__name__))


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name, "").strip()
    return value or None


def tls_context(
    ca_file: Optional[str] = None, cert_file: Optional[str] = None, key_file: Optional[str] = None
) -> ssl.SSLContext:
    """A TLS context that trusts ``ca_file`` (default: the system's trust store) and, for a broker
    that asks for client certificates, presents ``cert_file`` (with ``key_file``, if separate)."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    elif key_file:
        raise ValueError("a key file without a certificate: pass cert_file (or FABRIC_CERT_FILE) too")
    return context


class Client:
    """A client of the broker's HTTP API at ``address`` (``http://host:port``), signed in with
    ``token`` (from ``fabric-broker token``); each defaults to the environment's
    ``FABRIC_HTTP_ADDRESS`` and ``FABRIC_TOKEN``. An ``https://`` address trusts ``ca_file``
    (else the system's trust store) and presents ``cert_file``/``key_file`` to a broker that asks
    for client certificates; they default to ``FABRIC_CA_FILE``, ``FABRIC_CERT_FILE`` and
    ``FABRIC_KEY_FILE``, as for the SDK and CLI (or pass a whole ``ssl_context``). ``endpoint_id`` (or ``FABRIC_ENDPOINT_ID``) is
    where :meth:`run` and :meth:`submit_batch` send tasks when not told. ``timeout`` bounds each
    wait for an answer (seconds); calls that only read, and submissions (which carry an
    idempotency key), are tried again for up to ``retry_window`` seconds while the broker is
    unreachable or answers a retryable code.

    One client is safe to share between threads: calls borrow keep-alive connections from a
    small pool. Close it (or use it as a context manager) to close them.

    Example::

        from fabric_client import Client

        client = Client("http://127.0.0.1:8080", token)

        def double(x):
            return 2 * x

        fid = client.register_function(double)
        task = client.run(fid, 21, endpoint_id=endpoint)
        assert client.get_result(task, timeout=60) == 42
    """

    def __init__(
        self,
        address: Optional[str] = None,
        token: Optional[str] = None,
        *,
        endpoint_id: Optional[str] = None,
        timeout: float = 30.0,
        retry_window: float = 30.0,
        ssl_context: Optional[ssl.SSLContext] = None,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
    ) -> None:
        address = address or _env("FABRIC_HTTP_ADDRESS")
        token = token or _env("FABRIC_TOKEN")
        if not address:
            raise ValueError("no broker address: pass address= or set FABRIC_HTTP_ADDRESS (e.g. http://127.0.0.1:8080)")
        if not token:
            raise ValueError("no token: pass token= or set FABRIC_TOKEN (from `fabric-broker token -u USER`)")
        self.address = address
        self.endpoint_id = endpoint_id or _env("FABRIC_ENDPOINT_ID")
        self.timeout = timeout
        self.retry_window = retry_window
        if ssl_context is None and address.lower().startswith("https:"):
            ssl_context = tls_context(
                ca_file or _env("FABRIC_CA_FILE"),
                cert_file or _env("FABRIC_CERT_FILE"),
                key_file or _env("FABRIC_KEY_FILE"),
            )
        self._http = Transport(address, token, timeout, ssl_context)

    # -- plumbing ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Optional[Sequence[Tuple[str, Any]]] = None,
        *,
        retry: bool = True,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
    ) -> Any:
        payload = None if body is None else (body if isinstance(body, bytes) else _wire.encode(body, "the request"))
        give_up = time.monotonic() + self.retry_window
        if deadline is not None:
            give_up = min(give_up, deadline)
        for attempt in range(1, 1000):
            try:
                return self._http.call(method, path, payload, query, timeout)
            except FabricError as err:
                if not (retry and err.retryable) or time.monotonic() >= give_up:
                    raise
                pause = min(0.05 * 2**attempt, 2.0) * (0.5 + random.random() / 2)
                time.sleep(max(0.0, min(pause, give_up - time.monotonic())))
        raise AssertionError("unreachable")

    def _endpoint(self, endpoint_id: Optional[str]) -> str:
        endpoint = endpoint_id or self.endpoint_id
        if not endpoint:
            raise ValueError("no endpoint: pass endpoint_id= or give the Client one (or set FABRIC_ENDPOINT_ID)")
        return endpoint

    def close(self) -> None:
        """Closes the client's connections; calls after it raise ``FAILED_PRECONDITION``."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Client(%r)" % self.address

    # -- functions --------------------------------------------------------------------------------

    def register_function(
        self,
        func: Callable,
        name: Optional[str] = None,
        description: Optional[str] = None,
        min_version: Optional[str] = None,
        *,
        timeout_s: Optional[int] = None,
        max_retries: Optional[int] = None,
        container_image: Optional[str] = None,
        network: Optional[bool] = None,
    ) -> str:
        """Registers the Python function ``func`` and returns its function id.

        Its source is ``inspect.getsource(func)``, dedented and without decorators, after an
        ``import`` for each module it uses through a global name (``import numpy as np`` when it
        calls ``np.…``); other globals it reads (constants, helpers) are not sent, so import and
        define what it needs inside it, or pass it as arguments. The entry point is its name.
        ``name`` defaults to that name, ``description`` to the docstring's first line;
        ``min_version`` (``"3.10"``) is the lowest Python it runs on. ``timeout_s`` (seconds a
        task may run), ``max_retries``, ``container_image`` and ``network`` are the spec's
        common options.
        """
        source, entry_point = function_source(func)
        if description is None:
            doc = (getattr(func, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else None
        return self.register_python(
            source,
            entry_point,
            name=name or entry_point,
            description=description,
            min_version=min_version,
            timeout_s=timeout_s,
            max_retries=max_retries,
            container_image=container_image,
            network=network,
        )

    def register_python(
        self,
        source: str,
        entry_point: str,
        name: Optional[str] = None,
        description: Optional[str] = None,
        min_version: Optional[str] = None,
        **options: Any,
    ) -> str:
        """Registers Python module ``source`` whose callable ``entry_point`` (a dotted path reaches
        into classes) each task calls; returns the function id. Options as :meth:`register_function`."""
        python: Dict[str, Any] = {"source": source, "entryPoint": entry_point}
        if min_version is not None:
            python["minVersion"] = str(min_version)
        return self._register({"python": python}, name, description, **options)

    def register_shell(
        self,
        command: str,
        name: Optional[str] = None,
        description: Optional[str] = None,
        *,
        walltime_s: Optional[int] = None,
        **options: Any,
    ) -> str:
        """Registers a shell command template (``{name}`` placeholders are filled from each task's
        keyword arguments, shell-quoted); returns the function id. A task's result is
        ``{"exitCode", "stdout", "stderr", ...}``; a non-zero exit fails it (reason
        ``shell_exit_nonzero``). ``walltime_s``: seconds before the command is killed."""
        shell: Dict[str, Any] = {"command": command}
        if walltime_s is not None:
            shell["walltimeS"] = int(walltime_s)
        return self._register({"shell": shell}, name, description, **options)

    def _register(
        self,
        spec: Dict[str, Any],
        name: Optional[str],
        description: Optional[str],
        timeout_s: Optional[int] = None,
        max_retries: Optional[int] = None,
        container_image: Optional[str] = None,
        network: Optional[bool] = None,
    ) -> str:
        if timeout_s is not None:
            spec["timeoutS"] = int(timeout_s)
        if max_retries is not None:
            spec["maxRetries"] = int(max_retries)
        if container_image is not None:
            spec["containerImage"] = container_image
        if network is not None:
            spec["network"] = bool(network)
        body: Dict[str, Any] = {"spec": spec}
        if name is not None:
            body["name"] = name
        if description is not None:
            body["description"] = description
        # Not retried: a lost answer would register the function twice.
        return self._call("POST", "/v1/functions", body, retry=False)["function"]["id"]

    def get_function(self, function_id: str) -> Dict[str, Any]:
        """One function: ``id``, ``owner``, ``name``, ``description``, ``spec``, ``public``, ``sharedWith``."""
        return self._call("GET", path_of("v1", "functions", function_id))["function"]

    def list_functions(self) -> List[Dict[str, Any]]:
        """The functions the caller owns or may use."""
        return self._call("GET", "/v1/functions")["functions"]

    def delete_function(self, function_id: str) -> None:
        """Deletes a function the caller owns."""
        self._call("DELETE", path_of("v1", "functions", function_id), retry=False)

    def share_function(
        self, function_id: str, public: bool = False, shared_with: Sequence[str] = ()
    ) -> Dict[str, Any]:
        """Sets who may use a function (``shared_with``: users, or ``group:NAME``); answers it."""
        body = {"public": bool(public), "sharedWith": list(shared_with)}
        return self._call("POST", path_of("v1", "functions", function_id, "share"), body)["function"]

    # -- endpoints --------------------------------------------------------------------------------

    def get_endpoint(self, endpoint_id: str) -> Dict[str, Any]:
        """One endpoint: ``{"endpoint": {...}, "status": {"connection", "queuedTasks", "last"}}``."""
        return self._call("GET", path_of("v1", "endpoints", endpoint_id))

    def list_endpoints(self) -> List[Dict[str, Any]]:
        """The endpoints the caller owns or may use, each as :meth:`get_endpoint` answers it."""
        return self._call("GET", "/v1/endpoints")["endpoints"]

    def endpoint_tasks(self, endpoint_id: str, limit: int = 100) -> Dict[str, Any]:
        """The unfinished tasks on an endpoint the caller owns, whoever submitted them:
        ``{"queuedCount", "takenCount", "tasks": [{id, owner, functionId, state, createdAtMs}]}``,
        oldest queued first (never arguments or results)."""
        query = [("limit", int(limit))]
        return self._call("GET", path_of("v1", "endpoints", endpoint_id, "tasks"), query=query)

    # -- tasks ------------------------------------------------------------------------------------

    def run(
        self,
        function_id: str,
        *args: Any,
        endpoint_id: Optional[str] = None,
        timeout_s: Optional[int] = None,
        **kwargs: Any,
    ) -> str:
        """Submits one call of ``function_id(*args, **kwargs)`` on ``endpoint_id`` (default: the
        client's) and returns its task id. ``timeout_s``: seconds it may run (at most the
        function's own limit). A function whose own keyword arguments are named ``endpoint_id`` or
        ``timeout_s`` goes through :meth:`submit_batch` instead."""
        ids = self.submit_batch(function_id, endpoint_id, [(args, kwargs)], timeout_s=timeout_s)
        return ids[0]

    def submit_batch(
        self,
        function_id: str,
        endpoint_id: Optional[str],
        calls: Iterable[Tuple[Sequence[Any], Optional[Mapping[str, Any]]]],
        *,
        timeout_s: Optional[int] = None,
        group_id: Optional[str] = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> TaskIds:
        """Submits one task per ``(args, kwargs)`` pair of ``calls`` and returns their ids, in
        order (a :class:`TaskIds`, a list with the ``group_id`` they share). Sent as few
        ``POST /v1/tasks`` calls of at most ``chunk_size`` tasks, each with an idempotency key (a
        retry after a lost answer never creates its tasks twice), all in one group (``group_id``
        when given). When a later chunk fails, :class:`BatchSubmitError` names the tasks made."""
        endpoint = self._endpoint(endpoint_id)
        fid = _encode_text(function_id)
        eid = _encode_text(endpoint)
        timeout = "" if timeout_s is None else ',"timeoutS":%d' % int(timeout_s)
        tasks: List[bytes] = []
        for i, call in enumerate(calls):
            try:
                args, kwargs = call
            except (TypeError, ValueError):
                raise TypeError("calls[%d] must be an (args, kwargs) pair, got %r" % (i, call)) from None
            parts = ['{"functionId":', fid, ',"endpointId":', eid, timeout]
            if args:
                parts += [',"args":', _wire.encode(list(args), "calls[%d] args" % i).decode("utf-8")]
            if kwargs:
                parts += [',"kwargs":', _wire.encode(dict(kwargs), "calls[%d] kwargs" % i).decode("utf-8")]
            parts.append("}")
            tasks.append("".join(parts).encode("utf-8"))
        return self._submit_encoded(tasks, group_id or "", max(1, int(chunk_size)))

    def _submit_encoded(self, tasks: List[bytes], group_id: str, chunk_size: int) -> TaskIds:
        """Submits tasks given as their JSON objects, in chunks, in one group."""
        ids = TaskIds(group_id=group_id)
        for start in range(0, len(tasks), chunk_size):
            try:
                group, made = self._submit_chunk(tasks[start : start + chunk_size], ids.group_id)
            except FabricError as err:
                if not ids:
                    raise
                raise BatchSubmitError(err, list(ids), ids.group_id, len(tasks)) from err
            ids.group_id = group
            ids.extend(made)
        return ids

    def _submit_chunk(self, tasks: List[bytes], group_id: str) -> Tuple[str, List[str]]:
        head = b'{"idempotencyKey":"' + uuid.uuid4().hex.encode("ascii") + b'"'
        if group_id:
            head += b',"groupId":' + _encode_text(group_id).encode("utf-8")
        body = head + b',"tasks":[' + b",".join(tasks) + b"]}"
        answer = self._call("POST", "/v1/tasks", body)
        return answer["groupId"], answer["taskIds"]

    def get_task(self, task_id: str) -> Dict[str, Any]:
        """One task as the API shows it: ``id``, ``functionId``, ``endpointId``, ``groupId``,
        ``state``, ``history``, ``result`` (bytes inside as ``bytes``), ``error``, ``output``,
        ``createdAtMs``, ``completedAtMs``, ``attempts``. ``NOT_FOUND`` for an unknown id."""
        return self._call("GET", path_of("v1", "tasks", task_id))["task"]

    def get_tasks(self, task_ids: Sequence[str], omit_results: bool = False) -> List[Dict[str, Any]]:
        """Many tasks, in the order asked (one unknown id fails the call with ``NOT_FOUND``)."""
        ids = list(task_ids)
        out: List[Dict[str, Any]] = []
        for start in range(0, len(ids), MAX_IDS):
            body = {"taskIds": ids[start : start + MAX_IDS], "omitResults": bool(omit_results)}
            out.extend(self._call("POST", "/v1/tasks/get", body)["tasks"])
        return out

    def get_result(self, task_id: str, timeout: Optional[float] = None) -> Any:
        """The result of task ``task_id``, waiting for it to finish for up to ``timeout`` seconds
        (``None``: as long as it takes) with the API's long poll. Raises :class:`TaskFailed` when
        the task failed, expired or was cancelled, and :class:`ResultTimeout` (a ``TimeoutError``)
        when it did not finish in time."""
        finished, pending = self.wait([task_id], timeout=timeout)
        if pending:
            raise ResultTimeout("task %s did not finish within %gs" % (task_id, timeout or 0), pending)
        return result_of(finished[0])

    def wait(
        self, task_ids: Sequence[str], timeout: Optional[float] = None, return_when: str = "ALL_COMPLETED"
    ) -> Tuple[List[Dict[str, Any]], List[str]]:
        """Waits until every task of ``task_ids`` (or with ``return_when="FIRST_COMPLETED"`` at
        least one) has finished, or ``timeout`` seconds (``None``: no limit) have passed, with
        ``POST /v1/tasks/wait``. Returns ``(finished, pending)``: the finished tasks (as
        :meth:`get_task` shows them) and the ids still unfinished."""
        if return_when not in ("ALL_COMPLETED", "FIRST_COMPLETED"):
            raise ValueError("return_when must be ALL_COMPLETED or FIRST_COMPLETED, got %r" % (return_when,))
        want_all = return_when == "ALL_COMPLETED"
        pending = list(dict.fromkeys(task_ids))
        finished: List[Dict[str, Any]] = []
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while pending:
            remaining = None if deadline is None else deadline - time.monotonic()
            wait_ms = MAX_WAIT_MS if remaining is None else max(0, min(MAX_WAIT_MS, int(remaining * 1000)))
            if not want_all and len(pending) > MAX_IDS:
                # One long poll names at most MAX_IDS tasks: turn through the chunks quickly.
                wait_ms = min(wait_ms, 1000)
            chunk = pending[:MAX_IDS]
            body = {"taskIds": chunk, "timeoutMs": wait_ms, "all": want_all}
            answer = self._call(
                "POST",
                "/v1/tasks/wait",
                body,
                timeout=wait_ms / 1000.0 + self.timeout,
                deadline=None if deadline is None else deadline + self.timeout,
            )
            done = answer.get("tasks", [])
            finished.extend(done)
            done_ids = {t["id"] for t in done}
            if done_ids:
                pending = [i for i in pending if i not in done_ids]
            elif not want_all and len(pending) > MAX_IDS:
                pending = pending[MAX_IDS:] + chunk
            if finished and not want_all:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        return finished, pending

    def watch(
        self,
        task_ids: Optional[Sequence[str]] = None,
        group_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[Dict[str, Any]]:
        """Yields each task of ``task_ids`` (or of group ``group_id``) as it finishes, from the
        Server-Sent Events of ``POST /v1/tasks/watch``, and ends when all have (or, with
        ``timeout``, after that many seconds, raising :class:`ResultTimeout`). A stream that drops
        is opened again for the tasks not yet seen."""
        if (task_ids is None) == (group_id is None):
            raise ValueError("watch takes task_ids or group_id, not both")
        from ._watch import watch_tasks

        return watch_tasks(self, list(task_ids) if task_ids is not None else None, group_id, timeout)

    def list_tasks(
        self,
        state: Union[None, str, Sequence[str]] = None,
        function_id: Optional[str] = None,
        endpoint_id: Optional[str] = None,
        group_id: Optional[str] = None,
        created_after: Union[None, float, _dt.datetime] = None,
        created_before: Union[None, float, _dt.datetime] = None,
        limit: int = 100,
        cursor: Optional[str] = None,
    ) -> TaskListing:
        """The caller's tasks, newest first, filtered by ``state`` (one or several of
        ``received``, ``waiting_for_endpoint``, ``waiting_for_nodes``, ``running``, ``success``,
        ``failed``, ``cancelled``, ``expired``), function, endpoint, group, and creation time
        (``created_after``/``created_before``: a ``datetime`` or seconds since the epoch, as
        ``time.time()``). ``limit`` is the page size; ``cursor`` resumes an earlier listing.

        Returns a :class:`TaskListing`: iterate it for every matching task (it follows the
        cursor, a request per page, as you go), or call ``.pages()`` for the pages::

            for task in client.list_tasks(state="failed", endpoint_id=ep):
                print(task["id"], task["createdAtMs"])
        """
        states = [state] if isinstance(state, str) else list(state or [])
        query = query_items(
            {
                "state": states or None,
                "functionId": function_id,
                "endpointId": endpoint_id,
                "groupId": group_id,
                "createdAfterMs": _ms(created_after, "created_after"),
                "createdBeforeMs": _ms(created_before, "created_before"),
                "limit": int(limit),
            }
        )
        return TaskListing(self, query, cursor or "")

    def _list_page(self, query: List[Tuple[str, Any]], cursor: str) -> TaskPage:
        items = query + ([("cursor", cursor)] if cursor else [])
        answer = self._call("GET", "/v1/tasks", query=items)
        return TaskPage(answer.get("tasks", []), answer.get("nextCursor", "") or "")

    def cancel(self, task_ids: Union[str, Sequence[str]]) -> Any:
        """Cancels a task (or each of a list of them); answers it (or them) as it now is: a task
        that had already finished stays as it was."""
        if isinstance(task_ids, str):
            return self._cancel([task_ids])[0]
        return self._cancel(list(task_ids))

    def _cancel(self, ids: List[str]) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        for start in range(0, len(ids), MAX_IDS):
            out.extend(self._call("POST", "/v1/tasks/cancel", {"taskIds": ids[start : start + MAX_IDS]})["tasks"])
        return out
