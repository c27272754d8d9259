"""The HTTP/1.1 link to the broker's API: a small pool of keep-alive connections (http.client),
safe to share between threads, JSON in and out, error answers raised as FabricError, and
dedicated connections for event streams."""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote, urlencode, urlsplit

from . import _wire
from ._sse import Event, parse_events
from .errors import FabricError

USER_AGENT = "hpc-function-fabric-python/0.1.0"

# Connection failures that, on a connection that sat idle in the pool, mean the broker closed it
# meanwhile (its keep-alive timeout): the request is sent again once on a new connection.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


# TLS failures no retry can mend: a certificate refused either way, TLS spoken to plaintext.
_TLS_FATAL = ("CERTIFICATE", "UNKNOWN_CA", "WRONG_VERSION_NUMBER", "HANDSHAKE_FAILURE", "PROTOCOL_VERSION")


def _unreachable(address: str, err: BaseException) -> FabricError:
    """The error of a connection that failed: ``UNAVAILABLE``, with reason ``tls`` (and not
    retryable) when TLS refused a certificate or the broker does not speak it."""
    if isinstance(err, ssl.SSLError):
        why = getattr(err, "reason", None) or ""
        if isinstance(err, ssl.SSLCertVerificationError) or any(k in why for k in _TLS_FATAL):
            return FabricError("UNAVAILABLE", "TLS with the broker at %s failed: %s" % (address, err), "tls")
    return FabricError("UNAVAILABLE", "cannot reach the broker at %s: %s" % (address, err))


