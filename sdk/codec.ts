// Pure conversions between the wire messages (proto/) and the SDK's friendly shapes. No IO here,
// so every rule about arguments, results and errors is unit-tested in codec.test.ts.
import {
  FabricError,
  isErrorCode,
  MAX_TIMEOUT_S,
  type ErrorCode,
  decodeJsonWithBytes,
  encodeJsonWithBytes,
  TaskState,
  isTerminal,
  stateName,
} from "../common/client.js";
import type {
  Endpoint,
  EndpointStatus,
  EndpointStatusView,
  ErrorInfo,
  FunctionMessage,
  Task,
  TaskSpec,
  TaskSummary,
} from "../proto/index.js";
import { TaskFailedError, TaskPendingError } from "./errors.js";
import type {
  EndpointInfo,
  EndpointReport,
  FunctionInfo,
  TaskErrorInfo,
  TaskInfo,
  TaskOutcome,
  TaskStateName,
  TaskSummaryInfo,
} from "./types.js";

/** One task to submit. */
export interface TaskInput {
  readonly functionId: string;
  readonly endpointId: string;
  /** Positional arguments, sent as a JSON array. */
  readonly args?: readonly unknown[];
  /** Keyword arguments: fill a shell template's `{name}`s; a JS function gets them as a last argument. */
  readonly kwargs?: Readonly<Record<string, unknown>>;
  /** Seconds this task may run before it is stopped (the function's own limit still applies). */
  readonly timeoutSeconds?: number;
}

const EMPTY = new Uint8Array(0);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Checks and encodes one task for SubmitTasks. Bad input is INVALID_ARGUMENT naming the task. */
export function encodeTaskSpec(input: TaskInput, index = 0): TaskSpec {
  const where = `task ${index}`;
  if (input === null || typeof input !== "object") {
    throw new FabricError("INVALID_ARGUMENT", `${where}: expected {functionId, endpointId, args?, kwargs?}`);
  }
  if (typeof input.functionId !== "string" || input.functionId === "") {
    throw new FabricError("INVALID_ARGUMENT", `${where}: functionId must be a non-empty string`);
  }
  if (typeof input.endpointId !== "string" || input.endpointId === "") {
    throw new FabricError("INVALID_ARGUMENT", `${where}: endpointId must be a non-empty string`);
  }
  const args = input.args ?? [];
  if (!Array.isArray(args)) {
    throw new FabricError("INVALID_ARGUMENT", `${where}: args must be an array of positional arguments`);
  }
  if (input.kwargs !== undefined && !isPlainObject(input.kwargs)) {
    throw new FabricError("INVALID_ARGUMENT", `${where}: kwargs must be a plain object`);
  }
  const timeout = input.timeoutSeconds ?? 0;
  if (!Number.isInteger(timeout) || timeout < 0 || timeout > MAX_TIMEOUT_S) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      `${where}: timeoutSeconds must be a whole number from 0 to ${MAX_TIMEOUT_S} (30 days)`,
    );
  }
  return {
    functionId: input.functionId,
    endpointId: input.endpointId,
    ...(timeout > 0 ? { timeoutS: timeout } : {}),
    argsJson: encodeJsonWithBytes(args, `${where} args`),
    // Empty means "not set": a JS function then gets no extra last argument.
    kwargsJson: input.kwargs === undefined ? EMPTY : encodeJsonWithBytes(input.kwargs, `${where} kwargs`),
  };
}

