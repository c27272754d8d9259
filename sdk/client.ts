import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";

import {
  FabricError,
  isRetryable,
  MAX_TIMEOUT_S,
  bearer,
  callUnary,
  channelFor,
  clientOptions,
  silentLogger,
} from "../common/client.js";
import { EndpointServiceClient, FunctionServiceClient, TaskServiceClient } from "../proto/index.js";
import type { FunctionSpec, Task, TaskSpec, WatchTasksRequest } from "../proto/index.js";
import {
  chunk,
  encodeTaskSpec,
  taskOutcome,
  taskStateName,
  taskStateOf,
  toEndpointInfo,
  toFunctionInfo,
  toTaskInfo,
  toTaskSummary,
} from "./codec.js";
import type { TaskInput } from "./codec.js";
import { brokerAddresses, loadClientSettings, resolveClientOptions } from "./config.js";
import type { ClientOptions, ResolvedClientOptions } from "./config.js";
import { Executor } from "./executor.js";
import type { ExecutorOptions } from "./executor.js";
import { functionKindOf, limitsOf } from "./function-source.js";
import type { JsSource } from "./function-source.js";
import { BatchSubmitError } from "./errors.js";
import { ClientSession } from "./session.js";
import type {
  AnyFunction,
  EndpointInfo,
  EndpointTasks,
  FunctionInfo,
  PythonSource,
  RegisterOptions,
  RegisterShellOptions,
  SubmittedBatch,
  ListTasksOptions,
  TaskInfo,
  TaskOutcome,
  TaskPage,
  TaskSummaryInfo,
  WaitOptions,
} from "./types.js";
import { watchTasks } from "./watch.js";
import type { WatchTarget } from "./watch.js";

/** How long a submission keeps retrying while the broker is unreachable (e.g. restarting). */
const SUBMIT_RETRY_WINDOW_MS = 60_000;

export type FromConfigOptions = Omit<
  ClientOptions,
  "address" | "token" | "caFile" | "certFile" | "keyFile"