def _parse_address(address: str) -> Tuple[str, str, int, str]:
    parts = urlsplit(address if "://" in address else "http://" + address)
    if parts.scheme not in ("http", "https"):
        raise ValueError("the address must be http:// or https://, got %r" % address)
    if not parts.hostname:
        raise ValueError("the address names no host: %r" % address)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def _idle_connection_closed(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle pooled connection was closed by the broker (EOF waiting on it)."""
    sock = conn.sock
    if sock is None:
        return False  # http.client opens it again on the next request
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Transport:
    """Calls on the API at ``address`` with ``token``. Thread-safe: each call borrows a
    connection from the pool (or opens one) and gives it back when the answer is read."""

    def __init__(
        self,
        address: str,
        token: str,
        timeout: float,
        ssl_context: Optional[ssl.SSLContext] = None,
        max_idle: int = 8,
    ) -> None:
        self.address = address
        self.scheme, self.host, self.port, self.prefix = _parse_address(address)
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._idle: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._headers = {
            "Authorization": "Bearer " + token,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }

    def _new_connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _borrow(self) -> Tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._closed:
                raise FabricError("FAILED_PRECONDITION", "the client is closed")
            while self._idle:
                conn = self._idle.pop()
                if _idle_connection_closed(conn):
                    conn.close()
                    continue
                return conn, True
        return self._new_connection(self.timeout), False

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def url(self, path: str, query: Optional[Sequence[Tuple[str, Any]]] = None) -> str:
        url = self.prefix + path
        if query:
            url += "?" + urlencode([(k, v) for k, v in query if v is not None])
        return url

    def call(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        query: Optional[Sequence[Tuple[str, Any]]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """One request; its JSON answer (bytes inside as ``bytes``), or the FabricError it stands for.
        ``body`` is JSON text already encoded; ``timeout`` (seconds) bounds each wait on the socket."""
        url = self.url(path, query)
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        elif method == "POST":
            body = b"{}"
            headers["Content-Type"] = "application/json"
        wait = self.timeout if timeout is None else timeout
        for attempt in (1, 2):
            conn, reused = self._borrow()
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(wait)
                else:
                    conn.timeout = wait
                conn.request(method, url, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                content_type = resp.getheader("Content-Type", "")
            except _STALE as err:
                conn.close()
                if reused and attempt == 1:
                    continue
                raise FabricError(
                    "UNAVAILABLE", "the broker at %s closed the connection: %s" % (self.address, err)
                ) from None
            except socket.timeout:
                conn.close()
                raise FabricError(
                    "DEADLINE_EXCEEDED", "no answer from the broker at %s within %gs" % (self.address, wait)
                ) from None
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                raise _unreachable(self.address, err) from None
            except BaseException:
                conn.close()
                raise
            self._give_back(conn)
            return self._answer(status, content_type, data, method, path)
        raise AssertionError("unreachable")

    def _answer(self, status: int, content_type: str, data: bytes, method: str, path: str) -> Any:
        parsed: Any = None
        if data and "json" in content_type:
            try:
                parsed = _wire.decode(data)
            except ValueError:
                parsed = None
        if status == 200:
            if parsed is None and data != b"null":
                raise FabricError(
                    "INTERNAL", "%s %s answered %d bytes that are not JSON (%s)" % (method, path, len(data), content_type)
                )
            return parsed
        raise FabricError.from_answer(status, parsed)

    def open_stream(
        self, path: str, body: bytes, timeout: float, conn: Optional[http.client.HTTPConnection] = None
    ) -> "EventStream":
        """POSTs ``body`` on a connection of its own (``conn``: one an earlier stream handed back
        with :meth:`EventStream.release`) and answers the event stream it opens; an error answer
        before the stream starts is raised as the FabricError it stands for. ``timeout``: the
        longest silence on the stream."""
        headers = dict(self._headers)
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "text/event-stream"
        with self._lock:
            if self._closed:
                if conn is not None:
                    conn.close()
                raise FabricError("FAILED_PRECONDITION", "the client is closed")
        if conn is None or _idle_connection_closed(conn):
            if conn is not None:
                conn.close()
            conn = self._new_connection(timeout)
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("POST", self.url(path), body=body, headers=headers)
            resp = conn.getresponse()
            if resp.status != 200 or "text/event-stream" not in resp.getheader("Content-Type", ""):
                data = resp.read()
                self._answer(resp.status, resp.getheader("Content-Type", ""), data, "POST", path)
                raise FabricError("INTERNAL", "POST %s answered %d without an event stream" % (path, resp.status))
        except FabricError:
            conn.close()
            raise
        except socket.timeout:
            conn.close()
            raise FabricError("DEADLINE_EXCEEDED", "no answer from the broker at %s within %gs" % (self.address, timeout)) from None
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise _unreachable(self.address, err) from None
        return EventStream(conn, resp)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class EventStream:
    """An open event stream. Iterate for its events; :meth:`interrupt` (from any thread) ends a
    read blocked on it; :meth:`close` when done. A socket timeout or a dropped connection ends
    the iteration with a FabricError (``DEADLINE_EXCEEDED`` or ``UNAVAILABLE``)."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp
        self._lock = threading.Lock()
        self.interrupted = False

    def __iter__(self) -> Iterator[Event]:
        try:
            for event in parse_events(iter(self._resp.readline, b"")):
                yield event
        except socket.timeout:
            raise FabricError("DEADLINE_EXCEEDED", "the event stream went silent") from None
        except (OSError, http.client.HTTPException, ValueError) as err:
            if self.interrupted:
                return
            raise FabricError("UNAVAILABLE", "the event stream dropped: %s" % (err,)) from None

    def interrupt(self) -> None:
        """Ends the stream from another thread: a read blocked on it returns at once."""
        with self._lock:
            self.interrupted = True
            sock = self._conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def release(self) -> Optional[http.client.HTTPConnection]:
        """After the stream's last event: its connection, for the next stream, when the broker
        ended the answer and keeps the connection open; else None (and the stream is closed)."""
        with self._lock:
            reusable = not self.interrupted
            self.interrupted = True
        if reusable and not self._resp.will_close:
            try:
                if self._conn.sock is not None:
                    self._conn.sock.settimeout(2.0)
                self._resp.read()  # the end of the chunked answer, sent right after the last event
                if self._resp.isclosed():
                    return self._conn
            except (OSError, http.client.HTTPException):
                pass
        self._conn.close()
        return None

    def close(self) -> None:
        with self._lock:
            self.interrupted = True
        self._conn.close()


def path_of(*segments: str) -> str:
    """An API path from its segments, each quoted (ids never need it; names might)."""
    return "".join("/" + quote(s, safe="") for s in segments)


def query_items(params: Mapping[str, Any]) -> List[Tuple[str, Any]]:
    """Query items from ``params``; a list value repeats its key, ``None`` is left out."""
    items: List[Tuple[str, Any]] = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            items.extend((key, v) for v in value)
        else:
            items.append((key, value))
    return items
