"""The fabric's Python worker runtime: one long-lived interpreter that runs an endpoint's Python
functions, task after task. Standard library only, Python 3.8 or later.

Link: fd 3 when started with it open (`stdio: ["ignore", "pipe", "pipe", "pipe"]`), else the unix
socket named by FABRIC_WORKER_SOCKET (in a container, where fd 3 cannot be handed over). Messages
are frames of `4-byte big-endian length + body` (common/framing.ts), so nothing a function prints
can corrupt the protocol. A body is a one-line JSON header, then for some messages a newline and
raw bytes. endpoint/worker/python-protocol.ts is the other side.

  runtime -> manager at start:
    {"op":"hello","python":"3.11.2","implementation":"cpython","pid":N,"executable":"/usr/bin/python3"}
  manager -> runtime, a task (its argument bytes spliced in unparsed; empty means [] / {}):
    {"op":"run","taskId":..,"functionId":..,"entryPoint":"main","source":"..",["minVersion":"3.10",]"argsBytes":N}\n
    <args: N bytes of JSON, an array><kwargs: the rest, JSON, an object>
  runtime -> manager, its outcome:
    {"op":"result","taskId":..,"ok":true,"stdout":"..","stderr":".."}\n<the result's JSON text>
    {"op":"result","taskId":..,"ok":false,"reason":..,"error":{"type","message","traceback"},
     "stdout":"..","stderr":"..", "exitCode": N (system_exit), "module": ".." (import_error)}
  manager -> runtime {"op":"inspect"}; runtime -> manager {"op":"inspected","python":..,"modules":[..],"path":[..]}

Reasons (a plain exception from the function has none): system_exit (with exitCode),
interrupted (KeyboardInterrupt raised, or a SIGINT to this process during a task; between tasks
SIGINT is ignored), out_of_memory (MemoryError), import_error (ModuleNotFoundError, with module),
invalid_arguments, bad_result (not JSON-serialisable: the message names the type),
result_too_large (over FABRIC_MAX_RESULT_BYTES, default 10 MiB), no_entry_point, syntax_error,
python_version (this interpreter is older than the run frame's minVersion).

Bytes: an object of exactly one key, `{"$bytes": "<base64 string>"}`, anywhere in args or kwargs
arrives as `bytes`; `bytes`, `bytearray` or `memoryview` anywhere in a result leaves as one. So
numpy arrays travel as .npy bytes (`np.save` to an `io.BytesIO`). Nothing is ever unpickled, and
nothing is compiled but the functions' registered source.

Functions: each source is compiled once, and each function id's module runs once and is kept (up
to 256), so module-level imports are paid once per worker. Modules are registered in sys.modules
and linecache (tracebacks and `inspect.getsource` show source lines). sys.path[0] is the working
directory, as for `python3 -c`.

Output: sys.stdout and sys.stderr are buffers keeping the last 64 KiB of each per task, after a
note `[… N bytes cut …]`; what threads write between tasks goes with the next one. Writes to fds
1 and 2 (C code, subprocesses) reach this process's stdout and stderr, as does everything with
FABRIC_PYTHON_ECHO=1 (so the last words of a task that kills the interpreter reach the manager).
faulthandler writes a fatal signal's Python stack to fd 2; SIGUSR1 dumps every thread's there.

Exit codes: 0 when the manager closes the link, 2 on a protocol error (with a line on fd 2).
"""
import binascii
import faulthandler
import io
import json
import os
import signal
import sys
import types

MAX_FRAME_BYTES = 64 * 1024 * 1024
OUTPUT_CAP_BYTES = 64 * 1024
MAX_CACHED_FUNCTIONS = 256
READ_CHUNK = 64 * 1024
NEWLINE = b"\n"


def _positive_env(name, fallback):
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return fallback
    return value if value > 0 else fallback


# A result must fit in one frame beside its header (which holds up to 2 x 64 KiB of output).
MAX_RESULT_BYTES = min(_positive_env("FABRIC_MAX_RESULT_BYTES", 10 * 1024 * 1024), MAX_FRAME_BYTES - (1 << 20))
ECHO = os.environ.get("FABRIC_PYTHON_ECHO") == "1"
PID = os.getpid()
VERSION = "%d.%d.%d" % tuple(sys.version_info[:3])
_forked = False  # set in a child a function forked


