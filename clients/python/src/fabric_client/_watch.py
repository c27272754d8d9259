"""Finished tasks from the API's event stream (``POST /v1/tasks/watch``): each finished task as
``event: task``, then ``event: done`` once every named task has finished; ``: keep-alive``
comments every ~15 s, so a stream silent for :data:`SILENCE_S` is taken as dropped."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from . import _wire
from .errors import FabricError, ResultTimeout

if TYPE_CHECKING:
    from .client import Client

WATCH_PATH = "/v1/tasks/watch"
#: Seconds without a byte (the broker sends a keep-alive every ~15 s) after which a stream is dropped.
SILENCE_S = 45.0
#: Most task ids one stream names; more are watched a window at a time.
MAX_WATCH_IDS = 1000


def backoff(attempt: int) -> float:
    """Seconds to wait before trying again after ``attempt`` failures in a row (jittered, at most 2 s)."""
    return min(0.05 * 2 ** min(attempt, 10), 2.0) * (0.5 + random.random() / 2)


def stream_error(data: str) -> FabricError:
    """The error an ``event: error`` of a stream carries (``{code, message, details}``)."""
    try:
        body = _wire.decode(data)
    except ValueError:
        body = None
    err = FabricError.from_answer(500, body)
    err.status = None
    return err


def watch_tasks(
    client: "Client", task_ids: Optional[List[str]], group_id: Optional[str], timeout: Optional[float]
) -> Iterator[Dict[str, Any]]:
    """See :meth:`Client.watch`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    # The ids not seen yet, in order (a dict: removal is O(1)).
    remaining: Optional[Dict[str, None]] = dict.fromkeys(task_ids) if task_ids is not None else None
    seen = set()
    failures = 0
    while remaining is None or remaining:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise ResultTimeout("the watched tasks did not all finish within %gs" % timeout, list(remaining or ()))
        if remaining is not None:
            body: Dict[str, Any] = {"taskIds": list(remaining)[:MAX_WATCH_IDS]}
        else:
            body = {"groupId": group_id}
        silence = SILENCE_S if left is None else max(0.05, min(SILENCE_S, left))
        try:
            stream = client._http.open_stream(WATCH_PATH, _wire.encode(body), silence)
        except FabricError as err:
            if not err.retryable:
                raise
            failures += 1
            time.sleep(backoff(failures))
            continue
        done = False
        try:
            for event in stream:
                failures = 0
                if event.event == "task":
                    task = _wire.decode(event.data)
                    tid = task.get("id")
                    if tid in seen:
                        continue
                    seen.add(tid)
                    if remaining is not None:
                        remaining.pop(tid, None)
                    yield task
                elif event.event == "done":
                    done = True
                    break
                elif event.event == "error":
                    raise stream_error(event.data)
        except FabricError as err:
            if not err.retryable:
                raise
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(
                    "the watched tasks did not all finish within %gs" % timeout, list(remaining or ())
                ) from None
            if err.code != "DEADLINE_EXCEEDED":
                failures += 1
                time.sleep(backoff(failures))
            continue
        finally:
            stream.close()
        if done and remaining is None:
            return
        if not done:
            # The stream ended without its done event: the broker went away mid-stream.
            failures += 1
            time.sleep(backoff(failures))
