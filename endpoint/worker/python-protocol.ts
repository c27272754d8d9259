/**
 * The manager's side of the Python runtime's protocol. The runtime is
 * endpoint/worker/python/fabric_runtime.py, one long-lived interpreter per worker; its docstring
 * is the reference for the messages. Frames are `4-byte big-endian length + body`
 * (common/framing.ts); a body is one line of JSON header, then for some messages a newline and
 * raw bytes:
 *
 * - runtime → manager at start: `{"op":"hello","python":"3.11.2","implementation":"cpython","pid":N,"executable":…}`
 * - manager → runtime: `{"op":"run","taskId":…,"functionId":…,"entryPoint":…,"source":…,["minVersion":"3.10",]"argsBytes":N}\n<args><kwargs>`
 * - runtime → manager: `{"op":"result","taskId":…,"ok":true,"stdout":…,"stderr":…}\n<result JSON>`, or
 *   with `"ok":false` a `reason`, an `error` {type, message, traceback} and no payload
 * - manager → runtime `{"op":"inspect"}`; runtime → manager `{"op":"inspected","python":…,"modules":[…],"path":[…]}`
 *
 * Task arguments and results stay bytes on this side: the run frame splices the task's argument
 * JSON in, and a result's JSON is a view into its frame, so neither is parsed or re-encoded here.
 * Bytes inside them travel as `{"$bytes": "<base64>"}` (Python `bytes` at the other end).
 *
 * This module loads no proto code: the worker side of a manager must start fast.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { FabricError, type ErrorCode, type RemoteExceptionInfo, encodeFrame } from "../../common/lean.js";

/** Why a Python task ended other than with a result or a plain exception from the function. */
export const PythonEndReason = {
  SYSTEM_EXIT: "system_exit",
  INTERRUPTED: "interrupted",
  OUT_OF_MEMORY: "out_of_memory",
  IMPORT_ERROR: "import_error",
  INVALID_ARGUMENTS: "invalid_arguments",
  BAD_RESULT: "bad_result",
  RESULT_TOO_LARGE: "result_too_large",
  NO_ENTRY_POINT: "no_entry_point",
  SYNTAX_ERROR: "syntax_error",
  PYTHON_VERSION: "python_version",
} as const;
export type PythonEndReason = (typeof PythonEndReason)[keyof typeof PythonEndReason];
const END_REASONS: ReadonlySet<string> = new Set(Object.values(PythonEndReason));

/** One task for the runtime. `argsJson` and `kwargsJson` are JSON the broker validated; empty means none. */
export interface PythonRunRequest {
  readonly taskId: string;
  /** The compiled module is cached under this id; empty compiles and loads it for this task only. */
  readonly functionId: string;
  readonly source: string;
  /** A name (or dotted path) the source defines. */
  readonly entryPoint: string;
  /** A JSON array. */
  readonly argsJson: Uint8Array;
  /** A JSON object. */
  readonly kwargsJson: Uint8Array;
  /**
   * The function's minimum Python version ("3.10"), checked again by the runtime: the broker
   * checks it against the version the agent reported, but a container's Python may differ.
   */
  readonly minVersion?: string;
}

/** The runtime's first message. */
export interface PythonHello {
  readonly op: "hello";
  /** `major.minor.micro`. */
  readonly python: string;
  /** `sys.implementation.name`: `cpython`, `pypy`. */
  readonly implementation: string;
  readonly pid: number;
  /** `sys.executable`: the interpreter a `python3` on PATH resolved to. */
  readonly executable: string;
}

/** The answer to an inspect request. */
export interface PythonInspected {
  readonly op: "inspected";
  readonly python: string;
  /** Top-level module names the interpreter can import (built-in ones included), sorted. */
  readonly modules: readonly string[];
  /** `sys.path`. */
  readonly path: readonly string[];
}

/** The exception that ended a task. */
export interface PythonException {
  /** The exception's class: `ValueError`, `numpy.linalg.LinAlgError`. */
  readonly type: string;
  readonly message: string;
  /** Python's traceback text from the user's first frame, with source lines; may be empty. */
  readonly traceback: string;
}

