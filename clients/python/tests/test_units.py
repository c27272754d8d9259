"""The client's pure parts, without a broker: bytes on the wire, the event-stream parse, function
sources, errors, addresses. Run: python3 -m unittest discover -s clients/python/tests -p 'test_units.py'"""

import functools
import json
import os
import pickle
import sys
import unittest

sys.path.insert(0, os.environ.get("FABRIC_CLIENT_PATH") or os.path.join(os.path.dirname(__file__), "..", "src"))

import fabric_client  # noqa: E402
from fabric_client import FabricError, ResultTimeout, TaskFailed, from_wire, to_wire  # noqa: E402
from fabric_client import _wire  # noqa: E402
from fabric_client._http import _parse_address, query_items  # noqa: E402
from fabric_client._source import function_source  # noqa: E402
from fabric_client._sse import Event, parse_events  # noqa: E402


def traced(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return fn(*a, **k)

    return wrapper


@traced
@functools.lru_cache(maxsize=None)
def decorated(x):
    return os.path.join("a", str(x))


import json as jsonlib  # noqa: E402  (aliases the function below reaches as globals)
from xml import dom  # noqa: E402


def dumped(x):
    return jsonlib.dumps(x), dom.__name__


class Outer:
    def method(self):
        return 1


class WireTest(unittest.TestCase):
    def test_bytes_leave_as_base64_objects_and_come_back_as_bytes(self):
        value = {"b": b"\x00\x01\xff", "nested": [bytearray(b"ab"), memoryview(b"cd"), (1, b"")]}
        text = _wire.encode(value)
        self.assertEqual(
            json.loads(text),
            {"b": {"$bytes": "AAH/"}, "nested": [{"$bytes": "YWI="}, {"$bytes": "Y2Q="}, [1, {"$bytes": ""}]]},
        )
        self.assertEqual(_wire.decode(text), {"b": b"\x00\x01\xff", "nested": [b"ab", b"cd", [1, b""]]})
        self.assertEqual(from_wire(to_wire(value)), _wire.decode(text))

    def test_only_an_object_of_exactly_the_one_key_is_bytes(self):
        self.assertEqual(_wire.decode('{"$bytes": "AA==", "x": 1}'), {"$bytes": "AA==", "x": 1})
        self.assertEqual(_wire.decode('{"$bytes": 3}'), {"$bytes": 3})
        self.assertEqual(_wire.decode('{"$bytes": "not base64!"}'), {"$bytes": "not base64!"})

    def test_what_json_cannot_carry_is_invalid_argument_naming_it(self):
        for bad in (float("nan"), {1, 2}, object()):
            with self.assertRaises(FabricError) as caught:
                _wire.encode([bad], "the arguments")
            self.assertEqual(caught.exception.code, "INVALID_ARGUMENT")
            self.assertIn("the arguments", caught.exception.message)


class EventStreamTest(unittest.TestCase):
    def lines(self, text):
        return [line.encode() for line in text.splitlines(keepends=True)]

    def test_events_comments_and_multi_line_data(self):
        text = ": keep-alive\n\nevent: task\ndata: {\"id\":\"a\"}\n\nevent: task\r\ndata:x\r\ndata: y\r\nid: 7\r\n\r\n: keep-alive\n\nevent: done\ndata: {\"count\": 2}\n\n"
        self.assertEqual(
            list(parse_events(self.lines(text))),
            [Event("task", '{"id":"a"}', ""), Event("task", "x\ny", "7"), Event("done", '{"count": 2}', "7")],
        )

    def test_an_event_cut_off_by_the_end_is_dropped_and_unnamed_events_are_messages(self):
        events = list(parse_events(self.lines("data: one\n\nevent: task\ndata: cut")))
        self.assertEqual(events, [Event("message", "one", "")])


class SourceTest(unittest.TestCase):
    def test_dedented_without_decorators_with_the_modules_it_uses(self):
        source, entry = function_source(decorated)
        self.assertEqual(entry, "decorated")
        self.assertEqual(source, 'import os\n\n\ndef decorated(x):\n    return os.path.join("a", str(x))\n')
        compile(source, "<registered>", "exec")

    def test_a_nested_function_is_dedented(self):
        def inner(a, b=2):
            import math

            return math.pow(a, b)

        source, entry = function_source(inner)
        self.assertEqual(entry, "inner")
        self.assertTrue(source.startswith("def inner(a, b=2):\n"), source)
        namespace = {}
        exec(source, namespace)
        self.assertEqual(namespace["inner"](3), 9.0)

    def test_aliased_and_from_imported_modules_are_imported_under_their_names(self):
        source, _ = function_source(dumped)
        self.assertTrue(source.startswith("from xml import dom\nimport json as jsonlib\n\n\ndef dumped(x):\n"), source)
        namespace = {}
        exec(source, namespace)
        self.assertEqual(namespace["dumped"]([1]), ("[1]", "xml.dom"))

    def test_a_function_without_a_source_file_is_refused_with_what_to_do(self):
        namespace = {}
        exec("def made(x):\n    return x\n", namespace)
        with self.assertRaisesRegex(ValueError, "register_python"):
            function_source(namespace["made"])

    def test_lambdas_closures_and_non_functions_are_refused_with_why(self):
        with self.assertRaisesRegex(ValueError, "lambda"):
            function_source(lambda x: x)
        y = 3

        def closure(x):
            return x + y

        with self.assertRaisesRegex(ValueError, r"\(y\)"):
            function_source(closure)
        with self.assertRaisesRegex(TypeError, "def"):
            function_source(len)
        with self.assertRaisesRegex(TypeError, "def"):
            function_source(Outer().method)


class ErrorTest(unittest.TestCase):
    def test_an_error_answer_carries_code_message_reason_details_status(self):
        err = FabricError.from_answer(
            429, {"code": "RESOURCE_EXHAUSTED", "message": "slow down", "details": {"reason": "rate_limited"}}
        )
        self.assertEqual((err.code, err.message, err.reason, err.status), ("RESOURCE_EXHAUSTED", "slow down", "rate_limited", 429))
        self.assertTrue(err.retryable)
        self.assertEqual(str(err), "RESOURCE_EXHAUSTED: slow down")
        bare = FabricError.from_answer(502, None)
        self.assertEqual(bare.code, "UNAVAILABLE")
        self.assertFalse(FabricError.from_answer(404, None).retryable)
        # A refused certificate is UNAVAILABLE, but no retry mends it.
        self.assertFalse(FabricError("UNAVAILABLE", "TLS failed", "tls").retryable)
        self.assertTrue(FabricError("UNAVAILABLE", "down").retryable)

    def test_a_failed_task_shows_the_remote_traceback_and_survives_pickling(self):
        task = {
            "id": "t-1",
            "state": "failed",
            "error": {
                "code": "UNKNOWN",
                "message": "ValueError: x too large",
                "reason": "function_error",
                "remote": {"type": "ValueError", "message": "x too large", "stack": "Traceback (most recent call last):\n  ...\nValueError: x too large\n"},
            },
            "output": {"stdout": "hi\n", "stderr": ""},
        }
        err = TaskFailed.from_task(task)
        self.assertEqual((err.remote_type, err.remote_message, err.reason), ("ValueError", "x too large", "function_error"))
        self.assertIn("Remote traceback:\nTraceback (most recent call last):", str(err))
        again = pickle.loads(pickle.dumps(err))
        self.assertEqual((again.task_id, again.remote_traceback, again.output), (err.task_id, err.remote_traceback, err.output))
        self.assertIsInstance(ResultTimeout("late", ["t"]), TimeoutError)


class AddressTest(unittest.TestCase):
    def test_addresses_and_queries(self):
        self.assertEqual(_parse_address("http://127.0.0.1:8080"), ("http", "127.0.0.1", 8080, ""))
        self.assertEqual(_parse_address("https://fabric.example/api/"), ("https", "fabric.example", 443, "/api"))
        self.assertEqual(_parse_address("localhost:9"), ("http", "localhost", 9, ""))
        with self.assertRaises(ValueError):
            _parse_address("ftp://x")
        self.assertEqual(
            query_items({"state": ["failed", "running"], "limit": 5, "cursor": None}),
            [("state", "failed"), ("state", "running"), ("limit", 5)],
        )

    def test_the_client_reads_its_address_and_token_from_the_environment(self):
        saved = {k: os.environ.get(k) for k in ("FABRIC_HTTP_ADDRESS", "FABRIC_TOKEN")}
        try:
            os.environ.pop("FABRIC_TOKEN", None)
            os.environ["FABRIC_HTTP_ADDRESS"] = "http://127.0.0.1:1"
            with self.assertRaisesRegex(ValueError, "FABRIC_TOKEN"):
                fabric_client.Client()
            os.environ["FABRIC_TOKEN"] = "t"
            self.assertEqual(fabric_client.Client().address, "http://127.0.0.1:1")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def test_an_unreachable_broker_is_unavailable(self):
        client = fabric_client.Client("http://127.0.0.1:1", "t", retry_window=0)
        with self.assertRaises(FabricError) as caught:
            client.list_functions()
        self.assertEqual(caught.exception.code, "UNAVAILABLE")
        self.assertIn("127.0.0.1:1", caught.exception.message)


if __name__ == "__main__":
    unittest.main()