/** Splits `items` into consecutive chunks of at most `size`. */
export function chunk<T>(items: readonly T[], size: number): T[][] {
  if (!Number.isInteger(size) || size < 1)
    throw new FabricError("INVALID_ARGUMENT", `chunk size must be >= 1`);
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

const dateOf = (ms: number): Date => new Date(ms);

/** A task state as users see it. */
export function taskStateName(state: TaskState): TaskStateName {
  return stateName(state) as TaskStateName;
}

function errorInfoOf(task: Task): TaskErrorInfo {
  const info: ErrorInfo | undefined = task.error;
  const name = taskStateName(task.state);
  // The broker sets `error` for every failed, cancelled or expired task; these defaults only keep
  // the message useful if one arrives without it.
  const fallback: Record<string, [ErrorCode, string, string]> = {
    cancelled: ["CANCELLED", "cancelled", `task ${task.id} was cancelled`],
    expired: ["DEADLINE_EXCEEDED", "expired", `task ${task.id} expired before it finished`],
  };
  const [defCode, defReason, defMessage] = fallback[name] ?? ["UNKNOWN", "", `task ${task.id} failed`];
  const code = info && isErrorCode(info.code) ? info.code : defCode;
  const remote = info?.remote
    ? { type: info.remote.type, message: info.remote.message, stack: info.remote.stack }
    : undefined;
  const shell = info?.shell
    ? {
        exitCode: info.shell.exitCode,
        stdout: info.shell.stdout,
        stderr: info.shell.stderr,
        ...(info.shell.signal ? { signal: info.shell.signal } : {}),
      }
    : undefined;
  return {
    code,
    message: info?.message || defMessage,
    reason: info?.reason || defReason,
    ...(remote ? { remote } : {}),
    ...(shell ? { shell } : {}),
  };
}

/** The friendly view of a task record. */
/** A listed task, as the SDK shows it. */
export function toTaskSummary(t: TaskSummary): TaskSummaryInfo {
  return {
    id: t.id,
    functionId: t.functionId,
    endpointId: t.endpointId,
    groupId: t.groupId,
    state: taskStateName(t.state),
    terminal: isTerminal(t.state),
    createdAt: dateOf(t.createdAtMs),
    completedAt: t.completedAtMs > 0 ? dateOf(t.completedAtMs) : undefined,
  };
}

/** The state a user names ("failed", "waiting-for-endpoint"; underscores too), or undefined. */
export function taskStateOf(name: string): TaskState | undefined {
  const wanted = name.trim().toLowerCase().replace(/_/g, "-");
  for (const v of Object.values(TaskState)) {
    if (typeof v === "number" && v !== TaskState.TASK_STATE_UNSPECIFIED && stateName(v) === wanted) return v;
  }
  return undefined;
}

export function toTaskInfo(task: Task): TaskInfo {
  const state = taskStateName(task.state);
  const failed =
    task.state === TaskState.TASK_STATE_FAILED ||
    task.state === TaskState.TASK_STATE_CANCELLED ||
    task.state === TaskState.TASK_STATE_EXPIRED;
  return {
    id: task.id,
    functionId: task.functionId,
    endpointId: task.endpointId,
    groupId: task.groupId,
    state,
    terminal: isTerminal(task.state),
    history: task.history.map((t) => ({
      state: taskStateName(t.state),
      at: dateOf(t.atMs),
      actor: t.actor,
      detail: t.detail,
    })),
    attempts: task.attempts,
    createdAt: dateOf(task.createdAtMs),
    completedAt: task.completedAtMs > 0 ? dateOf(task.completedAtMs) : undefined,
    error: failed ? errorInfoOf(task) : undefined,
    output: task.output && (task.output.stdout || task.output.stderr) ? { ...task.output } : undefined,
  };
}

/** The error a failed, cancelled or expired task stands for. */
export function taskFailedError(info: TaskInfo): TaskFailedError {
  const e = info.error ?? { code: "UNKNOWN" as const, message: `task ${info.id} failed`, reason: "" };
  return new TaskFailedError(info.id, info.state, e.code, e.message, {
    ...(e.reason ? { reason: e.reason } : {}),
    ...(e.remote ? { remote: e.remote } : {}),
    ...(e.shell ? { shell: e.shell } : {}),
    ...(info.output ? { output: info.output } : {}),
  });
}

/** Decodes a successful task's result (the JSON the function returned). */
export function decodeResult(task: Task): unknown {
  const payload = task.result;
  if (!payload) return undefined;
  if (payload.json.length === 0 && payload.objectRef) {
    // The broker inlines results when it answers; a bare reference means it did not, and the SDK
    // has no access to the object store.
    throw new FabricError(
      "INTERNAL",
      `the broker sent task ${task.id}'s result as an object reference (${payload.objectRef}) instead of inline JSON`,
    );
  }
  return decodeJsonWithBytes(payload.json, `result of task ${task.id}`, undefined);
}

/**
 * The outcome of a task: its decoded result, `TaskFailedError`, or `TaskPendingError` while it has
 * not finished. Never throws for the task's own failure.
 */
export function taskOutcome<T = unknown>(task: Task): TaskOutcome<T> {
  const info = toTaskInfo(task);
  if (!info.terminal) {
    return {
      taskId: task.id,
      state: info.state,
      ok: false,
      error: new TaskPendingError(task.id, info.state),
      task: info,
    };
  }
  if (task.state !== TaskState.TASK_STATE_SUCCESS) {
    return { taskId: task.id, state: info.state, ok: false, error: taskFailedError(info), task: info };
  }
  try {
    return { taskId: task.id, state: info.state, ok: true, value: decodeResult(task) as T, task: info };
  } catch (err) {
    return { taskId: task.id, state: info.state, ok: false, error: err as FabricError, task: info };
  }
}

/** The friendly view of a function record. */
export function toFunctionInfo(fn: FunctionMessage): FunctionInfo {
  const base = {
    id: fn.id,
    owner: fn.owner,
    name: fn.name,
    description: fn.description,
    containerImage: fn.spec?.containerImage ?? "",
    createdAt: dateOf(fn.createdAtMs),
  };
  const kind = fn.spec?.kind;
  if (kind?.$case === "shell") {
    return { ...base, kind: "shell", command: kind.value.command, walltimeSeconds: kind.value.walltimeS };
  }
  if (kind?.$case === "js") {
    return { ...base, kind: "js", source: kind.value.source, entryPoint: kind.value.entryPoint };
  }
  if (kind?.$case === "python") {
    const { source, entryPoint, minVersion } = kind.value;
    return { ...base, kind: "python", source, entryPoint, minVersion };
  }
  throw new FabricError("INTERNAL", `function ${fn.id} has no kind the SDK knows (js, python or shell)`);
}

function toEndpointReport(s: EndpointStatus): EndpointReport {
  return {
    at: dateOf(s.atMs),
    state: s.state,
    hostname: s.hostname,
    agentVersion: s.agentVersion,
    provider: s.provider,
    outstandingTasks: s.outstandingTasks,
    runningTasks: s.runningTasks,
    managers: s.managers,
    workers: s.workers,
    idleWorkers: s.idleWorkers,
    blocks: s.blocks.map((b) => ({
      blockId: b.blockId,
      jobId: b.jobId,
      state: b.state,
      since: dateOf(b.sinceMs),
      reason: b.reason,
    })),
    lastError: s.lastError,
    heartbeatIntervalS: s.heartbeatIntervalS,
    startedAt: s.startedAtMs > 0 ? dateOf(s.startedAtMs) : undefined,
    python: s.python ? { ...s.python } : undefined,
  };
}

/** The friendly view of an endpoint and its status. */
export function toEndpointInfo(ep: Endpoint, status: EndpointStatusView | undefined): EndpointInfo {
  return {
    id: ep.id,
    owner: ep.owner,
    name: ep.name,
    description: ep.description,
    createdAt: dateOf(ep.createdAtMs),
    status: {
      connection: status?.connection || "never-connected",
      queuedTasks: status?.queuedTasks ?? 0,
      last: status?.last ? toEndpointReport(status.last) : undefined,
    },
  };
}
