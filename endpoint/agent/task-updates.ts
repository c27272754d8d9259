/**
 * Every TaskUpdate the agent sends, one builder per kind. Pure: the time is passed in, so each
 * update's fields can be tested without a clock, a bus or a manager.
 */
import { FabricError, errorToInfo } from "../../common/index.js";
import { TaskState } from "../../proto/index.js";
import type { ErrorInfo, Payload, TaskOutput, TaskUpdate } from "../../proto/index.js";

/** How much of a failed task's output, stack and message is kept in its ErrorInfo. */
export const ERROR_FIELD_CAP = 64 * 1024;

/** Most bytes kept of each of a task's stdout and stderr (the tail; a note says what was cut). */
export const OUTPUT_CAP_BYTES = 64 * 1024;

/** A task's output within {@link OUTPUT_CAP_BYTES} per stream, whatever the worker sent. */
export function fitOutput(o: TaskOutput): TaskOutput {
  return { stdout: tailOf(o.stdout), stderr: tailOf(o.stderr) };
}

function tailOf(text: string): string {
  const bytes = Buffer.byteLength(text);
  if (bytes <= OUTPUT_CAP_BYTES) return text;
  const buf = Buffer.from(text);
  let start = bytes - OUTPUT_CAP_BYTES;
  // Start on a character boundary: skip UTF-8 continuation bytes.
  while (start < buf.length && (buf[start]! & 0xc0) === 0x80) start++;
  return `[… ${start} bytes cut …]\n${buf.subarray(start).toString()}`;
}

/** What every update names: the task, its attempt, when and who. */
export interface UpdateHead {
  readonly taskId: string;
  readonly attempt: number;
  readonly atMs: number;
  /** `endpoint/<id>` for what the agent decides, `manager/<id>` for what a manager reported. */
  readonly actor: string;
}

function update(head: UpdateHead, state: TaskState, fields: Partial<TaskUpdate>): TaskUpdate {
  return {
    taskId: head.taskId,
    state,
    atMs: head.atMs,
    actor: head.actor,
    detail: "",
    result: undefined,
    error: undefined,
    attempt: head.attempt,
    startedAtMs: 0,
    startedBy: "",
    output: undefined,
    ...fields,
  };
}

/** A task a worker has started (the manager's "started" notice); `detail` names block and worker. */
export function startedUpdate(head: UpdateHead, detail: string): TaskUpdate {
  return update(head, TaskState.TASK_STATE_RUNNING, { detail });
}

/**
 * An attempt failed and the task runs again: it stays RUNNING, and the failure is recorded in
 * its history through the detail (see {@link retryDetail}).
 */
export function retryingUpdate(head: UpdateHead, detail: string): TaskUpdate {
  return update(head, TaskState.TASK_STATE_RUNNING, { detail: detail.slice(0, RETRY_DETAIL_MAX) });
}
/**
 * A run that was started and never ended (its agent, worker or NATS was lost): recorded, as the
 * attempt it was, before the next attempt runs. The task stays RUNNING.
 */
export function lostRunUpdate(head: UpdateHead, detail: string): TaskUpdate {
  return update(head, TaskState.TASK_STATE_RUNNING, { detail });
}
/** Longest detail of a retry's RUNNING update (the log keeps all of it). */
const RETRY_DETAIL_MAX = 2000;

/** A task that succeeded, its result inline or a reference into the payload store. */
export function successUpdate(head: UpdateHead, result: Payload): TaskUpdate {
  return update(head, TaskState.TASK_STATE_SUCCESS, { result });
}

/** A task that failed on its worker, with the ErrorInfo the manager sent (already {@link fitError}ted). */
export function failedUpdate(head: UpdateHead, error: ErrorInfo): TaskUpdate {
  return update(head, TaskState.TASK_STATE_FAILED, { detail: error.reason, error });
}

/**
 * A task the agent fails itself: refused, undecodable, invalid, its result too large or not
 * stored, its worker lost, no block able to start.
 */
export function errorUpdate(head: UpdateHead, err: FabricError): TaskUpdate {
  return update(head, TaskState.TASK_STATE_FAILED, { detail: err.reason, error: fitError(errorToInfo(err)) });
}

/** A task its owner cancelled before a worker had it. */
export function cancelledUpdate(head: UpdateHead): TaskUpdate {
  return errorUpdate(
    head,
    new FabricError("CANCELLED", "the task was cancelled by its owner", { reason: "cancelled" }),
  );
}

/**
 * A terminal update carrying the start the manager reported only in the outcome (a task that
 * finished before its "started" notice was due), unless it names one already.
 */
export function withStart(u: TaskUpdate, startedAtMs: number, startedBy: string): TaskUpdate {
  return startedAtMs > 0 && u.startedAtMs === 0 ? { ...u, startedAtMs, startedBy } : u;
}

/** Wait before attempt `attempt + 1` of a failed task: 1 s, 2 s, 4 s, … up to 60 s. */
export function retryDelayMs(attempt: number): number {
  return Math.min(1_000 * 2 ** (attempt - 1), 60_000);
}

/** What a retry's update says: which attempt failed, why, and when the next one comes. */
export function retryDetail(attempt: number, maxRetries: number, error: ErrorInfo, delayMs: number): string {
  return `attempt ${attempt} of ${maxRetries + 1} failed (${error.reason || error.code}: ${error.message}); retrying in ${delayMs / 1000} s`;
}

/** The last `cap` bytes of `s`, saying how much was cut. */
export function tail(s: string, cap: number): string {
  if (Buffer.byteLength(s) <= cap) return s;
  const buf = Buffer.from(s);
  return `[... ${buf.length - cap} bytes truncated ...]\n${buf.subarray(buf.length - cap).toString("utf8")}`;
}

/** Keeps a failed task's ErrorInfo small enough to travel in one message, keeping the ends of output. */
export function fitError(info: ErrorInfo): ErrorInfo {
  return {
    ...info,
    message: tail(info.message, ERROR_FIELD_CAP / 4),
    remote: info.remote
      ? {
          ...info.remote,
          message: tail(info.remote.message, ERROR_FIELD_CAP / 4),
          stack: tail(info.remote.stack, ERROR_FIELD_CAP),
        }
      : undefined,
    shell: info.shell
      ? {
          ...info.shell,
          stdout: tail(info.shell.stdout, ERROR_FIELD_CAP),
          stderr: tail(info.shell.stderr, ERROR_FIELD_CAP),
        }
      : undefined,
  };
}
