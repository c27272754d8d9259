import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readFrames } from "../../common/lean.js";
import {
  decodePythonFrame,
  encodePythonInspectFrame,
  encodePythonRunFrame,
  pythonFailureToError,
  pythonRuntimePath,
} from "./python-protocol.js";
import type { PythonInspected, PythonRuntimeMessage, PythonTaskResult } from "./python-protocol.js";

const PYTHON = process.env["FABRIC_TEST_PYTHON"] ?? "python3";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text: string) => encoder.encode(text);
/** Python source from lines (template literals would carry this file's indentation). */
const py = (...lines: string[]) => lines.join("\n") + "\n";

type Exit = { readonly code: number | null; readonly signal: NodeJS.Signals | null };
type Waiter = { resolve: (m: PythonRuntimeMessage) => void; reject: (e: Error) => void };

/** A runtime process and its link, as a manager holds them. */
class RuntimeUnderTest {
  stderr = "";
  private readonly queued: PythonRuntimeMessage[] = [];
  private readonly waiters: Waiter[] = [];
  private exit: Exit | undefined;
  private link: Duplex | undefined;
  private taskSeq = 0;
  readonly exited: Promise<Exit>;

  constructor(readonly child: ChildProcess) {
    child.stdout?.resume();
    child.stderr?.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-16_384);
    });
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        this.exit = { code, signal };
        // Let the last stderr arrive before the waiters hear of the exit.
        setImmediate(() => {
          for (const w of this.waiters.splice(0)) w.reject(this.exitError());
          resolve({ code, signal });
        });
      });
    });
  }

  private exitError(): Error {
    const how = this.exit?.signal
      ? `was killed by ${this.exit.signal}`
      : `exited with code ${this.exit?.code}`;
    return new Error(`the runtime ${how}; its last stderr: ${this.stderr.slice(-2000)}`);
  }

  attach(link: Duplex): void {
    this.link = link;
    readFrames(
      link,
      (frame) => {
        const msg = decodePythonFrame(frame);
        const w = this.waiters.shift();
        if (w) w.resolve(msg);
        else this.queued.push(msg);
      },
      (err) => {
        for (const w of this.waiters.splice(0)) w.reject(err);
      },
    );
  }

  next(timeoutMs = 15_000): Promise<PythonRuntimeMessage> {
    const queued = this.queued.shift();
    if (queued) return Promise.resolve(queued);
    if (this.exit) return Promise.reject(this.exitError());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no frame from the runtime in ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        resolve: (m) => (clearTimeout(timer), resolve(m)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  }

  send(frame: Buffer): void {
    this.link!.write(frame);
  }

  async run(
    source: string,
    entryPoint: string,
    opts: { args?: string; kwargs?: string; functionId?: string; minVersion?: string } = {},
  ): Promise<PythonTaskResult> {
    const taskId = `task-${++this.taskSeq}`;
    this.send(
      encodePythonRunFrame({
        taskId,
        // Functions are immutable: one id per source.
        functionId: opts.functionId ?? `fn-${createHash("sha256").update(source).digest("hex").slice(0, 12)}`,
        source,
        entryPoint,
        argsJson: bytes(opts.args ?? "[]"),
        kwargsJson: bytes(opts.kwargs ?? "{}"),
        ...(opts.minVersion ? { minVersion: opts.minVersion } : {}),
      }),
    );
    const msg = await this.next();
    if (msg.op !== "result") throw new Error(`expected a result, got ${msg.op}`);
    expect(msg.taskId).toBe(taskId);
    return msg;
  }

  /** Closes the link (the runtime exits 0 on it), killing the process if it lingers. */
  async close(): Promise<Exit> {
    this.link?.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }
}

