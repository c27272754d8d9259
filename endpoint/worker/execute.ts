import { createRequire } from "node:module";
import path from "node:path";

import {
  FabricError,
  errorToInfo,
  toFabricError,
  type RemoteExceptionInfo,
  decodeJson,
} from "../../common/lean.js";
import type {
  JsFunctionSpec,
  ShellFunctionSpec,
  TaskOutput,
  WorkItem,
  WorkOutcome,
} from "../../proto/index.js";
import { fillCommandTemplate, runShellCommand } from "./shell.js";

/** How a worker runs tasks. */
export interface ExecuteOptions {
  /** Walltime of shell functions that do not set one. */
  readonly defaultWalltimeS: number;
  /** Results larger than this are refused here, before they cross any wire. */
  readonly maxResultBytes: number;
  /** Cap on each of a shell command's stdout and stderr. */
  readonly shellOutputCapBytes?: number;
  readonly workerId: string;
}

type Callable = (...args: unknown[]) => unknown;

const ENTRY_POINT_RE = /^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/;
const MAX_CACHED_FUNCTIONS = 256;

/** `require` for user code, resolving from the worker's working directory. */
const userRequire = createRequire(path.join(process.cwd(), "fabric-function.js"));

/** Compiled JS functions by function id: functions are immutable, so compiling once is safe. */
const compiled = new Map<string, Callable>();

const encoder = new TextEncoder();

function remoteOf(err: unknown): RemoteExceptionInfo {
  if (err instanceof Error) {
    const type = err.name && err.name !== "Error" ? err.name : (err.constructor?.name ?? "Error");
    return { type, message: err.message, stack: err.stack ?? "" };
  }
  let text: string;
  try {
    text = typeof err === "string" ? err : (JSON.stringify(err) ?? String(err));
  } catch {
    text = String(err);
  }
  return { type: err === null ? "null" : typeof err, message: text, stack: "" };
}

function invalidTask(message: string, cause?: unknown): FabricError {
  return new FabricError("INVALID_ARGUMENT", message, {
    reason: "invalid_task",
    ...(cause !== undefined ? { remote: remoteOf(cause) } : {}),
  });
}

/** Compiles (or fetches from the cache) the entry point of a JS function. */
export function compileJsFunction(functionId: string, spec: JsFunctionSpec): Callable {
  const cached = functionId ? compiled.get(functionId) : undefined;
  if (cached) return cached;
  const entry = spec.entryPoint.trim();
  if (!ENTRY_POINT_RE.test(entry)) {
    throw invalidTask(`entry point ${JSON.stringify(spec.entryPoint)} is not a JavaScript name`);
  }
  let factory: (req: NodeRequire) => unknown;
  try {
    // The entry point is read inside a try so that a name the source never defines is told apart
    // from errors the source's own top-level code throws.
    // Evaluating user source is this process's whole purpose; it is isolated in the worker.
    // eslint-disable-next-line @typescript-eslint/no-implied-eval
    factory = new Function(
      "require",
      `${spec.source}\n;try { return ${entry}; } catch (e) { if (e instanceof ReferenceError) return undefined; throw e; }`,
    ) as (req: NodeRequire) => unknown;
  } catch (err) {
    throw invalidTask(`the function source does not compile: ${(err as Error).message}`, err);
  }
  let fn: unknown;
  try {
    fn = factory(userRequire);
  } catch (err) {
    throw new FabricError(
      "FUNCTION_FAILED",
      `the function source threw while loading: ${remoteOf(err).message}`,
      {
        reason: "function_error",
        remote: remoteOf(err),
      },
    );
  }
  if (typeof fn !== "function") {
    throw invalidTask(
      fn === undefined
        ? `entry point ${entry} is not defined in the function source`
        : `entry point ${entry} is a ${typeof fn}, not a function`,
    );
  }
  if (functionId) {
    if (compiled.size >= MAX_CACHED_FUNCTIONS) compiled.delete(compiled.keys().next().value!);
    compiled.set(functionId, fn as Callable);
  }
  return fn as Callable;
}

function decodeArgs(item: WorkItem): { args: unknown[]; kwargs: Record<string, unknown> | undefined } {
  let args: unknown;
  let kwargs: unknown;
  try {
    args = decodeJson(item.argsJson, "args", []);
    kwargs = decodeJson(item.kwargsJson, "kwargs", undefined);
  } catch (err) {
    throw invalidTask((err as Error).message);
  }
  if (!Array.isArray(args)) throw invalidTask("args must be a JSON array");
  if (kwargs !== undefined && (kwargs === null || typeof kwargs !== "object" || Array.isArray(kwargs))) {
    throw invalidTask("kwargs must be a JSON object");
  }
  return { args, kwargs: kwargs as Record<string, unknown> | undefined };
}

