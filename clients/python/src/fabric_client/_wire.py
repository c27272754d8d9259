"""JSON on the wire, with the fabric's convention for bytes: an object of exactly one key,
``{"$bytes": "<base64>"}``, anywhere in arguments or results. ``bytes``, ``bytearray`` and
``memoryview`` leave as one; one arriving becomes ``bytes``. Tuples leave as lists."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import FabricError

BYTES_KEY = "$bytes"


def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return {BYTES_KEY: binascii.b2a_base64(obj, newline=False).decode("ascii")}
    if isinstance(obj, memoryview):
        return {BYTES_KEY: binascii.b2a_base64(obj.tobytes(), newline=False).decode("ascii")}
    if isinstance(obj, (set, frozenset)):
        raise TypeError("a %s has no JSON form: pass a list" % type(obj).__name__)
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default)


def encode(value: Any, what: str = "value") -> bytes:
    """``value`` as UTF-8 JSON text, bytes as ``{"$bytes"}``; what JSON cannot carry (NaN, a
    set, an object) is an ``INVALID_ARGUMENT`` :class:`FabricError` naming ``what``."""
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as err:
        raise FabricError("INVALID_ARGUMENT", "%s cannot be sent as JSON: %s" % (what, err)) from None


def _bytes_hook(obj: dict) -> Any:
    if len(obj) == 1 and BYTES_KEY in obj:
        encoded = obj[BYTES_KEY]
        if isinstance(encoded, str):
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                return obj
    return obj


_DECODER = json.JSONDecoder(object_hook=_bytes_hook)


def decode(text: "bytes | str") -> Any:
    """JSON text as Python values, every ``{"$bytes": base64}`` inside as ``bytes``."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    return _DECODER.decode(text)


def to_wire(value: Any) -> Any:
    """``value`` with every bytes-like inside replaced by ``{"$bytes"}`` (a JSON-ready copy)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _default(value)
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    return value


def from_wire(value: Any) -> Any:
    """``value`` with every ``{"$bytes": base64}`` inside turned into ``bytes``."""
    if isinstance(value, dict):
        if len(value) == 1 and BYTES_KEY in value:
            return _bytes_hook(value)
        return {k: from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    return value