/** A runtime speaking over fd 3, as a worker outside a container does. */
function startOverFd3(env: Record<string, string> = {}, python = PYTHON): RuntimeUnderTest {
  const child = spawn(python, [pythonRuntimePath()], {
    stdio: ["ignore", "pipe", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const rt = new RuntimeUnderTest(child);
  rt.attach(child.stdio[3] as Duplex);
  return rt;
}

async function waitFor(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The value of a task that succeeded. */
function ok(r: PythonTaskResult): unknown {
  if (!r.ok) throw new Error(`task failed: ${JSON.stringify(r)}`);
  return JSON.parse(decoder.decode(r.resultJson));
}

describe("Python run frames", () => {
  it("splices the argument bytes in untouched, after a one-line header", () => {
    const args = bytes('[ 1,\n  {"k": "é"} ]');
    const kwargs = bytes('{"x":\n2}');
    const frame = encodePythonRunFrame({
      taskId: "t\n1",
      functionId: "f",
      source: "def main():\n    return 1\n",
      entryPoint: "main",
      argsJson: args,
      kwargsJson: kwargs,
    });
    expect(frame.readUInt32BE(0)).toBe(frame.length - 4);
    const body = frame.subarray(4);
    const nl = body.indexOf(0x0a);
    const header = JSON.parse(body.subarray(0, nl).toString()) as Record<string, unknown>;
    expect(header).toEqual({
      op: "run",
      taskId: "t\n1",
      functionId: "f",
      entryPoint: "main",
      source: "def main():\n    return 1\n",
      argsBytes: args.length,
    });
    expect(Buffer.compare(body.subarray(nl + 1, nl + 1 + args.length), Buffer.from(args))).toBe(0);
    expect(Buffer.compare(body.subarray(nl + 1 + args.length), Buffer.from(kwargs))).toBe(0);
  });

  it("decodes a result's JSON as a view, without parsing it, and refuses malformed frames", () => {
    const frame = bytes('{"op":"result","taskId":"t","ok":true,"stdout":"hi\\n","stderr":""}\n{"a":\n[1]}');
    const r = decodePythonFrame(frame) as PythonTaskResult;
    expect(r).toMatchObject({ op: "result", taskId: "t", ok: true, stdout: "hi\n", stderr: "" });
    expect(r.resultJson!.buffer).toBe(frame.buffer);
    expect(decoder.decode(r.resultJson)).toBe('{"a":\n[1]}');
    expect(() => decodePythonFrame(bytes("nope"))).toThrow(/undecodable header/);
    expect(() =>
      decodePythonFrame(bytes('{"op":"result","taskId":"t","ok":true,"stdout":"","stderr":""}')),
    ).toThrow(/no payload/);
    expect(() => decodePythonFrame(bytes('{"op":"what"}'))).toThrow(/unknown op/);
    const failed = { op: "result", taskId: "t", ok: false, stdout: "", stderr: "" };
    const error = { type: "E", message: "", traceback: "" };
    expect(() => decodePythonFrame(bytes(JSON.stringify({ ...failed, error: {} })))).toThrow(
      /type is not a string/,
    );
    const odd = JSON.stringify({ ...failed, reason: "odd", error });
    expect(() => decodePythonFrame(bytes(odd))).toThrow(/unknown reason/);
  });

  it("maps failures to the FabricError the SDK sees", () => {
    const base = { op: "result", taskId: "t", ok: false, stdout: "", stderr: "" } as const;
    const plain = pythonFailureToError({
      ...base,
      error: { type: "ValueError", message: "bad", traceback: "Traceback …" },
    });
    expect(plain).toMatchObject({
      code: "FUNCTION_FAILED",
      reason: "function_error",
      message: "ValueError: bad",
      remote: { type: "ValueError", message: "bad", stack: "Traceback …" },
    });
    const missing = pythonFailureToError({
      ...base,
      reason: "import_error",
      module: "skimage",
      error: { type: "ModuleNotFoundError", message: "No module named 'skimage'", traceback: "" },
    });
    expect(missing).toMatchObject({ code: "FAILED_PRECONDITION", reason: "import_error" });
    expect(missing.message).toMatch(/cannot import module skimage/);
  });

  it("finds the runtime file", () => {
    expect(existsSync(pythonRuntimePath())).toBe(true);
    expect(pythonRuntimePath()).toMatch(/endpoint\/worker\/python\/fabric_runtime\.py$/);
  });
});

describe("the Python runtime over fd 3", () => {
  let rt: RuntimeUnderTest;

  beforeAll(() => {
    rt = startOverFd3();
  });
  afterAll(async () => {
    expect(await rt.close()).toEqual({ code: 0, signal: null });
  });

  it("says hello first", async () => {
    const hello = await rt.next();
    expect(hello).toMatchObject({ op: "hello", implementation: "cpython", pid: rt.child.pid });
    if (hello.op !== "hello") return;
    expect(hello.python).toMatch(/^3\.\d+\.\d+$/);
    expect(hello.executable).toMatch(/python/);
  });

  it("runs a function's module once per function id and keeps its namespace", async () => {
    const source = py(
      "import sys",
      "sys.fabric_test_loads = getattr(sys, 'fabric_test_loads', 0) + 1",
      "calls = 0",
      "def main():",
      "    global calls",
      "    calls += 1",
      "    return [sys.fabric_test_loads, calls]",
    );
    expect(ok(await rt.run(source, "main", { functionId: "count-a" }))).toEqual([1, 1]);
    expect(ok(await rt.run(source, "main", { functionId: "count-a" }))).toEqual([1, 2]);
    // Another id with the same source: its own namespace (its module runs once), the same code.
    expect(ok(await rt.run(source, "main", { functionId: "count-b" }))).toEqual([2, 1]);
    expect(ok(await rt.run(source, "main", { functionId: "count-a" }))).toEqual([2, 3]);
  });

  it("loads a function without an id for its task only", async () => {
    const source = py("calls = 0", "def main():", "    global calls", "    calls += 1", "    return calls");
    expect(ok(await rt.run(source, "main", { functionId: "" }))).toBe(1);
    expect(ok(await rt.run(source, "main", { functionId: "" }))).toBe(1);
  });

  it("a child the function forks never answers for it", async () => {
    const source = py(
      "import os",
      "def main():",
      "    pid = os.fork()",
      "    if pid == 0:",
      "        return 'child'",
      "    os.waitpid(pid, 0)",
      "    return 'parent'",
      "def after():",
      "    return 'next'",
    );
    expect(ok(await rt.run(source, "main"))).toBe("parent");
    expect(ok(await rt.run(source, "after"))).toBe("next");
  });

  it("passes args and kwargs, and async functions run to completion", async () => {
    const source = py(
      "def main(a, b, *, scale=1, label=''):",
      "    return {'sum': (a + b) * scale, 'label': label[::-1], 'types': [type(a).__name__, type(b).__name__]}",
      "async def later(x):",
      "    return x * 2",
    );
    expect(
      ok(await rt.run(source, "main", { args: "[1, 2.5]", kwargs: '{"scale": 2, "label": "één"}' })),
    ).toEqual({
      sum: 7,
      label: "néé",
      types: ["int", "float"],
    });
    expect(ok(await rt.run(source, "later", { args: "[21]", kwargs: "" }))).toBe(42);
    const notList = await rt.run(source, "main", { args: '{"a": 1}' });
    expect(notList).toMatchObject({ ok: false, reason: "invalid_arguments" });
    expect(notList.error!.message).toBe("args must be an array, not an object");
    const notObject = await rt.run(source, "main", { kwargs: "[1]" });
    expect(notObject.error!.message).toBe("kwargs must be an object, not an array");
    expect(await rt.run(source, "main", { args: "[1," })).toMatchObject({
      ok: false,
      reason: "invalid_arguments",
    });
  });

  it("turns {$bytes} into bytes and bytes back into {$bytes}", async () => {
    const source = py(
      "def main(data, other):",
      "    return {'type': type(data).__name__, 'len': len(data), 'reversed': data[::-1],",
      "            'ba': bytearray(b'xy'), 'mv': memoryview(b'z'), 'other': other}",
    );
    const data = Buffer.from([0, 1, 2, 255]).toString("base64");
    const r = ok(
      await rt.run(source, "main", {
        args: JSON.stringify([{ $bytes: data }, { $bytes: "AA==", extra: 1 }]),
      }),
    );
    expect(r).toEqual({
      type: "bytes",
      len: 4,
      reversed: { $bytes: Buffer.from([255, 2, 1, 0]).toString("base64") },
      ba: { $bytes: Buffer.from("xy").toString("base64") },
      mv: { $bytes: Buffer.from("z").toString("base64") },
      other: { $bytes: "AA==", extra: 1 },
    });
    const bad = await rt.run(source, "main", { args: '[{"$bytes": "not base64!"}, 1]' });
    expect(bad).toMatchObject({ ok: false, reason: "invalid_arguments" });
    expect(bad.error!.message).toMatch(/not base64/);
  });

  it("reports an exception with its type, message and a traceback of the user's lines", async () => {
    const source = py(
      "class CalibrationError(Exception):",
      "    pass",
      "def helper(x):",
      "    return 1 / x",
      "def main():",
      "    return helper(0)",
      "def custom():",
      "    raise CalibrationError('detector 7 is saturated')",
    );
    const r = await rt.run(source, "main", { functionId: "fn-exc" });
    expect(r.ok).toBe(false);
    expect(r.reason).toBeUndefined();
    expect(r.error).toMatchObject({ type: "ZeroDivisionError", message: "division by zero" });
    expect(r.error!.traceback).toMatch(/^Traceback \(most recent call last\):/);
    expect(r.error!.traceback).toContain(
      'File "<fabric function fn-exc>", line 6, in main\n    return helper(0)',
    );
    expect(r.error!.traceback).toContain(
      'File "<fabric function fn-exc>", line 4, in helper\n    return 1 / x',
    );
    expect(r.error!.traceback).not.toContain("fabric_runtime.py");
    const c = await rt.run(source, "custom", { functionId: "fn-exc" });
    expect(c.error).toMatchObject({ type: "CalibrationError", message: "detector 7 is saturated" });
  });

  it("captures each task's prints, bounded to the last 64 KiB with a note", async () => {
    const source = py(
      "import sys",
      "def chatty(tag):",
      "    print('out', tag)",
      "    print('err', tag, file=sys.stderr)",
      "    sys.stdout.buffer.write(b'raw\\n')",
      "    return tag",
      "def flood():",
      "    print('x' * 100000 + 'END')",
    );
    const first = await rt.run(source, "chatty", { args: '["one"]' });
    expect(first).toMatchObject({ ok: true, stdout: "out one\nraw\n", stderr: "err one\n" });
    const second = await rt.run(source, "chatty", { args: '["two"]' });
    expect(second).toMatchObject({ stdout: "out two\nraw\n", stderr: "err two\n" });
    const flood = await rt.run(source, "flood");
    // 100,004 bytes written (the line and its newline), 65,536 kept.
    expect(flood.stdout.startsWith("[… 34468 bytes cut …]\nxxx")).toBe(true);
    expect(flood.stdout.endsWith("xEND\n")).toBe(true);
    expect(Buffer.byteLength(flood.stdout)).toBeLessThan(65_536 + 40);
  });

  it("names SystemExit, KeyboardInterrupt and MemoryError, and stays warm after them", async () => {
    const source = py(
      "import sys",
      "def leave(code):",
      "    sys.exit(code)",
      "def interrupt():",
      "    raise KeyboardInterrupt",
      "def hungry():",
      "    raise MemoryError('no room for the volume')",
      "def fine():",
      "    return 'still here'",
    );
    expect(await rt.run(source, "leave", { args: "[4]" })).toMatchObject({
      ok: false,
      reason: "system_exit",
      exitCode: 4,
      error: { type: "SystemExit", message: "4" },
    });
    expect(await rt.run(source, "leave", { args: "[null]" })).toMatchObject({
      reason: "system_exit",
      exitCode: 0,
    });
    expect(await rt.run(source, "interrupt")).toMatchObject({
      reason: "interrupted",
      error: { type: "KeyboardInterrupt" },
    });
    expect(await rt.run(source, "hungry")).toMatchObject({
      reason: "out_of_memory",
      error: { type: "MemoryError" },
    });
    expect(ok(await rt.run(source, "fine"))).toBe("still here");
  });

  it("a SIGINT interrupts the running task only", async () => {
    const source = py(
      "import os, time",
      "def nap():",
      "    os.write(2, b'napping\\n')",
      "    time.sleep(30)",
      "def fine():",
      "    return 1",
    );
    const running = rt.run(source, "nap");
    await waitFor(() => rt.stderr.includes("napping"));
    rt.child.kill("SIGINT");
    expect(await running).toMatchObject({
      ok: false,
      reason: "interrupted",
      error: { type: "KeyboardInterrupt" },
    });
    rt.child.kill("SIGINT"); // between tasks: ignored
    expect(ok(await rt.run(source, "fine"))).toBe(1);
  });

  it("names a module the endpoint lacks", async () => {
    const inBody = await rt.run(
      py("def main():", "    import fabric_absent_module_x", "    return 1"),
      "main",
    );
    expect(inBody).toMatchObject({ ok: false, reason: "import_error", module: "fabric_absent_module_x" });
    expect(inBody.error).toMatchObject({ type: "ModuleNotFoundError" });
    const atTop = await rt.run(py("import fabric_absent_pkg.sub", "def main():", "    return 1"), "main", {
      functionId: "fn-top-import",
    });
    expect(atTop).toMatchObject({ reason: "import_error", module: "fabric_absent_pkg" });
    expect(atTop.error!.traceback).toContain("line 1, in <module>\n    import fabric_absent_pkg.sub");
  });

  it("names the type of a result JSON cannot hold", async () => {
    const source = py("def main():", "    return {'ids': {1, 2}}", "def nan():", "    return float('nan')");
    const r = await rt.run(source, "main");
    expect(r).toMatchObject({ ok: false, reason: "bad_result" });
    expect(r.error!.message).toMatch(/Object of type set is not JSON serializable/);
    expect(await rt.run(source, "nan")).toMatchObject({ ok: false, reason: "bad_result" });
  });

  it("says when the entry point is missing, not callable, or the source does not compile", async () => {
    const source = py("LIMIT = 3", "def main():", "    return LIMIT");
    const missing = await rt.run(source, "reconstruct");
    expect(missing).toMatchObject({ ok: false, reason: "no_entry_point" });
    expect(missing.error!.message).toBe("entry point reconstruct is not defined in the function source");
    const notCallable = await rt.run(source, "LIMIT");
    expect(notCallable.error!.message).toBe("entry point LIMIT is a int, not callable");
    const broken = await rt.run(py("def main(:", "    pass"), "main", { functionId: "fn-broken" });
    expect(broken).toMatchObject({ ok: false, reason: "syntax_error", error: { type: "SyntaxError" } });
    expect(broken.error!.traceback).toContain('File "<fabric function fn-broken>", line 1');
  });

  it("checks a function's minimum Python version itself, before running its module", async () => {
    const source = py(
      "import sys",
      "print('module ran')",
      "def main():",
      "    return list(sys.version_info[:2])",
    );
    const tooNew = await rt.run(source, "main", { minVersion: "9.0", functionId: "fn-min-version" });
    expect(tooNew).toMatchObject({ ok: false, reason: "python_version", stdout: "" });
    expect(tooNew.error!.message).toMatch(
      /^the function needs Python 9\.0 or later; this worker's interpreter is 3\.\d+\.\d+ \(/,
    );
    expect(pythonFailureToError(tooNew)).toMatchObject({
      code: "FAILED_PRECONDITION",
      reason: "python_version",
    });
    const [major] = ok(
      await rt.run(source, "main", { minVersion: "3.6", functionId: "fn-min-version" }),
    ) as number[];
    expect(major).toBe(3);
    const bad = await rt.run(source, "main", { minVersion: "three", functionId: "fn-min-version" });
    expect(bad).toMatchObject({ ok: false, reason: "python_version" });
  });

  it("lists the modules it can import on request", async () => {
    rt.send(encodePythonInspectFrame());
    const msg = (await rt.next()) as PythonInspected;
    expect(msg.op).toBe("inspected");
    expect(msg.modules).toEqual(expect.arrayContaining(["json", "os", "sys", "ctypes"]));
    expect(msg.modules).toEqual([...msg.modules].sort());
    expect(msg.path[0]).toBe(process.cwd());
  });
});

describe("the Python runtime's limits and deaths", () => {
  it("refuses a result over FABRIC_MAX_RESULT_BYTES", async () => {
    const rt = startOverFd3({ FABRIC_MAX_RESULT_BYTES: "1000" });
    try {
      expect(await rt.next()).toMatchObject({ op: "hello" });
      const r = await rt.run(py("def main(n):", "    return 'a' * n"), "main", { args: "[2000]" });
      expect(r).toMatchObject({ ok: false, reason: "result_too_large" });
      expect(ok(await rt.run(py("def main(n):", "    return 'a' * n"), "main", { args: "[10]" }))).toBe(
        "a".repeat(10),
      );
    } finally {
      await rt.close();
    }
  });

  it("an interpreter that exits mid-task is seen with its code and last output", async () => {
    const rt = startOverFd3({ FABRIC_PYTHON_ECHO: "1" });
    expect(await rt.next()).toMatchObject({ op: "hello" });
    const source = py(
      "import os, sys",
      "def main():",
      "    print('last words', file=sys.stderr)",
      "    os._exit(3)",
    );
    await expect(rt.run(source, "main")).rejects.toThrow(/exited with code 3; its last stderr: last words/);
    expect(await rt.exited).toEqual({ code: 3, signal: null });
  });

  it("a segfault in C code is seen as SIGSEGV, with the Python stack on stderr", async () => {
    const rt = startOverFd3();
    expect(await rt.next()).toMatchObject({ op: "hello" });
    const source = py("import ctypes", "def main():", "    return ctypes.string_at(0)");
    await expect(rt.run(source, "main", { functionId: "fn-segv" })).rejects.toThrow(/killed by SIGSEGV/);
    expect(await rt.exited).toEqual({ code: null, signal: "SIGSEGV" });
    expect(rt.stderr).toContain("Fatal Python error: Segmentation fault");
    expect(rt.stderr).toContain('File "<fabric function fn-segv>", line 3 in main');
  });
});

describe("the Python runtime over a unix socket", () => {
  it("connects to FABRIC_WORKER_SOCKET and runs tasks there", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "fabric-py-"));
    const socketPath = path.join(dir, "worker.sock");
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    try {
      const connected = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
      const child = spawn(PYTHON, [pythonRuntimePath()], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, FABRIC_WORKER_SOCKET: socketPath },
      });
      const rt = new RuntimeUnderTest(child);
      rt.attach(await connected);
      expect(await rt.next()).toMatchObject({ op: "hello", pid: child.pid });
      expect(ok(await rt.run(py("def main(a):", "    return a + 1"), "main", { args: "[41]" }))).toBe(42);
      expect(await rt.close()).toEqual({ code: 0, signal: null });
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The first interpreter that imports numpy: Debian's python3-numpy serves /usr/bin/python3 only. */
const numpyPython = [PYTHON, "/usr/bin/python3"].find(
  (exe) => spawnSync(exe, ["-c", "import numpy"], { stdio: "ignore" }).status === 0,
);

describe("numpy arrays as .npy bytes", () => {
  it.skipIf(!numpyPython)(
    "travel both ways (skipped when no python3 imports numpy: install Debian's python3-numpy)",
    async () => {
      const rt = startOverFd3({}, numpyPython);
      try {
        expect(await rt.next()).toMatchObject({ op: "hello" });
        const source = py(
          "import io",
          "import numpy as np",
          "def main(npy):",
          "    a = np.load(io.BytesIO(npy), allow_pickle=False)",
          "    out = io.BytesIO()",
          "    np.save(out, (a * 2).astype(np.float32), allow_pickle=False)",
          "    return {'shape': list(a.shape), 'dtype': str(a.dtype), 'npy': out.getvalue()}",
        );
        // A 2x3 int64 array in .npy format, made by the same numpy.
        const made = spawnSync(numpyPython!, [
          "-c",
          "import io, sys, numpy as np; b = io.BytesIO(); np.save(b, np.arange(6).reshape(2, 3)); sys.stdout.buffer.write(b.getvalue())",
        ]);
        const npy = made.stdout.toString("base64");
        const r = ok(await rt.run(source, "main", { args: JSON.stringify([{ $bytes: npy }]) })) as {
          shape: number[];
          dtype: string;
          npy: { $bytes: string };
        };
        expect(r.shape).toEqual([2, 3]);
        expect(r.dtype).toBe("int64");
        const back = Buffer.from(r.npy.$bytes, "base64");
        expect(back.subarray(1, 6).toString()).toBe("NUMPY");
        // The .npy data: six float32 values after the header.
        const values = new Float32Array(
          back.buffer.slice(back.byteOffset + back.length - 24, back.byteOffset + back.length),
        );
        expect([...values]).toEqual([0, 2, 4, 6, 8, 10]);
      } finally {
        await rt.close();
      }
    },
  );
});
