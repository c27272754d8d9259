import type { ErrorCode, FabricError, RemoteExceptionInfo, ShellOutcome } from "../common/client.js";

/** A task state as users see it (see `stateName` in common/task-state.ts). */
export type TaskStateName =
  | "received"
  | "waiting-for-endpoint"
  | "waiting-for-nodes"
  | "running"
  | "success"
  | "failed"
  | "cancelled"
  | "expired"
  | "unknown";

/** One recorded state change of a task. */
export interface TaskTransition {
  readonly state: TaskStateName;
  readonly at: Date;
  /** Who caused it: "broker/<id>", "endpoint/<id>", "manager/<id>", "user/<id>". */
  readonly actor: string;
  /** Free text: a failure reason, an attempt number, a block id. */
  readonly detail: string;
}

/** Why a task ended without a result, as plain data (what `TaskFailedError` is built from). */
export interface TaskErrorInfo {
  readonly code: ErrorCode;
  readonly message: string;
  /** From a closed set: function_error, shell_exit_nonzero, walltime, worker_lost, cancelled, ... */
  readonly reason: string;
  readonly remote?: RemoteExceptionInfo;
  readonly shell?: ShellOutcome;
}

/** A task's status and history (no result: use `getResult` for that). */
export interface TaskInfo {
  readonly id: string;
  readonly functionId: string;
  readonly endpointId: string;
  /** The group it was submitted in; empty for a task started with `run()`, which joins none. */
  readonly groupId: string;
  readonly state: TaskStateName;
  /** Whether the state is final (success, failed, cancelled, expired). */
  readonly terminal: boolean;
  readonly history: readonly TaskTransition[];
  /** How many times it was started (more than 1 after retries). */
  readonly attempts: number;
  readonly createdAt: Date;
  /** When it reached its terminal state; undefined while it has not. */
  readonly completedAt: Date | undefined;
  /** Set when it failed, was cancelled or expired. */
  readonly error: TaskErrorInfo | undefined;
  /**
   * What its last attempt wrote to stdout and stderr, once it finished (the last 64 KiB of each,
   * after a line `[… N bytes cut …]` when more was written); undefined when it wrote nothing.
   */
  readonly output: TaskOutputInfo | undefined;
}

/** A task as a listing shows it (`getTask` has its history, error and output). */
export interface TaskSummaryInfo {
  readonly id: string;
  readonly functionId: string;
  readonly endpointId: string;
  /** Empty for a task started with `run()`, which joins no group. */
  readonly groupId: string;
  readonly state: TaskStateName;
  readonly terminal: boolean;
  readonly createdAt: Date;
  readonly completedAt: Date | undefined;
}

/** The unfinished tasks on an endpoint you own, whoever submitted them (`listEndpointTasks`). */
export interface EndpointTasks {
  /** Tasks its agent has not taken yet. */
  readonly queued: number;
  /** Tasks its agent has taken and not finished (running, or waiting for a worker). */
  readonly taken: number;
  /** The oldest queued first: ids, owners, functions and states, never arguments or results. */
  readonly tasks: readonly {
    readonly id: string;
    readonly owner: string;
    readonly functionId: string;
    readonly state: TaskStateName;
    readonly createdAt: Date;
  }[];
}

/** What `listTasks` filters by; every filter given must hold. */
export interface ListTasksOptions {
  /** Any of these states. */
  readonly states?: readonly TaskStateName[];
  readonly functionId?: string;
  readonly endpointId?: string;
  readonly groupId?: string;
  /** Created at or after this time. */
  readonly createdAfter?: Date;
  /** Created before this time. */
  readonly createdBefore?: Date;
  /** Most tasks in a page (1 to 1000). @default 100 */
  readonly limit?: number;
  /** Where to go on: the `nextCursor` of the page before (same filters). */
  readonly cursor?: string;
}

/** One page of a listing, newest first. */
export interface TaskPage {
  readonly tasks: readonly TaskSummaryInfo[];
  /**
   * Pass as `cursor` for the next page; undefined when no more tasks match. A page may hold fewer
   * than `limit` tasks and still have one (a call scans a bounded part of the index).
   */
  readonly nextCursor: string | undefined;
}

/** What a task printed. */
export interface TaskOutputInfo {
  readonly stdout: string;
  readonly stderr: string;
}

/** A finished task's result. */
export interface TaskSuccess<T = unknown> {
  readonly taskId: string;
  readonly state: TaskStateName;
  readonly ok: true;
  readonly value: T;
  readonly task: TaskInfo;
}

/**
 * A task that has no result: `TaskFailedError` when it failed, was cancelled or expired;
 * `TaskPendingError` (from `getResults` only) when it has not finished.
 */
export interface TaskFailure {
  readonly taskId: string;
  readonly state: TaskStateName;
  readonly ok: false;
  readonly error: FabricError;
  readonly task: TaskInfo;
}

/** The settled outcome of one task: check `ok`, then read `value` or `error`. */
export type TaskOutcome<T = unknown> = TaskSuccess<T> | TaskFailure;