> & {
  /** Environment to read `FABRIC_BROKER`, `FABRIC_TOKEN` and `FABRIC_HOME` from. Default: `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
};

// Groups this client submitted to, and the ids it put in them, so a group watch that breaks can be
// re-opened by id. Bounded so a long-lived client does not grow without limit.
const MAX_REMEMBERED_GROUPS = 64;
/** Watches of at most this many ids share the client's session stream. */
const SESSION_WATCH_MAX_IDS = 64;

/**
 * A connection to the fabric's broker: register functions, run them on endpoints, and get their
 * results. Every method throws {@link FabricError} (or a subclass) and nothing else. The client is
 * silent unless given a logger.
 *
 * @example
 * ```ts
 * import { Client } from "hpc-function-fabric/sdk";
 *
 * const client = Client.fromEnv(); // FABRIC_BROKER / FABRIC_TOKEN, else ~/.fabric/client.json
 * const fnId = await client.registerFunction(function add(a: number, b: number) {
 *   return a + b;
 * });
 * const taskId = await client.run(fnId, endpointId, [1, 2]);
 * console.log(await client.waitForResult<number>(taskId, { timeoutMs: 60_000 })); // 3
 * client.close();
 * ```
 */
export class Client {
  /** The resolved options. */
  readonly options: ResolvedClientOptions;
  private readonly log: Logger;
  /** The brokers' addresses, in the order tried. */
  private readonly addresses: readonly string[];
  private readonly channels: readonly { target: string; credentials: grpc.ChannelCredentials }[];
  /** Each address's stubs, made at its first use. */
  private readonly stubsOf: (Stubs | undefined)[];
  /** The address in use. */
  private current = 0;
  private readonly md: grpc.Metadata;
  private readonly closing = new AbortController();
  private readonly groups = new Map<string, string[]>();
  /** Submits and small watches travel on one long-lived stream (see ClientSession). */
  private readonly session: ClientSession;

  /**
   * Connects lazily: nothing goes on the wire until the first call.
   *
   * @example
   * ```ts
   * const client = new Client({ address: "localhost:50051", token: process.env.FABRIC_TOKEN });
   * ```
   */
  constructor(options: ClientOptions) {
    this.options = resolveClientOptions(options);
    this.log = (this.options.logger ?? silentLogger).child({ component: "sdk.client" });
    this.addresses = brokerAddresses(this.options.address);
    // Every address is checked now: a bad one (a TLS file for a plaintext address) fails here.
    this.channels = this.addresses.map((a) => channelFor(a, this.options));
    this.stubsOf = new Array<Stubs | undefined>(this.addresses.length);
    this.md = bearer(this.options.token);
    this.session = new ClientSession(() => this.stubs().tasks.session(this.md.clone()));
    // Every wait of this client listens to it: many concurrent waits are normal, not a leak.
    setMaxListeners(0, this.closing.signal);
  }

  /**
   * A client for the broker configured in the environment: `FABRIC_BROKER`, `FABRIC_TOKEN` and
   * the TLS files `FABRIC_CA_FILE`, `FABRIC_CERT_FILE`, `FABRIC_KEY_FILE`, each falling back to
   * `$FABRIC_HOME/client.json` (written by `fabric configure`).
   *
   * @example
   * ```ts
   * const client = Client.fromConfig({ submitChunkSize: 2_000 });
   * ```
   */
  static fromConfig(options: FromConfigOptions = {}): Client {
    const { env, ...rest } = options;
    const settings = loadClientSettings(env ?? process.env);
    return new Client({ ...rest, ...settings });
  }

  /**
   * Same as {@link Client.fromConfig}: environment first, then `$FABRIC_HOME/client.json`.
   *
   * @example
   * ```ts
   * const client = Client.fromEnv();
   * ```
   */
  static fromEnv(options: FromConfigOptions = {}): Client {
    return Client.fromConfig(options);
  }

  // ---------- functions ----------

  /**
   * Registers a function and returns its id. Give a real JavaScript function, whose source is
   * taken from `fn.toString()`; `{ source, entryPoint }`, JavaScript text that defines the entry
   * point; or `{ python: { source, entryPoint, minVersion? } }`, a Python module and the callable
   * in it (see {@link PythonSource}).
   *
   * A function is sent as text, so it must be self-contained: it cannot use variables, imports or
   * helpers from the module that defined it (it may `require` Node built-ins). Native and bound
   * functions and classes are refused (INVALID_ARGUMENT). Arguments and the return value travel as
   * JSON; the function may be async.
   *
   * @example
   * ```ts
   * const id = await client.registerFunction(async function checksum(path: string) {
   *   const { createHash } = require("node:crypto");
   *   const { readFile } = require("node:fs/promises");
   *   return createHash("sha256").update(await readFile(path)).digest("hex");
   * }, { containerImage: "node:20-slim" });
   *
   * const id2 = await client.registerFunction({ source: "function main(x) { return x * 2; }", entryPoint: "main" });
   * ```
   */
  async registerFunction(
    fn: AnyFunction | JsSource | PythonSource,
    options: RegisterOptions = {},
  ): Promise<string> {
    const { kind, entryPoint } = functionKindOf(fn);
    return this.registerSpec(
      { kind, containerImage: options.containerImage ?? "", ...limitsOf(options) },
      options.name ?? entryPoint,
      options.description ?? "",
    );
  }

  /**
   * Registers a shell command template and returns its id. `{name}` placeholders are filled from a
   * task's kwargs (shell-quoted by the worker). A task's result is `{ exitCode, stdout, stderr }`; a
   * non-zero exit fails the task with reason `shell_exit_nonzero` and the same fields in `error.shell`.
   *
   * @example
   * ```ts
   * const id = await client.registerShellFunction("gzip -k {file}", { walltimeSeconds: 600 });
   * const taskId = await client.run(id, endpointId, [], { file: "/data/scan-0001.h5" });
   * ```
   */
  async registerShellFunction(command: string, options: RegisterShellOptions = {}): Promise<string> {
    if (typeof command !== "string" || command.trim() === "") {
      throw new FabricError("INVALID_ARGUMENT", "a shell function needs a non-empty command");
    }
    const walltime = options.walltimeSeconds ?? 0;
    if (!Number.isInteger(walltime) || walltime < 0 || walltime > MAX_TIMEOUT_S) {
      throw new FabricError(
        "INVALID_ARGUMENT",
        `walltimeSeconds must be a whole number from 0 to ${MAX_TIMEOUT_S}, got ${walltime}`,
      );
    }
    return this.registerSpec(
      {
        kind: { $case: "shell", value: { command, walltimeS: walltime } },
        containerImage: options.containerImage ?? "",
        ...limitsOf(options),
      },
      options.name ?? command.slice(0, 256),
      options.description ?? "",
    );
  }

  private async registerSpec(spec: FunctionSpec, name: string, description: string): Promise<string> {
    const res = await this.unary((c) => c.functions.registerFunction.bind(c.functions), {
      name,
      description,
      spec,
    });
    if (!res.function)
      throw new FabricError("INTERNAL", "the broker registered the function but did not return it");
    this.log.debug({ functionId: res.function.id }, "registered function");
    return res.function.id;
  }

  /** A registered function of the caller's (NOT_FOUND for unknown ids and other users' functions). */
  async getFunction(functionId: string): Promise<FunctionInfo> {
    const res = await this.unary((c) => c.functions.getFunction.bind(c.functions), {
      functionId,
    });
    if (!res.function) throw new FabricError("NOT_FOUND", `function ${functionId} not found`);
    return toFunctionInfo(res.function);
  }

  /** The caller's registered functions. */
  async listFunctions(): Promise<FunctionInfo[]> {
    const res = await this.unary((c) => c.functions.listFunctions.bind(c.functions), {});
    return res.functions.map(toFunctionInfo);
  }

  /** Deletes a function; tasks already submitted are not affected. */
  async deleteFunction(functionId: string): Promise<void> {
    await this.unary((c) => c.functions.deleteFunction.bind(c.functions), { functionId });
  }

  // ---------- endpoints ----------

  /** The caller's endpoints, each with its connection state and last heartbeat. */
  async listEndpoints(): Promise<EndpointInfo[]> {
    const res = await this.unary((c) => c.endpoints.listEndpoints.bind(c.endpoints), {});
    return res.endpoints.map((ep, i) => toEndpointInfo(ep, res.statuses[i]));
  }

  /** One endpoint with its connection state ("online", "offline", "never-connected") and last heartbeat. */
  async getEndpoint(endpointId: string): Promise<EndpointInfo> {
    const res = await this.unary((c) => c.endpoints.getEndpoint.bind(c.endpoints), {
      endpointId,
    });
    if (!res.endpoint) throw new FabricError("NOT_FOUND", `endpoint ${endpointId} not found`);
    return toEndpointInfo(res.endpoint, res.status);
  }

  /**
   * The unfinished tasks on an endpoint you own, whoever submitted them: how many wait and how
   * many its agent has taken, and the first `limit` (oldest first) by id, owner and state.
   */
  async listEndpointTasks(endpointId: string, options: { limit?: number } = {}): Promise<EndpointTasks> {
    const res = await this.unary((c) => c.endpoints.listEndpointTasks.bind(c.endpoints), {
      endpointId,
      limit: options.limit ?? 0,
    });
    return {
      queued: res.queuedCount,
      taken: res.takenCount,
      tasks: res.tasks.map((t) => ({
        id: t.id,
        owner: t.owner,
        functionId: t.functionId,
        state: taskStateName(t.state),
        createdAt: new Date(t.createdAtMs),
      })),
    };
  }

  /** Deletes an endpoint; its queued tasks fail with reason `endpoint_deleted`. */
  async deleteEndpoint(endpointId: string): Promise<void> {
    await this.unary((c) => c.endpoints.deleteEndpoint.bind(c.endpoints), { endpointId });
  }

  // ---------- tasks ----------

  /**
   * Runs a function once on an endpoint and returns the task id at once (the task runs in the
   * background; see {@link Client.waitForResult}).
   *
   * @example
   * ```ts
   * const taskId = await client.run(fnId, endpointId, [21, 2]);
   * ```
   */
  async run(
    functionId: string,
    endpointId: string,
    args?: readonly unknown[],
    kwargs?: Readonly<Record<string, unknown>>,
  ): Promise<string> {
    this.assertOpen();
    const spec = encodeTaskSpec(
      { functionId, endpointId, ...(args ? { args } : {}), ...(kwargs ? { kwargs } : {}) },
      0,
    );
    // A task run on its own joins no group: two writes fewer at the broker.
    const res = await this.submitChunk([spec], "", true);
    const id = res.taskIds[0];
    if (id === undefined)
      throw new FabricError("INTERNAL", "the broker accepted the task but returned no id");
    return id;
  }

  /**
   * Submits many tasks as one group and returns their ids in order. Large batches are split into
   * requests of `submitChunkSize` tasks, all in the same group. With `groupId`, the tasks join that
   * existing group of the caller's. Every task is checked before anything is sent; if a later
   * chunk fails, a {@link BatchSubmitError} names the tasks already accepted.
   *
   * @example
   * ```ts
   * const { groupId, taskIds } = await client.submitBatch(
   *   files.map((file) => ({ functionId, endpointId, args: [file] })),
   * );
   * for await (const outcome of client.results({ groupId })) console.log(outcome.taskId, outcome.ok);
   * ```
   */
  async submitBatch(
    tasks: readonly TaskInput[],
    options: { groupId?: string } = {},
  ): Promise<SubmittedBatch> {
    this.assertOpen();
    const list: readonly TaskInput[] = tasks;
    if (!Array.isArray(tasks) || list.length === 0) {
      throw new FabricError("INVALID_ARGUMENT", "submitBatch needs at least one task");
    }
    const specs = list.map((t, i) => encodeTaskSpec(t, i));
    let groupId = options.groupId ?? "";
    const taskIds: string[] = [];
    for (const part of chunk(specs, this.options.submitChunkSize)) {
      try {
        const res = await this.submitChunk(part, groupId);
        groupId = res.groupId;
        taskIds.push(...res.taskIds);
      } catch (err) {
        if (taskIds.length === 0) throw err;
        this.remember(groupId, taskIds);
        throw new BatchSubmitError(err as FabricError, groupId, [...taskIds], specs.length);
      }
    }
    this.remember(groupId, taskIds);
    this.log.debug({ groupId, tasks: taskIds.length }, "submitted tasks");
    return { groupId, taskIds };
  }

  /**
   * One SubmitTasks call, retried while the broker is unreachable. Each chunk carries an
   * idempotency key, so a retry after a lost answer never creates the tasks twice.
   */
  private async submitChunk(
    tasks: TaskSpec[],
    groupId: string,
    noGroup = false,
  ): Promise<{ groupId: string; taskIds: string[] }> {
    const idempotencyKey = randomUUID();
    const deadline = Date.now() + SUBMIT_RETRY_WINDOW_MS;
    const request = { tasks, groupId, idempotencyKey, ...(noGroup ? { noGroup } : {}) };
    for (let attempt = 1; ; attempt++) {
      try {
        if (this.session.available) {
          try {
            return await this.session.submit(request, this.options.callTimeoutMs);
          } catch (err) {
            // A broker without sessions: the same request as a call, at once.
            if ((err as FabricError).code !== "UNIMPLEMENTED" || this.session.available) throw err;
          }
        }
        return await this.unary((c) => c.tasks.submitTasks.bind(c.tasks), request);
      } catch (err) {
        const fe = err as FabricError;
        if (!isRetryable(fe) || Date.now() > deadline || this.closed) throw err;
        this.log.debug({ attempt, code: fe.code }, "submit failed; retrying with the same idempotency key");
        // At most a second apart: a broker or NATS back after a restart is used within one.
        await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** attempt, 1_000)));
      }
    }
  }

  private remember(groupId: string, ids: readonly string[]): void {
    if (!groupId) return;
    const known = this.groups.get(groupId);
    if (known) {
      known.push(...ids);
      return;
    }
    if (this.groups.size >= MAX_REMEMBERED_GROUPS) {
      const oldest = this.groups.keys().next().value;
      if (oldest !== undefined) this.groups.delete(oldest);
    }
    this.groups.set(groupId, [...ids]);
  }

  /** A task's state and history (NOT_FOUND for unknown ids). */
  async getTask(taskId: string): Promise<TaskInfo> {
    const [info] = await this.getTasks([taskId]);
    if (!info) throw new FabricError("NOT_FOUND", `task ${taskId} not found`);
    return info;
  }

  /** Several tasks' states and histories, in the order asked. One unknown id fails the call with NOT_FOUND. */
  async getTasks(taskIds: readonly string[]): Promise<TaskInfo[]> {
    const tasks = await this.fetchTasks(taskIds, true);
    return tasks.map(toTaskInfo);
  }

  private async fetchTasks(taskIds: readonly string[], omitResults: boolean): Promise<Task[]> {
    this.assertOpen();
    if (taskIds.length === 0) return [];
    const byId = new Map<string, Task>();
    for (const ids of chunk([...new Set(taskIds)], this.options.submitChunkSize)) {
      const res = await this.unary((c) => c.tasks.getTasks.bind(c.tasks), {
        taskIds: ids,
        omitResults,
      });
      for (const t of res.tasks) byId.set(t.id, t);
    }
    return taskIds.map((id) => {
      const t = byId.get(id);
      if (!t) throw new FabricError("NOT_FOUND", `task ${id} not found`);
      return t;
    });
  }

  /**
   * A finished task's result. Throws {@link TaskPendingError} (FAILED_PRECONDITION) while it runs and
   * {@link TaskFailedError} if it failed, was cancelled or expired. Does not wait: see
   * {@link Client.waitForResult}.
   *
   * @example
   * ```ts
   * try {
   *   const value = await client.getResult<number>(taskId);
   * } catch (err) {
   *   if (err instanceof TaskPendingError) console.log("still", err.state);
   *   else throw err;
   * }
   * ```
   */
  async getResult<T = unknown>(taskId: string): Promise<T> {
    const [task] = await this.fetchTasks([taskId], false);
    const outcome = taskOutcome<T>(task!);
    if (outcome.ok) return outcome.value;
    throw outcome.error;
  }

  /**
   * The outcomes of many tasks, in the order asked, without waiting: each is a result, a
   * {@link TaskFailedError} or a {@link TaskPendingError}. A task's failure does not throw; an unknown
   * id fails the whole call with NOT_FOUND.
   */
  async getResults<T = unknown>(taskIds: readonly string[]): Promise<TaskOutcome<T>[]> {
    const tasks = await this.fetchTasks(taskIds, false);
    return tasks.map((t) => taskOutcome<T>(t));
  }

  /**
   * Waits for a task to finish and returns its result, or throws {@link TaskFailedError}. Waits on a
   * server stream (no polling) that survives broker restarts. On timeout throws DEADLINE_EXCEEDED
   * (the task keeps running).
   *
   * @example
   * ```ts
   * const value = await client.waitForResult<{ peaks: number[] }>(taskId, { timeoutMs: 120_000 });
   * ```
   */
  async waitForResult<T = unknown>(taskId: string, options: WaitOptions = {}): Promise<T> {
    for await (const outcome of this.results<T>([taskId], options)) {
      if (outcome.ok) return outcome.value;
      throw outcome.error;
    }
    // The stream ended without the task, which the broker does not do; ask once rather than hang.
    return this.getResult<T>(taskId);
  }

  /**
   * Yields each task once, as it finishes, in completion order: a list of task ids, or a whole
   * group. Built on a server stream that is re-opened transparently if it breaks. Failed tasks are
   * yielded (`ok: false`), not thrown; the iteration throws only if watching itself fails (timeout:
   * DEADLINE_EXCEEDED, unknown ids: NOT_FOUND, client closed: CANCELLED). Breaking out stops watching.
   *
   * For a group submitted through this client the SDK knows its tasks and re-opens a broken stream
   * by id; for any other group it re-watches the group and drops what it already yielded.
   *
   * @example
   * ```ts
   * for await (const o of client.results(taskIds, { timeoutMs: 600_000 })) {
   *   if (o.ok) console.log(o.taskId, o.value);
   *   else console.error(o.taskId, o.error.code, o.error.message);
   * }
   * ```
   */
  async *results<T = unknown>(
    target: readonly string[] | { readonly groupId: string },
    options: WaitOptions = {},
  ): AsyncGenerator<TaskOutcome<T>, void, undefined> {
    this.assertOpen();
    let watchTarget: WatchTarget;
    if (Array.isArray(target)) {
      const ids = target as readonly string[];
      if (ids.length === 0) return;
      watchTarget = { taskIds: ids };
    } else {
      const { groupId } = target as { readonly groupId: string };
      if (typeof groupId !== "string" || groupId === "") {
        throw new FabricError("INVALID_ARGUMENT", "results() needs task ids or a non-empty groupId");
      }
      const known = this.groups.get(groupId);
      watchTarget = known ? { groupId, knownTaskIds: [...known] } : { groupId };
    }
    const signal = options.signal
      ? AbortSignal.any([options.signal, this.closing.signal])
      : this.closing.signal;
    // A few ids (waiting for a task or a handful) ride the session: no call to set up. Larger
    // watches get a stream of their own, with its own flow control.
    const open = (request: WatchTasksRequest) =>
      this.session.available && request.groupId === "" && request.taskIds.length <= SESSION_WATCH_MAX_IDS
        ? this.session.watch(request)
        : this.stubs().tasks.watchTasks(request, this.md.clone());
    const stream = watchTasks(open, watchTarget, {
      chunkSize: this.options.submitChunkSize,
      timeoutMs: options.timeoutMs,
      signal,
      logger: this.log,
    });
    for await (const task of stream) yield taskOutcome<T>(task);
  }

  /**
   * A page of your tasks, newest first, filtered: follow `nextCursor` for the next page, or use
   * {@link Client.iterateTasks}.
   *
   * @example
   * ```ts
   * const { tasks } = await client.listTasks({ states: ["failed"], limit: 20 });
   * ```
   */
  async listTasks(options: ListTasksOptions = {}): Promise<TaskPage> {
    const states = (options.states ?? []).map((name) => {
      const s = taskStateOf(name);
      if (s === undefined) throw new FabricError("INVALID_ARGUMENT", `states: ${name} is not a task state`);
      return s;
    });
    const res = await this.unary((c) => c.tasks.listTasks.bind(c.tasks), {
      states,
      functionId: options.functionId ?? "",
      endpointId: options.endpointId ?? "",
      groupId: options.groupId ?? "",
      createdAfterMs: options.createdAfter?.getTime() ?? 0,
      createdBeforeMs: options.createdBefore?.getTime() ?? 0,
      limit: options.limit ?? 0,
      cursor: options.cursor ?? "",
    });
    return { tasks: res.tasks.map(toTaskSummary), nextCursor: res.nextCursor || undefined };
  }

  /** Every task {@link Client.listTasks} would list, page after page, newest first. */
  async *iterateTasks(options: Omit<ListTasksOptions, "cursor"> = {}): AsyncIterable<TaskSummaryInfo> {
    let cursor: string | undefined;
    do {
      const page = await this.listTasks({ ...options, ...(cursor ? { cursor } : {}) });
      yield* page.tasks;
      cursor = page.nextCursor;
    } while (cursor);
  }

  /** Cancels tasks that have not finished; returns their states afterwards. Finished tasks are unchanged. */
  async cancel(taskIds: readonly string[]): Promise<TaskInfo[]> {
    this.assertOpen();
    const out: TaskInfo[] = [];
    for (const ids of chunk([...new Set(taskIds)], this.options.submitChunkSize)) {
      const res = await this.unary((c) => c.tasks.cancelTasks.bind(c.tasks), { taskIds: ids });
      out.push(...res.tasks.map(toTaskInfo));
    }
    return out;
  }

  /**
   * An {@link Executor}: call functions like local async functions, batched into few requests.
   *
   * @example
   * ```ts
   * const ex = client.executor({ endpointId });
   * const squares = await Promise.all([1, 2, 3].map((x) => ex.submit((n: number) => n * n, x)));
   * await ex.close();
   * ```
   */
  executor(options: ExecutorOptions): Executor {
    this.assertOpen();
    return new Executor(this, options);
  }

  /** Closes the connection; watches in progress end with CANCELLED, later calls fail with FAILED_PRECONDITION. */
  close(): void {
    if (this.closing.signal.aborted) return;
    this.closing.abort();
    this.session.close();
    for (const st of this.stubsOf) {
      st?.tasks.close();
      st?.endpoints.close();
      st?.functions.close();
    }
  }

  /** Whether {@link Client.close} was called. */
  get closed(): boolean {
    return this.closing.signal.aborted;
  }

  private assertOpen(): void {
    if (this.closing.signal.aborted) throw new FabricError("FAILED_PRECONDITION", "the client is closed");
  }

  /** The stubs of address `i`, made at its first use (one HTTP/2 connection for all three). */
  private stubsAt(i: number): Stubs {
    const made = this.stubsOf[i];
    if (made) return made;
    const { target, credentials } = this.channels[i]!;
    // A broker back after a restart is reconnected to within a few seconds, not grpc-js's
    // default of up to two minutes of backoff.
    const options = { ...clientOptions, "grpc.max_reconnect_backoff_ms": 5_000 };
    const functions = new FunctionServiceClient(target, credentials, options);
    const shared = { ...options, channelOverride: functions.getChannel() };
    const st: Stubs = {
      functions,
      endpoints: new EndpointServiceClient(target, credentials, shared),
      tasks: new TaskServiceClient(target, credentials, shared),
    };
    this.stubsOf[i] = st;
    return st;
  }

  /**
   * The stubs of the broker in use, for a stream: when its connection is failing and another
   * address's is not known to fail, that one is used from now on.
   */
  private stubs(): Stubs {
    const st = this.stubsAt(this.current);
    if (this.addresses.length === 1 || stateOf(st) !== grpc.connectivityState.TRANSIENT_FAILURE) return st;
    for (let k = 1; k < this.addresses.length; k++) {
      const i = (this.current + k) % this.addresses.length;
      if (stateOf(this.stubsAt(i)) !== grpc.connectivityState.TRANSIENT_FAILURE) {
        this.moveTo(i, "its connection fails");
        return this.stubsAt(i);
      }
    }
    return st;
  }

  private moveTo(i: number, why: string): void {
    this.log.warn({ from: this.addresses[this.current], to: this.addresses[i], why }, "using another broker");
    this.current = i;
  }

  /**
   * The stubs of a broker that accepts a connection: the one in use if it does within
   * `connectTimeoutMs`, else the next address that does. With one address, that one (its
   * calls wait and fail as grpc-js makes them).
   */
  private async connected(): Promise<Stubs> {
    if (this.addresses.length === 1) return this.stubsAt(0);
    for (let k = 0; k < this.addresses.length; k++) {
      const i = (this.current + k) % this.addresses.length;
      if (await becomesReady(this.stubsAt(i), this.options.connectTimeoutMs)) {
        if (i !== this.current) this.moveTo(i, `no connection to ${this.addresses[this.current]}`);
        return this.stubsAt(i);
      }
    }
    throw new FabricError(
      "UNAVAILABLE",
      `none of the brokers ${this.addresses.join(", ")} accepted a connection within ${this.options.connectTimeoutMs / 1000} s; check that one runs and the addresses you gave (FABRIC_BROKER, or \`fabric configure --broker\`)`,
    );
  }

  private async unary<Req, Res>(
    pick: (stubs: Stubs) => Parameters<typeof callUnary<Req, Res>>[0],
    request: Req,
  ): Promise<Res> {
    this.assertOpen();
    for (let tries = 1; ; tries++) {
      const st = await this.connected();
      try {
        // Metadata objects are not shared between calls: grpc-js may add to them.
        return await callUnary(pick(st), st.functions, request, this.md.clone(), {
          deadlineMs: this.options.callTimeoutMs,
        });
      } catch (err) {
        // The connection broke before the call went out (it never reached a broker): the next
        // address may take it. A broker's own answer is final.
        const lost =
          err instanceof FabricError &&
          err.code === "UNAVAILABLE" &&
          stateOf(st) !== grpc.connectivityState.READY &&
          tries < this.addresses.length;
        if (!lost) throw err;
      }
    }
  }
}

/** One broker address's stubs: its three services on one channel. */
interface Stubs {
  readonly functions: FunctionServiceClient;
  readonly endpoints: EndpointServiceClient;
  readonly tasks: TaskServiceClient;
}

function stateOf(st: Stubs): grpc.connectivityState {
  return st.functions.getChannel().getConnectivityState(false);
}

/**
 * Whether the channel of `st` is, or becomes within `timeoutMs`, connected. A connection refused
 * (or failing already) answers false at once; a blackholed address at the timeout.
 */
function becomesReady(st: Stubs, timeoutMs: number): Promise<boolean> {
  const channel = st.functions.getChannel();
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve) => {
    const check = () => {
      const state = channel.getConnectivityState(true);
      if (state === grpc.connectivityState.READY) return resolve(true);
      if (state === grpc.connectivityState.SHUTDOWN || state === grpc.connectivityState.TRANSIENT_FAILURE)
        return resolve(false);
      channel.watchConnectivityState(state, deadline, (err) => (err ? resolve(false) : check()));
    };
    check();
  });
}