/** How one task ended. `stdout` and `stderr` are the last 64 KiB of each, with a note when cut. */
export interface PythonTaskResult {
  readonly op: "result";
  readonly taskId: string;
  readonly ok: boolean;
  /** The result's JSON text (when `ok`): a view into the frame, never parsed here. */
  readonly resultJson?: Uint8Array;
  /** Absent for a plain exception from the function. */
  readonly reason?: PythonEndReason;
  readonly error?: PythonException;
  /** The code of a `system_exit`. */
  readonly exitCode?: number;
  /** The module an `import_error` could not find. */
  readonly module?: string;
  readonly stdout: string;
  readonly stderr: string;
}

export type PythonRuntimeMessage = PythonHello | PythonInspected | PythonTaskResult;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The last source encoded: a worker runs the same function many times in a row. */
let lastSource: string | undefined;
let lastSourceJson = "";

function sourceJson(source: string): string {
  if (source !== lastSource) {
    lastSourceJson = JSON.stringify(source);
    lastSource = source;
  }
  return lastSourceJson;
}

/**
 * A whole run frame (length prefix included: write it to the link as is). The argument bytes are
 * copied in untouched, so a task's payload is never parsed on its way to the interpreter.
 */
export function encodePythonRunFrame(req: PythonRunRequest): Buffer {
  // JSON.stringify escapes every control character, so the header is one line.
  const header =
    `{"op":"run","taskId":${JSON.stringify(req.taskId)},"functionId":${JSON.stringify(req.functionId)},` +
    `"entryPoint":${JSON.stringify(req.entryPoint)},"source":${sourceJson(req.source)},` +
    (req.minVersion ? `"minVersion":${JSON.stringify(req.minVersion)},` : "") +
    `"argsBytes":${req.argsJson.length}}\n`;
  const headerBytes = Buffer.byteLength(header);
  const bodyBytes = headerBytes + req.argsJson.length + req.kwargsJson.length;
  const frame = Buffer.allocUnsafe(4 + bodyBytes);
  frame.writeUInt32BE(bodyBytes, 0);
  frame.write(header, 4);
  frame.set(req.argsJson, 4 + headerBytes);
  frame.set(req.kwargsJson, 4 + headerBytes + req.argsJson.length);
  return frame;
}

/** A whole inspect frame (length prefix included). */
export function encodePythonInspectFrame(): Buffer {
  return encodeFrame(encoder.encode('{"op":"inspect"}'));
}

function protocolError(why: string): FabricError {
  return new FabricError("INTERNAL", `bad frame from the Python runtime: ${why}`);
}

type Header = Record<string, unknown>;

function str(h: Header, key: string): string {
  const v = h[key];
  if (typeof v !== "string") throw protocolError(`${key} is not a string`);
  return v;
}

function strings(h: Header, key: string): string[] {
  const v = h[key];
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) {
    throw protocolError(`${key} is not a list of strings`);
  }
  return v;
}

function decodeResult(h: Header, body: Uint8Array, newlineAt: number): PythonTaskResult {
  const ok = h["ok"];
  if (typeof ok !== "boolean") throw protocolError("ok is not a boolean");
  const base = {
    op: "result" as const,
    taskId: str(h, "taskId"),
    ok,
    stdout: str(h, "stdout"),
    stderr: str(h, "stderr"),
  };
  if (ok) {
    if (newlineAt < 0) throw protocolError(`the result of ${base.taskId} has no payload`);
    return { ...base, resultJson: body.subarray(newlineAt + 1) };
  }
  const e = h["error"];
  if (e === null || typeof e !== "object") throw protocolError(`the failure of ${base.taskId} has no error`);
  const error = {
    type: str(e as Header, "type"),
    message: str(e as Header, "message"),
    traceback: str(e as Header, "traceback"),
  };
  const reason = h["reason"];
  if (reason !== undefined && (typeof reason !== "string" || !END_REASONS.has(reason))) {
    throw protocolError(`unknown reason ${JSON.stringify(reason)}`);
  }
  return {
    ...base,
    error,
    ...(reason !== undefined ? { reason: reason as PythonEndReason } : {}),
    ...(typeof h["exitCode"] === "number" ? { exitCode: h["exitCode"] } : {}),
    ...(typeof h["module"] === "string" ? { module: h["module"] } : {}),
  };
}