/** The kind-specific part of a registered function. */
export type FunctionKind =
  | { readonly kind: "js"; readonly source: string; readonly entryPoint: string }
  | {
      readonly kind: "python";
      readonly source: string;
      readonly entryPoint: string;
      /** Lowest Python version it needs; "" for any. */
      readonly minVersion: string;
    }
  | { readonly kind: "shell"; readonly command: string; readonly walltimeSeconds: number };

/** A registered function. Functions are immutable: a change is a new id. */
export type FunctionInfo = {
  readonly id: string;
  readonly owner: string;
  readonly name: string;
  readonly description: string;
  /** Container image it needs; "" means the endpoint's default. */
  readonly containerImage: string;
  readonly createdAt: Date;
} & FunctionKind;

/** One block (batch job) of an endpoint, as it last reported it. */
export interface BlockInfo {
  readonly blockId: string;
  readonly jobId: string;
  readonly state: string;
  readonly since: Date;
  readonly reason: string;
}

/** What an endpoint agent last said about itself. */
export interface EndpointReport {
  readonly at: Date;
  /** "online" while running, "offline" when it stopped cleanly. */
  readonly state: string;
  readonly hostname: string;
  readonly agentVersion: string;
  readonly provider: string;
  readonly outstandingTasks: number;
  readonly runningTasks: number;
  readonly managers: number;
  readonly workers: number;
  readonly idleWorkers: number;
  readonly blocks: readonly BlockInfo[];
  readonly lastError: string;
  readonly heartbeatIntervalS: number;
  readonly startedAt: Date | undefined;
  /** The Python interpreter its workers run Python functions in, once the agent found it. */
  readonly python: PythonReport | undefined;
}

/** The interpreter an endpoint runs Python functions in. */
export interface PythonReport {
  /** "3.11.2"; "" when the endpoint has no usable interpreter (see `problem`). */
  readonly version: string;
  readonly executable: string;
  readonly implementation: string;
  /** Why the endpoint has no usable interpreter; "" when it has one. */
  readonly problem: string;
  /** The top-level modules it can import (built-in ones included), sorted. */
  readonly modules: readonly string[];
}

/** Whether an endpoint is connected, and what it last reported. */
export interface EndpointStatusInfo {
  /** "online", "offline" (no heartbeat lately) or "never-connected". */
  readonly connection: string;
  /** Tasks queued for it that it has not taken yet. */
  readonly queuedTasks: number;
  /** Its last heartbeat; undefined if it never sent one. */
  readonly last: EndpointReport | undefined;
}

/** An endpoint and its status. */
export interface EndpointInfo {
  readonly id: string;
  readonly owner: string;
  readonly name: string;
  readonly description: string;
  readonly createdAt: Date;
  readonly status: EndpointStatusInfo;
}

/** Any JavaScript function (the SDK sends its source, never calls it). */
export type AnyFunction = (...args: never[]) => unknown;

/** Name, description and container image of a function being registered. */
export interface RegisterOptions {
  /** A human name shown in listings. Default: the function's name (JS) or the command (shell). */
  readonly name?: string;
  readonly description?: string;
  /** Container image the function needs. Default: the endpoint's default image. */
  readonly containerImage?: string;
  /**
   * Times a failed task runs again, with backoff (1 s, 2 s, 4 s, …). Default 0: functions may not
   * be idempotent. Every attempt shows in the task's history.
   */
  readonly maxRetries?: number;
  /** Seconds a task may run before it is stopped (reason `timeout`). Default: no limit. */
  readonly timeoutSeconds?: number;
}

/** Python source and the callable in it to call, for {@link Client.registerFunction}. */
export interface PythonSource {
  readonly python: {
    /** A module's source: imports, helpers and the entry point. */
    readonly source: string;
    /** The callable to call: a name the module defines, or a dotted path (`Model.predict`). */
    readonly entryPoint: string;
    /** Lowest Python version it needs ("3.10"); checked at submission. Default: any. */
    readonly minVersion?: string;
  };
}

/** Options of {@link Client.registerShellFunction}. */
export interface RegisterShellOptions extends RegisterOptions {
  /** Seconds before the command is killed. Default (0): the endpoint's default. */
  readonly walltimeSeconds?: number;
}

/** The tasks a {@link Client.submitBatch} call created. */
export interface SubmittedBatch {
  /** The group they all belong to. */
  readonly groupId: string;
  /** One id per submitted task, in submission order. */
  readonly taskIds: readonly string[];
}

/** Options of {@link Client.waitForResult} and {@link Client.results}. */
export interface WaitOptions {
  /** Give up after this many milliseconds with DEADLINE_EXCEEDED. Default: wait as long as it takes. */
  readonly timeoutMs?: number;
  /** Stop waiting (CANCELLED) when this aborts. */
  readonly signal?: AbortSignal;
}

/** Options of {@link Client.fromConfig}: everything but the address, token and TLS files, which come from there. */
