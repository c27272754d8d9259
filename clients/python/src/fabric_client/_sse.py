"""Server-Sent Events: the parse of a ``text/event-stream`` body into events. Pure."""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple


class Event(NamedTuple):
    """One event: its ``event`` name (``"message"`` when the stream named none), its ``data`` (the
    data lines joined by newlines) and the stream's last ``id``."""

    event: str
    data: str
    id: str


def parse_events(lines: Iterable[bytes]) -> Iterator[Event]:
    """The events of a stream given line by line (each line with or without its line ending), as
    the HTML standard reads them: comment lines (``: keep-alive``) and unknown fields are skipped,
    an event is dispatched at a blank line, and an event cut off by the end of the stream is
    dropped."""
    event = ""
    data: list = []
    last_id = ""
    for raw in lines:
        line = raw.decode("utf-8", "replace")
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            if data:
                yield Event(event or "message", "\n".join(data), last_id)
            event = ""
            data = []
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value
