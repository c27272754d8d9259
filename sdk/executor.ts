// Calls remote functions like local async ones. Submissions made close together (the same tick, or
// within `batchWindowMs`) go out in one SubmitTasks call, so a loop of 10,000 `submit`s costs a
// couple of requests, not 10,000. All of an executor's tasks share one group. Each batch's
// results come back over its own WatchTasks stream (re-opened if it breaks): no polling.
import { FabricError, toFabricError, type ShellOutcome } from "../common/client.js";
import type { TaskInput } from "./codec.js";
import { BatchSubmitError } from "./errors.js";
import { sourceOfFunction } from "./function-source.js";
import type { JsSource } from "./function-source.js";
import type {
  AnyFunction,
  RegisterOptions,
  SubmittedBatch,
  TaskInfo,
  TaskOutcome,
  WaitOptions,
} from "./types.js";

/** What an executor needs of its {@link Client}: registering, submitting, watching and cancelling. */
export interface ExecutorHost {
  readonly options: { readonly submitChunkSize: number };
  registerFunction(fn: AnyFunction | JsSource, options?: RegisterOptions): Promise<string>;
  submitBatch(tasks: readonly TaskInput[], options?: { groupId?: string }): Promise<SubmittedBatch>;
  results<T = unknown>(
    target: readonly string[] | { readonly groupId: string },
    options?: WaitOptions,
  ): AsyncGenerator<TaskOutcome<T>, void, undefined>;
  cancel(taskIds: readonly string[]): Promise<TaskInfo[]>;
}

/** Options of {@link Client.executor}. */
export interface ExecutorOptions {
  /** Where every task of this executor runs. */
  readonly endpointId: string;
  /**
   * How long a submission waits for others to share its request, in milliseconds.
   * @default 2
   */
  readonly batchWindowMs?: number;
  /**
   * Most tasks in one request; a full batch is sent at once.
   * @default the client's `submitChunkSize`
   */
  readonly maxBatchSize?: number;
  /** Container image for the JS functions this executor registers. Default: the endpoint's default. */
  readonly containerImage?: string;
}

/** Options of {@link Executor.close}. */
export interface CloseOptions {
  /**
   * Cancel the tasks still running instead of letting them finish; their promises then reject with
   * a `TaskFailedError` (state "cancelled").
   * @default false
   */
  readonly cancel?: boolean;
}

interface Pending {
  readonly functionId: string | Promise<string>;
  readonly args: readonly unknown[];
  readonly kwargs: Readonly<Record<string, unknown>> | undefined;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: FabricError) => void;
  readonly settled: Promise<unknown>;
  taskId?: string;
}

/**
 * Runs functions on one endpoint and hands back promises of their results. Get one from
 * {@link Client.executor}. A JS function passed to `submit` is registered once (cached by its
 * source) and must be self-contained (see {@link Client.registerFunction}).
 *
 * `close()` stops new submissions, sends what is buffered, and waits until every submitted task
 * has settled its promise (with `{ cancel: true }`, cancels them first). It does not close the client.
 *
 * @example
 * ```ts
 * const ex = client.executor({ endpointId });
 * const results = await Promise.all(
 *   scans.map((scan) => ex.submit(async function reduce(path: string) {
 *     const { stat } = require("node:fs/promises");
 *     return (await stat(path)).size;
 *   }, scan)),
 * );
 * await ex.close();
 * ```
 */
export class Executor {
  /** Where this executor's tasks run. */
  readonly endpointId: string;
  private readonly client: ExecutorHost;
  private readonly windowMs: number;
  private readonly maxBatch: number;
  private readonly containerImage: string;
  private readonly fnIds = new Map<string, Promise<string>>();
  private readonly outstanding = new Set<Pending>();
  private buffer: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  // Batches are sent one after another so that every batch after the first joins its group.
  private sending: Promise<void> = Promise.resolve();
  private group = "";
  private closed = false;

  /** Use {@link Client.executor}. */
  constructor(client: ExecutorHost, options: ExecutorOptions) {
    if (typeof options?.endpointId !== "string" || options.endpointId === "") {
      throw new FabricError("INVALID_ARGUMENT", "an executor needs an endpointId");
    }
    const windowMs = options.batchWindowMs ?? 2;
    const maxBatch = options.maxBatchSize ?? client.options.submitChunkSize;
    if (!(windowMs >= 0)) throw new FabricError("INVALID_ARGUMENT", "batchWindowMs must be >= 0");
    if (!Number.isInteger(maxBatch) || maxBatch < 1) {
      throw new FabricError("INVALID_ARGUMENT", "maxBatchSize must be a whole number >= 1");
    }
    this.client = client;
    this.endpointId = options.endpointId;
    this.windowMs = windowMs;
    this.maxBatch = maxBatch;
    this.containerImage = options.containerImage ?? "";
  }

  /** The group all of this executor's tasks belong to; undefined before the first batch is accepted. */
  get groupId(): string | undefined {
    return this.group || undefined;
  }

  /** How many submissions have not settled yet. */
  get pending(): number {
    return this.outstanding.size;
  }

  /**
   * Runs `fn` (a JS function, registered on first use, or the id of a registered function) with
   * `args` on the executor's endpoint. Resolves with its result; rejects with `TaskFailedError` if
   * it fails, or another `FabricError` if it could not be submitted or followed.
   *
   * @example
   * ```ts
   * const sum = await ex.submit((a: number, b: number) => a + b, 1, 2);
   * const out = await ex.submit<string>(registeredFunctionId, "input.dat");
   * ```
   */
  submit<T = unknown>(fn: AnyFunction | string, ...args: unknown[]): Promise<T> {
    return this.enqueue(fn, args, undefined) as Promise<T>;
  }