class TaskFailure(Exception):
    """A task that failed for a reason the runtime found (not an exception from the function)."""

    def __init__(self, reason, type_name, message, traceback_text=""):
        super().__init__(message)
        self.reason = reason
        self.type_name = type_name
        self.traceback_text = traceback_text


class _BytesSink:
    """`sys.stdout.buffer`: bytes written there join the text, decoded as UTF-8."""

    def __init__(self, text):
        self._text = text

    def write(self, b):
        self._text.write(bytes(b).decode("utf-8", "replace"))
        return len(b)

    def flush(self):
        pass


class OutputTail(io.TextIOBase):
    """A text stream keeping the last OUTPUT_CAP_BYTES (UTF-8) written to it, and how much it cut."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, echo_fd):
        super().__init__()
        self._parts = []
        self._chars = 0
        self._cut = 0
        self._echo_fd = echo_fd
        self.buffer = _BytesSink(self)

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not " + type(s).__name__)
        n = len(s)
        if n:
            self._parts.append(s)
            self._chars += n
            # Past 2 x cap characters there are surely more than cap bytes: keep only the tail.
            if self._chars > 2 * OUTPUT_CAP_BYTES:
                self._compact()
            if self._echo_fd is not None:
                try:
                    os.write(self._echo_fd, s.encode("utf-8", "replace"))
                except OSError:
                    pass
        return n

    def _tail_bytes(self):
        data = "".join(self._parts).encode("utf-8", "replace")
        if len(data) > OUTPUT_CAP_BYTES:
            keep = len(data) - OUTPUT_CAP_BYTES
            # Start on a character boundary: skip UTF-8 continuation bytes.
            while keep < len(data) and (data[keep] & 0xC0) == 0x80:
                keep += 1
            self._cut += keep
            data = data[keep:]
        return data

    def _compact(self):
        tail = self._tail_bytes().decode("utf-8")
        self._parts = [tail]
        self._chars = len(tail)

    def take(self):
        """The text written since the last take, with a note first when some was cut; resets."""
        if not self._parts:
            return ""
        text = self._tail_bytes().decode("utf-8")
        if self._cut:
            text = "[… %d bytes cut …]\n%s" % (self._cut, text)
        self._parts = []
        self._chars = 0
        self._cut = 0
        return text


STDOUT = OutputTail(1 if ECHO else None)
STDERR = OutputTail(2 if ECHO else None)


def _bytes_hook(obj):
    if len(obj) == 1 and "$bytes" in obj:
        encoded = obj["$bytes"]
        if type(encoded) is str:
            import base64

            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as err:
                raise ValueError("a {\"$bytes\": …} value is not base64: %s" % err) from None
    return obj


def _encode_default(obj):
    if isinstance(obj, (bytes, bytearray)):
        return {"$bytes": binascii.b2a_base64(obj, newline=False).decode("ascii")}
    if isinstance(obj, memoryview):
        return {"$bytes": binascii.b2a_base64(obj.tobytes(), newline=False).decode("ascii")}
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


_RESULT_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_encode_default)
_RESULT_ENCODER_ASCII = json.JSONEncoder(allow_nan=False, separators=(",", ":"), default=_encode_default)
# Headers are ASCII JSON: never a raw newline, never an unencodable lone surrogate.
_HEADER_ENCODER = json.JSONEncoder(separators=(",", ":"))
_quote = json.encoder.encode_basestring_ascii
_ARGS_DECODER = json.JSONDecoder(object_hook=_bytes_hook)
# JSONDecoder.decode and JSONEncoder.encode cost a few microseconds of Python-level set-up per
# call, the better part of a no-op task: the hot path calls the C scanner and encoder directly.
_scan_header = json.JSONDecoder().scan_once
_result_markers = {}
_encode_result_fast = None
if json.encoder.c_make_encoder is not None:
    try:
        _encode_result_fast = json.encoder.c_make_encoder(
            _result_markers, _encode_default, json.encoder.encode_basestring, None, ":", ",", False, False, False)
        if "".join(_encode_result_fast({"a": [1, 2.5, "é", None, True]}, 0)) != '{"a":[1,2.5,"é",null,true]}':
            _encode_result_fast = None
    except Exception:  # an interpreter whose private encoder differs: the public one will do
        _encode_result_fast = None
_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def decode_payload(raw, kind, what):
    if not raw:
        return kind()
    try:
        value = _ARGS_DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise TaskFailure("invalid_arguments", type(err).__name__, "%s is not valid JSON: %s" % (what, err))
    if type(value) is not kind:
        raise TaskFailure("invalid_arguments", "TypeError", "%s must be %s, not %s"
                          % (what, _JSON_NAMES[kind], _JSON_NAMES.get(type(value), type(value).__name__)))
    return value


def encode_result(value):
    try:
        if _encode_result_fast is not None:
            try:
                text = "".join(_encode_result_fast(value, 0))
            finally:
                _result_markers.clear()  # what a failed encoding left behind
        else:
            text = _RESULT_ENCODER.encode(value)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: JSON's \u escapes carry it
            data = _RESULT_ENCODER_ASCII.encode(value).encode("ascii")
    except (TypeError, ValueError, RecursionError) as err:
        hint = ""
        if type(value).__module__ == "numpy" or "ndarray" in str(err):
            hint = " (return .npy bytes, np.save to an io.BytesIO, or .tolist())"
        raise TaskFailure("bad_result", type(err).__name__,
                          "the function's result cannot be encoded as JSON: %s%s" % (err, hint))
    if len(data) > MAX_RESULT_BYTES:
        raise TaskFailure("result_too_large", "ValueError", "the function's result is %d bytes, over this "
                          "endpoint's limit of %d bytes" % (len(data), MAX_RESULT_BYTES))
    return data


_functions = {}  # function id -> [module, entry point, callable]
_codes = {}  # source -> code object, shared by function ids with the same source
_module_count = 0


def _register_lines(filename, source):
    import linecache

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def compile_source(function_id, source):
    code = _codes.get(source)
    if code is not None:
        return code
    filename = "<fabric function %s>" % (function_id or "without id")
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as err:  # ValueError: a null byte, before Python 3.12
        import traceback

        text = "".join(traceback.format_exception_only(type(err), err))
        raise TaskFailure("syntax_error", type(err).__name__, "the function source does not compile: %s" % err, text)
    if len(_codes) >= MAX_CACHED_FUNCTIONS:
        import linecache

        linecache.cache.pop(_codes.pop(next(iter(_codes))).co_filename, None)
    _codes[source] = code
    _register_lines(filename, source)
    return code


def resolve_entry(module, entry):
    parts = entry.split(".")
    if not all(part.isidentifier() for part in parts):
        raise TaskFailure("no_entry_point", "ValueError", "entry point %r is not a Python name" % entry)
    obj = module
    for part in parts:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TaskFailure("no_entry_point", "AttributeError",
                              "entry point %s is not defined in the function source" % entry) from None
    if not callable(obj):
        raise TaskFailure("no_entry_point", "TypeError",
                          "entry point %s is a %s, not callable" % (entry, type(obj).__name__))
    return obj


def load_function(function_id, source, entry):
    """The entry point's callable; the source's module runs once per function id."""
    global _module_count
    loaded = _functions.get(function_id) if function_id else None
    if loaded is not None:
        if loaded[1] != entry:
            loaded[2] = resolve_entry(loaded[0], entry)
            loaded[1] = entry
        return loaded[2]
    code = compile_source(function_id, source)
    _module_count += 1
    module = types.ModuleType("fabric_function_%d" % _module_count)
    if function_id:
        sys.modules[module.__name__] = module
    try:
        exec(code, module.__dict__)
        fn = resolve_entry(module, entry)
    except BaseException:
        sys.modules.pop(module.__name__, None)
        raise
    if function_id:
        if len(_functions) >= MAX_CACHED_FUNCTIONS:
            evicted = _functions.pop(next(iter(_functions)))
            sys.modules.pop(evicted[0].__name__, None)
        _functions[function_id] = [module, entry, fn]
    return fn


_RUNTIME_FILE = _positive_env.__code__.co_filename


def _type_name(exc):
    t = type(exc)
    module = getattr(t, "__module__", "builtins")
    if module in ("builtins", "__main__") or module.startswith("fabric_function_"):
        return t.__qualname__
    return "%s.%s" % (module, t.__qualname__)


def _bounded(text):
    if len(text) <= OUTPUT_CAP_BYTES:
        return text
    return "[… %d characters cut …]\n%s" % (len(text) - OUTPUT_CAP_BYTES, text[-OUTPUT_CAP_BYTES:])


def format_traceback(exc):
    """The exception's traceback from the user's first frame on (the runtime's frames left out)."""
    import linecache
    import traceback

    for source, code in _codes.items():  # in case a function cleared linecache
        if code.co_filename not in linecache.cache:
            _register_lines(code.co_filename, source)
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _RUNTIME_FILE:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def describe_failure(exc):
    """The failure header fields for an exception that ended a task."""
    fields = {}
    if isinstance(exc, TaskFailure):
        fields["reason"] = exc.reason
        fields["error"] = {"type": exc.type_name, "message": str(exc), "traceback": exc.traceback_text}
        return fields
    if isinstance(exc, SystemExit):
        code = exc.code
        fields["reason"] = "system_exit"
        fields["exitCode"] = 0 if code is None else code if isinstance(code, int) else 1
    elif isinstance(exc, KeyboardInterrupt):
        fields["reason"] = "interrupted"
    elif isinstance(exc, MemoryError):
        fields["reason"] = "out_of_memory"
    elif isinstance(exc, ModuleNotFoundError):
        fields["reason"] = "import_error"
        fields["module"] = exc.name or ""
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable %s>" % type(exc).__name__
    try:
        text = format_traceback(exc)
    except Exception as err:  # MemoryError again, or a broken __str__ deep in a chain
        text = "(traceback unavailable: %s)" % type(err).__name__
    fields["error"] = {"type": _type_name(exc), "message": _bounded(message), "traceback": _bounded(text)}
    return fields


_in_task = False


def _on_sigint(_signum, _frame):
    # A SIGINT interrupts the running task (reason interrupted); between tasks it is ignored.
    if _in_task:
        raise KeyboardInterrupt


def check_version(wanted):
    """Fails the task when this interpreter is older than `wanted` ("3.10"; absent: any)."""
    if wanted is None:
        return
    try:
        need = tuple(int(p) for p in str(wanted).split("."))
    except ValueError:
        raise TaskFailure("python_version", "ValueError", "minimum Python version %r is not N.N[.N]" % (wanted,))
    have = tuple(sys.version_info[:len(need)])
    if have < need:
        raise TaskFailure(
            "python_version", "RuntimeError",
            "the function needs Python %s or later; this worker's interpreter is %s (%s)"
            % (wanted, "%d.%d.%d" % tuple(sys.version_info[:3]), sys.executable))


def run_task(header, body, newline_at):
    """Runs one task; returns its result frame's header and payload (None for a failure)."""
    global _in_task
    try:
        task_id = header["taskId"]
        function_id = header["functionId"]
        entry = header["entryPoint"]
        source = header["source"]
        args_end = newline_at + 1 + int(header.get("argsBytes", 0))
        if not (type(task_id) is str and type(function_id) is str and type(entry) is str and type(source) is str):
            raise TypeError("taskId, functionId, entryPoint and source must be strings")
    except (KeyError, TypeError, ValueError) as err:
        protocol_error("malformed run header: %r" % (err,))
    sys.stdout = STDOUT
    sys.stderr = STDERR
    result = None
    fields = None
    try:
        _in_task = True
        args = decode_payload(body[newline_at + 1:args_end], list, "args")
        kwargs = decode_payload(body[args_end:], dict, "kwargs")
        check_version(header.get("minVersion"))
        fn = load_function(function_id, source, entry)
        value = fn(*args, **kwargs)
        if isinstance(value, types.CoroutineType):
            import asyncio

            value = asyncio.run(value)
        result = encode_result(value)
        _in_task = False
    except BaseException as exc:
        _in_task = False
        fields = describe_failure(exc)
        del exc
    if _forked:
        # A child the function forked came back here: it must not answer for its parent.
        os._exit(0 if fields is None else 1)
    if fields is not None:
        head = {"op": "result", "taskId": task_id, "ok": False, "stdout": STDOUT.take(), "stderr": STDERR.take()}
        head.update(fields)
        return _HEADER_ENCODER.encode(head).encode("ascii"), None
    head = '{"op":"result","taskId":%s,"ok":true,"stdout":%s,"stderr":%s}' % (
        _quote(task_id), _quote(STDOUT.take()), _quote(STDERR.take()))
    return head.encode("ascii"), result


def inspect_runtime():
    import pkgutil

    names = set(sys.builtin_module_names)
    names.update(module.name for module in pkgutil.iter_modules())
    return {"op": "inspected", "python": VERSION, "modules": sorted(names), "path": list(sys.path)}


def _say(line):
    try:
        os.write(2, ("fabric_runtime: %s\n" % line).encode("utf-8", "replace"))
    except OSError:
        pass


def protocol_error(why):
    _say("protocol error on the manager link: %s; exiting" % why)
    os._exit(2)


class Link:
    """Frames over a blocking fd (a pipe end, a socketpair end or a connected unix socket)."""

    def __init__(self, fd):
        self.fd = fd
        self.pending = b""

    def read_frame(self):
        """The next frame's body, or None when the manager closed the link."""
        data = self.pending
        while len(data) < 4:
            chunk = os.read(self.fd, READ_CHUNK)
            if not chunk:
                return None
            data += chunk
        size = int.from_bytes(data[:4], "big")
        if size > MAX_FRAME_BYTES:
            protocol_error("a frame of %d bytes exceeds the %d-byte limit" % (size, MAX_FRAME_BYTES))
        end = 4 + size
        if len(data) >= end:
            self.pending = data[end:]
            return data[4:end]
        # A large frame: read exactly its remainder into place, never past it.
        body = bytearray(size)
        have = len(data) - 4
        body[:have] = data[4:]
        view = memoryview(body)
        while have < size:
            got = os.readv(self.fd, [view[have:]])
            if got == 0:
                return None
            have += got
        self.pending = b""
        return body

    def send(self, header, payload=None):
        if payload is None:
            size = len(header)
            parts = [size.to_bytes(4, "big"), header]
        else:
            size = len(header) + 1 + len(payload)
            parts = [size.to_bytes(4, "big"), header, NEWLINE, payload]
        try:
            written = os.writev(self.fd, parts)
            if written < size + 4:
                rest = memoryview(b"".join(parts))[written:]
                while rest:
                    rest = rest[os.write(self.fd, rest):]
        except (BrokenPipeError, ConnectionResetError):
            os._exit(0)


def open_link():
    socket_path = os.environ.get("FABRIC_WORKER_SOCKET")
    if socket_path:
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(socket_path)
        fd = sock.detach()  # non-inheritable, like every fd Python opens
    else:
        fd = 3
        try:
            # Commands the function starts with os.system must not hold the link open.
            os.set_inheritable(fd, False)
        except OSError:
            _say("fd 3 is not open and FABRIC_WORKER_SOCKET is not set")
            os._exit(2)
    os.set_blocking(fd, True)
    return fd


def serve(link):
    link.send(_HEADER_ENCODER.encode({
        "op": "hello", "python": VERSION, "implementation": sys.implementation.name,
        "pid": PID, "executable": sys.executable,
    }).encode("ascii"))
    while True:
        body = link.read_frame()
        if body is None:
            return
        newline_at = body.find(NEWLINE)
        if newline_at < 0:
            newline_at = len(body)  # a header alone: no payload
        try:
            text = body[:newline_at].decode("utf-8")
            header, end = _scan_header(text, 0)
            op = header["op"] if end == len(text) else None
        except (StopIteration, ValueError, KeyError, TypeError) as err:
            protocol_error("undecodable frame header (%r)" % (err,))
        if op == "run":
            link.send(*run_task(header, body, newline_at))
        elif op == "inspect":
            link.send(_HEADER_ENCODER.encode(inspect_runtime()).encode("ascii"))
        else:
            protocol_error("unknown op %r" % (op,))


def _in_child(fd):
    # A child forked by a function must not write on the link.
    global _forked
    _forked = True
    os.close(fd)


def main():
    here = os.path.dirname(os.path.realpath(__file__))
    if sys.path and os.path.realpath(sys.path[0] or ".") == here:
        sys.path[0] = os.getcwd()
    if sys.__stderr__ is not None:
        faulthandler.enable(file=sys.__stderr__, all_threads=True)
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    signal.signal(signal.SIGINT, _on_sigint)
    fd = open_link()
    os.register_at_fork(after_in_child=lambda: _in_child(fd))
    sys.stdout = STDOUT
    sys.stderr = STDERR
    serve(Link(fd))
    # The manager closed the link: stop now, even if a function left threads running.
    os._exit(0)


if __name__ == "__main__":
    main()
