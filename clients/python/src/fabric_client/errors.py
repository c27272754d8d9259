"""The client's errors: one base, :class:`FabricError`, with the API's closed set of codes (gRPC
status names), and :class:`TaskFailed` for a task that ended without a result."""

from __future__ import annotations

from typing import Any, Mapping, Optional

#: The codes an error can carry: the broker's closed set, aligned with gRPC status names.
CODES = frozenset(
    {
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
        # The task's own code failed (it raised, exited non-zero, called sys.exit): only a
        # task's outcome carries it, never a failed call.
        "FUNCTION_FAILED",
    }
)

# "Not now" rather than "no": the same idempotent call may succeed later (the broker's rule,
# common/errors.ts isRetryable). RESOURCE_EXHAUSTED only as a rate limit.
_RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED", "INTERNAL", "UNKNOWN"})

# The code of an HTTP status, for answers that carry no error body (a proxy's, say).
_CODE_OF_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def code_of_status(status: int) -> str:
    """The error code an HTTP status stands for when the answer names none."""
    if status in _CODE_OF_STATUS:
        return _CODE_OF_STATUS[status]
    return "INTERNAL" if status >= 500 else "UNKNOWN"


class FabricError(Exception):
    """A call the fabric refused or could not carry out.

    ``code`` is one of :data:`CODES`; ``message`` says what went wrong and what to do;
    ``reason`` is the API's ``details.reason`` (``""`` when none, e.g. ``"rate_limited"``);
    ``details`` is the whole ``details`` object; ``status`` the HTTP status (``None`` when the
    error was found before or without an answer).
    """

    def __init__(
        self,
        code: str,
        message: str,
        reason: str = "",
        details: Optional[Mapping[str, Any]] = None,
        status: Optional[int] = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.reason = reason or ""
        self.details = dict(details or {})
        self.status = status

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed if tried again later (the broker's rule; and a TLS
        failure over a certificate, reason ``tls``, never does)."""
        if self.reason == "tls":
            return False
        return self.code in _RETRYABLE or (self.code == "RESOURCE_EXHAUSTED" and self.reason == "rate_limited")

    def __str__(self) -> str:
        return "%s: %s" % (self.code, self.message)

    def __repr__(self) -> str:
        return "%s(%r, %r, reason=%r)" % (type(self).__name__, self.code, self.message, self.reason)

    def __reduce__(self):  # picklable (concurrent.futures and multiprocessing pass errors around)
        return (type(self), (self.code, self.message, self.reason, self.details, self.status))

    @classmethod
    def from_answer(cls, status: int, body: Any) -> "FabricError":
        """The error an API answer of HTTP ``status`` and parsed JSON ``body`` stands for."""
        if isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str):
            details = body.get("details") if isinstance(body.get("details"), dict) else {}
            reason = details.get("reason") if isinstance(details.get("reason"), str) else ""
            return cls(body["code"], body["message"], reason, details, status)
        return cls(code_of_status(status), "the broker answered HTTP %d without an error body" % status, status=status)


class TaskFailed(FabricError):
    """A task that ended without a result: it failed, expired or was cancelled.

    Besides :class:`FabricError`'s fields: ``task_id``, ``state`` (``"failed"``, ``"expired"``
    or ``"cancelled"``), and for an exception raised by the function itself ``remote_type``
    (``"ValueError"``), ``remote_message`` and ``remote_traceback`` (the remote traceback's
    text, ``""`` when there is none); ``shell`` holds a shell function's ``exitCode``, ``stdout``,
    ``stderr`` and ``signal``; ``output`` what the task printed (``stdout``, ``stderr``). ``str()``
    shows the message and then the remote traceback.
    """

    def __init__(
        self,
        code: str,
        message: str,
        reason: str = "",
        details: Optional[Mapping[str, Any]] = None,
        status: Optional[int] = None,
        *,
        task_id: str = "",
        state: str = "failed",
        remote: Optional[Mapping[str, Any]] = None,
        shell: Optional[Mapping[str, Any]] = None,
        output: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(code, message, reason, details, status)
        self.task_id = task_id
        self.state = state
        self.remote = dict(remote) if remote else None
        self.shell = dict(shell) if shell else None
        self.output = dict(output) if output else None
        self.remote_type = str((remote or {}).get("type", "") or "")
        self.remote_message = str((remote or {}).get("message", "") or "")
        self.remote_traceback = str((remote or {}).get("stack", "") or "")

    def __str__(self) -> str:
        head = "task %s %s: %s: %s" % (self.task_id, self.state, self.code, self.message)
        if self.remote_traceback:
            return "%s\n\nRemote traceback:\n%s" % (head, self.remote_traceback.rstrip("\n"))
        return head

    def __reduce__(self):
        kwargs = {
            "task_id": self.task_id,
            "state": self.state,
            "remote": self.remote,
            "shell": self.shell,
            "output": self.output,
        }
        return (_rebuild_task_failed, (self.code, self.message, self.reason, self.details, self.status, kwargs))

    @classmethod
    def from_task(cls, task: Mapping[str, Any]) -> "TaskFailed":
        """The error of a finished task's JSON (state failed, expired or cancelled)."""
        error = task.get("error") if isinstance(task.get("error"), dict) else {}
        state = str(task.get("state", ""))
        default_code = {"cancelled": "CANCELLED", "expired": "DEADLINE_EXCEEDED"}.get(state, "UNKNOWN")
        return cls(
            str(error.get("code") or default_code),
            str(error.get("message") or "the task ended %s" % state),
            str(error.get("reason") or ""),
            {"reason": error["reason"]} if error.get("reason") else {},
            task_id=str(task.get("id", "")),
            state=state,
            remote=error.get("remote") if isinstance(error.get("remote"), dict) else None,
            shell=error.get("shell") if isinstance(error.get("shell"), dict) else None,
            output=task.get("output") if isinstance(task.get("output"), dict) else None,
        )


def _rebuild_task_failed(code, message, reason, details, status, kwargs):
    return TaskFailed(code, message, reason, details, status, **kwargs)


class ResultTimeout(FabricError, TimeoutError):
    """A wait for a task's result ran out of time (code ``DEADLINE_EXCEEDED``); the task goes on.
    Also a :class:`TimeoutError`. ``task_ids`` names the tasks still unfinished."""

    def __init__(self, message: str, task_ids=()) -> None:
        FabricError.__init__(self, "DEADLINE_EXCEEDED", message)
        self.task_ids = list(task_ids)

    def __str__(self) -> str:
        return FabricError.__str__(self)

    def __reduce__(self):
        return (type(self), (self.message, self.task_ids))


class BatchSubmitError(FabricError):
    """A batch submitted in chunks failed part-way: the first ``len(task_ids)`` calls were created
    (``task_ids``, in ``group_id``), the rest were not. Carries the failing chunk's code and message."""

    def __init__(self, cause: FabricError, task_ids, group_id: str, total: int) -> None:
        super().__init__(
            cause.code,
            "%s (%d of %d tasks were submitted before it)" % (cause.message, len(task_ids), total),
            cause.reason,
            cause.details,
            cause.status,
        )
        self.task_ids = list(task_ids)
        self.group_id = group_id
        self.total = total
        self.__cause__ = cause

    def __reduce__(self):
        return (
            _rebuild_batch_error,
            (self.code, self.message, self.reason, self.details, self.status, self.task_ids, self.group_id, self.total),
        )


def _rebuild_batch_error(code, message, reason, details, status, task_ids, group_id, total):
    err = BatchSubmitError(FabricError(code, message, reason, details, status), task_ids, group_id, total)
    err.message = message
    return err