function encodeResult(value: unknown, maxBytes: number): Uint8Array {
  let text: string | undefined;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (err) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      `the function's result cannot be encoded as JSON: ${(err as Error).message}`,
      {
        reason: "function_error",
      },
    );
  }
  if (text === undefined) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      `the function's result cannot be encoded as JSON (it returned a ${typeof value})`,
      { reason: "function_error" },
    );
  }
  const bytes = encoder.encode(text);
  if (bytes.length > maxBytes) {
    throw new FabricError(
      "RESOURCE_EXHAUSTED",
      `the function's result is ${bytes.length} bytes, over this endpoint's limit of ${maxBytes} bytes`,
      { reason: "result_too_large" },
    );
  }
  return bytes;
}

async function runJs(item: WorkItem, spec: JsFunctionSpec, opts: ExecuteOptions): Promise<Uint8Array> {
  const { args, kwargs } = decodeArgs(item);
  const fn = compileJsFunction(item.functionId, spec);
  let value: unknown;
  try {
    value = await fn(...args, ...(kwargs !== undefined ? [kwargs] : []));
  } catch (err) {
    const remote = remoteOf(err);
    throw new FabricError("FUNCTION_FAILED", remote.message || `the function threw ${remote.type}`, {
      reason: "function_error",
      remote,
    });
  }
  return encodeResult(value, opts.maxResultBytes);
}

async function runShell(
  item: WorkItem,
  spec: ShellFunctionSpec,
  opts: ExecuteOptions,
): Promise<{ bytes: Uint8Array; output: TaskOutput | undefined }> {
  const { kwargs } = decodeArgs(item);
  const command = fillCommandTemplate(spec.command, kwargs ?? {});
  const walltimeS = spec.walltimeS > 0 ? spec.walltimeS : opts.defaultWalltimeS;
  const run = await runShellCommand(command, {
    walltimeS,
    ...(opts.shellOutputCapBytes !== undefined ? { outputCapBytes: opts.shellOutputCapBytes } : {}),
  });
  const shell = {
    exitCode: run.exitCode,
    stdout: run.stdout,
    stderr: run.stderr,
    ...(run.signal ? { signal: run.signal } : {}),
  };
  if (run.timedOut) {
    throw new FabricError(
      "DEADLINE_EXCEEDED",
      `command killed after reaching its walltime of ${walltimeS} s`,
      {
        reason: "walltime",
        shell,
      },
    );
  }
  if (run.exitCode !== 0 || run.signal) {
    const how = run.signal ? `was killed by ${run.signal}` : `exited with code ${run.exitCode}`;
    throw new FabricError("FUNCTION_FAILED", `command ${how}`, { reason: "shell_exit_nonzero", shell });
  }
  const bytes = encodeResult({ exitCode: 0, stdout: run.stdout, stderr: run.stderr }, opts.maxResultBytes);
  return { bytes, output: run.stdout || run.stderr ? { stdout: run.stdout, stderr: run.stderr } : undefined };
}

/**
 * Runs one work item and describes how it ended. Never throws: every failure, including bad
 * input, becomes an outcome with an ErrorInfo.
 */
export async function executeWorkItem(item: WorkItem, opts: ExecuteOptions): Promise<WorkOutcome> {
  const startedAtMs = Date.now();
  const base = { taskId: item.taskId, startedAtMs, workerId: opts.workerId };
  try {
    const kind = item.function?.kind;
    let result: Uint8Array;
    let output: TaskOutput | undefined;
    if (kind?.$case === "js") result = await runJs(item, kind.value, opts);
    else if (kind?.$case === "shell") ({ bytes: result, output } = await runShell(item, kind.value, opts));
    else throw invalidTask("the task names no function kind this worker can run (js or shell)");
    return {
      ...base,
      ok: true,
      resultJson: Buffer.from(result),
      error: undefined,
      finishedAtMs: Date.now(),
      output,
    };
  } catch (err) {
    const fe = toFabricError(err);
    return {
      ...base,
      ok: false,
      resultJson: Buffer.alloc(0),
      error: errorToInfo(fe),
      finishedAtMs: Date.now(),
      // A shell command's output is the task's, whether or not the command succeeded.
      output:
        fe.shell && (fe.shell.stdout || fe.shell.stderr)
          ? { stdout: fe.shell.stdout, stderr: fe.shell.stderr }
          : undefined,
    };
  }
}