/** Decodes one frame body from the runtime; a malformed one is an INTERNAL FabricError. */
export function decodePythonFrame(body: Uint8Array): PythonRuntimeMessage {
  const newlineAt = body.indexOf(0x0a);
  let h: unknown;
  try {
    h = JSON.parse(decoder.decode(newlineAt < 0 ? body : body.subarray(0, newlineAt)));
  } catch (err) {
    throw protocolError(`undecodable header (${(err as Error).message})`);
  }
  if (h === null || typeof h !== "object" || Array.isArray(h))
    throw protocolError("the header is not an object");
  const header = h as Header;
  switch (header["op"]) {
    case "result":
      return decodeResult(header, body, newlineAt);
    case "hello": {
      const pid = header["pid"];
      if (typeof pid !== "number") throw protocolError("pid is not a number");
      return {
        op: "hello",
        python: str(header, "python"),
        implementation: str(header, "implementation"),
        pid,
        executable: str(header, "executable"),
      };
    }
    case "inspected":
      return {
        op: "inspected",
        python: str(header, "python"),
        modules: strings(header, "modules"),
        path: strings(header, "path"),
      };
    default:
      throw protocolError(`unknown op ${JSON.stringify(header["op"])}`);
  }
}

const CODE_OF_REASON: Readonly<Record<PythonEndReason, ErrorCode>> = {
  system_exit: "FUNCTION_FAILED",
  interrupted: "CANCELLED",
  out_of_memory: "RESOURCE_EXHAUSTED",
  import_error: "FAILED_PRECONDITION",
  invalid_arguments: "INVALID_ARGUMENT",
  bad_result: "INVALID_ARGUMENT",
  result_too_large: "RESOURCE_EXHAUSTED",
  no_entry_point: "INVALID_ARGUMENT",
  syntax_error: "INVALID_ARGUMENT",
  python_version: "FAILED_PRECONDITION",
};

/**
 * The FabricError a failed Python task reaches the SDK as: the Python exception as `remote`
 * (its traceback as the stack), the runtime's reason as `reason` (`function_error` for a plain
 * exception), and a message naming what to fix.
 */
export function pythonFailureToError(result: PythonTaskResult): FabricError {
  const e = result.error ?? { type: "Exception", message: "the Python task failed", traceback: "" };
  const remote: RemoteExceptionInfo = { type: e.type, message: e.message, stack: e.traceback };
  const said = e.message ? `${e.type}: ${e.message}` : e.type;
  if (result.reason === undefined)
    return new FabricError("FUNCTION_FAILED", said, { reason: "function_error", remote });
  let message: string;
  switch (result.reason) {
    case "system_exit":
      message = `the function called sys.exit(${result.exitCode ?? ""})`;
      break;
    case "interrupted":
      message = `the function was interrupted (${said})`;
      break;
    case "out_of_memory":
      message = `the function ran out of memory (${said})`;
      break;
    case "import_error":
      message = `the endpoint's Python cannot import ${result.module ? `module ${result.module}` : "a module"} (${said})`;
      break;
    default:
      message = e.message;
  }
  return new FabricError(CODE_OF_REASON[result.reason], message, { reason: result.reason, remote });
}

let runtimePath: string | undefined;

/**
 * Where fabric_runtime.py is: beside this module (`endpoint/worker/python/` in the source tree, and
 * in `dist/endpoint/worker/python/` once the build copies it there, as tsc does not), else in the
 * source tree next to a `dist/` that lacks the copy.
 */
export function pythonRuntimePath(): string {
  if (runtimePath !== undefined) return runtimePath;
  const beside = fileURLToPath(new URL("./python/fabric_runtime.py", import.meta.url));
  const inSource = fileURLToPath(
    new URL("../../../endpoint/worker/python/fabric_runtime.py", import.meta.url),
  );
  for (const candidate of [beside, inSource]) {
    if (existsSync(candidate)) return (runtimePath = candidate);
  }
  throw new FabricError(
    "FAILED_PRECONDITION",
    `the Python worker runtime is missing (looked for ${beside}): the build copies endpoint/worker/python/ into dist/endpoint/worker/python/`,
  );
}