  /**
   * Runs a registered shell function with `kwargs` filling its `{name}` placeholders. Resolves with
   * `{ exitCode, stdout, stderr }`; a non-zero exit rejects with `TaskFailedError` (reason
   * `shell_exit_nonzero`, the output in `error.shell`).
   *
   * @example
   * ```ts
   * const { stdout } = await ex.submitShell(wcId, { file: "/data/run-17.log" });
   * ```
   */
  submitShell(functionId: string, kwargs: Readonly<Record<string, unknown>> = {}): Promise<ShellOutcome> {
    return this.enqueue(functionId, [], kwargs) as Promise<ShellOutcome>;
  }

  private enqueue(
    fn: AnyFunction | string,
    args: readonly unknown[],
    kwargs: Readonly<Record<string, unknown>> | undefined,
  ): Promise<unknown> {
    if (this.closed) {
      return Promise.reject(new FabricError("FAILED_PRECONDITION", "the executor is closed"));
    }
    let functionId: string | Promise<string>;
    try {
      functionId = this.functionIdOf(fn);
    } catch (err) {
      return Promise.reject(toFabricError(err));
    }
    let resolve!: (value: unknown) => void;
    let reject!: (err: FabricError) => void;
    const settled = new Promise<unknown>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const entry: Pending = { functionId, args, kwargs, resolve, reject, settled };
    this.outstanding.add(entry);
    // Whatever happens to the caller's promise, the executor forgets the entry once it settles.
    settled.then(
      () => this.outstanding.delete(entry),
      () => this.outstanding.delete(entry),
    );
    this.buffer.push(entry);
    if (this.buffer.length >= this.maxBatch) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.windowMs);
    return settled;
  }

  private functionIdOf(fn: AnyFunction | string): string | Promise<string> {
    if (typeof fn === "string") {
      if (fn === "") throw new FabricError("INVALID_ARGUMENT", "function id must not be empty");
      return fn;
    }
    const js = sourceOfFunction(fn);
    const key = `${js.entryPoint}\u0000${this.containerImage}\u0000${js.source}`;
    let id = this.fnIds.get(key);
    if (!id) {
      id = this.client.registerFunction(
        { source: js.source, entryPoint: js.entryPoint },
        { name: js.entryPoint, containerImage: this.containerImage },
      );
      // A failed registration is not cached: the next submit tries again.
      id.catch(() => this.fnIds.delete(key));
      this.fnIds.set(key, id);
    }
    return id;
  }

  private flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.buffer.length > 0) {
      const batch = this.buffer.splice(0, this.maxBatch);
      this.sending = this.sending.then(() => this.send(batch));
    }
  }

  private async send(batch: Pending[]): Promise<void> {
    // Resolve function ids first; an entry whose registration failed fails alone.
    const ready: Pending[] = [];
    const inputs: TaskInput[] = [];
    for (const entry of batch) {
      try {
        const functionId = await entry.functionId;
        inputs.push({
          functionId,
          endpointId: this.endpointId,
          args: entry.args,
          ...(entry.kwargs ? { kwargs: entry.kwargs } : {}),
        });
        ready.push(entry);
      } catch (err) {
        entry.reject(toFabricError(err));
      }
    }
    if (ready.length === 0) return;
    let accepted: Pending[] = ready;
    let taskIds: readonly string[];
    try {
      const res = await this.client.submitBatch(inputs, this.group ? { groupId: this.group } : {});
      this.group ||= res.groupId;
      taskIds = res.taskIds;
    } catch (err) {
      if (err instanceof BatchSubmitError) {
        this.group ||= err.groupId;
        taskIds = err.taskIds;
        accepted = ready.slice(0, taskIds.length);
        for (const entry of ready.slice(taskIds.length)) entry.reject(err);
      } else {
        for (const entry of ready) entry.reject(toFabricError(err));
        return;
      }
    }
    const byId = new Map<string, Pending>();
    accepted.forEach((entry, i) => {
      const id = taskIds[i];
      if (id === undefined) {
        entry.reject(new FabricError("INTERNAL", "the broker accepted a task but returned no id for it"));
        return;
      }
      entry.taskId = id;
      byId.set(id, entry);
    });
    // Not awaited: the next batch is sent while this one's results stream in.
    void this.follow(byId);
  }

  private async follow(byId: Map<string, Pending>): Promise<void> {
    try {
      for await (const outcome of this.client.results([...byId.keys()])) {
        const entry = byId.get(outcome.taskId);
        if (!entry) continue;
        byId.delete(outcome.taskId);
        if (outcome.ok) entry.resolve(outcome.value);
        else entry.reject(outcome.error);
      }
      if (byId.size > 0) {
        throw new FabricError(
          "INTERNAL",
          `the broker ended the task stream before ${byId.size} task(s) finished`,
        );
      }
    } catch (err) {
      const e = toFabricError(err);
      for (const entry of byId.values()) entry.reject(e);
    }
  }

  /**
   * Stops accepting submissions, sends what is buffered, and waits until every submitted task has
   * settled its promise. With `{ cancel: true }` the unfinished tasks are cancelled first, so their
   * promises reject with `TaskFailedError` (state "cancelled"). Never rejects for a task's failure;
   * rejects only if the cancel request itself fails.
   */
  async close(options: CloseOptions = {}): Promise<void> {
    this.closed = true;
    this.flush();
    await this.sending;
    if (options.cancel) {
      const ids = [...this.outstanding].flatMap((e) => (e.taskId ? [e.taskId] : []));
      if (ids.length > 0) await this.client.cancel(ids);
    }
    await Promise.allSettled([...this.outstanding].map((e) => e.settled));
  }
}
