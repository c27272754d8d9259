// Following tasks to their terminal state over WatchTasks, surviving broken streams.
//
// The broker sends each watched task once, when it finishes, and ends the stream when all have
// been sent. A broker restart breaks the stream (UNAVAILABLE, CANCELLED, INTERNAL, ...); the
// watcher then re-opens it for the ids it has not received yet, with backoff, so callers never
// poll. Ids are watched in lanes of at most `chunkSize` per stream, so one request stays within
// the broker's batch limit however many tasks are watched.
import type { Logger } from "pino";

import { FabricError, isRetryable, fromGrpcError, type LongTimer, setLongTimeout } from "../common/client.js";
import type { Task, WatchTasksRequest } from "../proto/index.js";
import { chunk } from "./codec.js";

/** The part of a gRPC server stream the watcher uses (grpc-js's ClientReadableStream fits). */
export interface WatchStream {
  on(
    event: "data",
    listener: (msg: { task?: Task | undefined; tasks?: Task[] | undefined }) => void,
  ): unknown;
  on(event: "metadata", listener: () => void): unknown;
  on(event: "error", listener: (err: unknown) => void): unknown;
  on(event: "end", listener: () => void): unknown;
  cancel(): void;
  pause(): unknown;
  resume(): unknown;
}

/** Opens one WatchTasks stream. */
export type OpenWatch = (request: WatchTasksRequest) => WatchStream;

/** What to watch: a list of task ids, or a group (optionally with the ids known to be in it). */
export type WatchTarget =
  | { readonly taskIds: readonly string[] }
  | { readonly groupId: string; readonly knownTaskIds?: readonly string[] };

/** How the watcher behaves. */
export interface WatchOptions {
  /** Most ids in one WatchTasks request. */
  readonly chunkSize: number;
  /** Give up (DEADLINE_EXCEEDED) after this long. Default: no limit. */
  readonly timeoutMs?: number | undefined;
  /** Stop (CANCELLED) when this aborts. */
  readonly signal?: AbortSignal | undefined;
  /** First delay before re-opening a broken stream; doubles up to `maxBackoffMs`. */
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /**
   * Give up (UNAVAILABLE) when streams keep failing for this long without a message getting
   * through. Default 5 minutes: long enough for a broker restart or failover.
   */
  readonly reconnectWindowMs?: number;
  readonly logger?: Logger | undefined;
}

/** Whether a stream that failed with this error should be re-opened. */
export function shouldReconnect(err: FabricError): boolean {
  // A broker that went away or restarts ends a stream with one of these; anything else (NOT_FOUND,
  // UNAUTHENTICATED, INVALID_ARGUMENT, ...) is the answer and is not retried.
  return isRetryable(err);
}

/** The delay before re-open attempt `attempt` (0-based): exponential with jitter, capped. */
export function backoffDelay(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random = Math.random,
): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  // Jitter spreads the reconnects of many clients after a broker restart.
  return Math.round(base / 2 + (random() * base) / 2);
}

// Stop reading from the broker while this many finished tasks wait for the consumer.
const HIGH_WATER = 1024;

/**
 * Yields each watched task once, when it reaches a terminal state. Ends when all have been seen
 * (for a group: when the broker says so). Throws a FabricError for a non-retryable stream error,
 * on timeout (DEADLINE_EXCEEDED), on abort (CANCELLED), or when reconnecting keeps failing.
 * Breaking out of the loop cancels the streams.
 */
export async function* watchTasks(
  open: OpenWatch,
  target: WatchTarget,
  options: WatchOptions,
): AsyncGenerator<Task> {
  const initialBackoffMs = options.initialBackoffMs ?? 100;
  const maxBackoffMs = options.maxBackoffMs ?? 5_000;
  const reconnectWindowMs = options.reconnectWindowMs ?? 5 * 60_000;
  const log = options.logger;

  const seen = new Set<string>();
  const queue: Task[] = [];
  let failure: FabricError | undefined;
  let lanesLeft = 0;
  let wake: (() => void) | undefined;
  let stopped = false;
  /** Open streams, with the ids each lane waits for (undefined: a whole group, ids unknown). */
  const live = new Map<WatchStream, readonly string[] | undefined>();
  const timers = new Set<NodeJS.Timeout>();
  let paused = false;

  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const stop = (err?: FabricError) => {
    if (err && !failure) failure = err;
    stopped = true;
    for (const s of live.keys()) s.cancel();
    live.clear();
    for (const t of timers) clearTimeout(t);
    timers.clear();
    notify();
  };
  const deliver = (task: Task) => {
    if (seen.has(task.id)) return; // a re-opened stream may resend what we already have
    seen.add(task.id);
    queue.push(task);
    if (queue.length >= HIGH_WATER && !paused) {
      paused = true;
      for (const s of live.keys()) s.pause();
    }
    notify();
  };

  // One lane: a stream kept open until its ids are all seen (or the broker ends it normally).
  const runLane = (initial: WatchTasksRequest, ids: readonly string[] | undefined) => {
    lanesLeft++;
    let attempt = 0;
    let failingSince: number | undefined;
    const finish = () => {
      lanesLeft--;
      notify();
    };
    const openOnce = (request: WatchTasksRequest) => {
      if (stopped) return finish();
      let settled = false;
      let stream: WatchStream;
      try {
        stream = open(request);
      } catch (err) {
        stop(fromGrpcError(err));
        return finish();
      }
      live.set(stream, ids);
      if (paused) stream.pause();
      const healthy = () => {
        attempt = 0;
        failingSince = undefined;
      };
      stream.on("metadata", healthy);
      stream.on("data", (msg) => {
        healthy();
        if (msg.task) deliver(msg.task);
        for (const t of msg.tasks ?? []) deliver(t);
      });
      stream.on("end", () => {
        if (settled) return;
        settled = true;
        live.delete(stream);
        finish();
      });
      stream.on("error", (raw) => {
        if (settled) return;
        settled = true;
        live.delete(stream);
        if (stopped) return finish();
        const err = fromGrpcError(raw);
        const remaining = ids?.filter((id) => !seen.has(id));
        if (remaining && remaining.length === 0) return finish();
        const now = Date.now();
        failingSince ??= now;
        if (!shouldReconnect(err)) {
          stop(err);
          return finish();
        }
        if (now - failingSince > reconnectWindowMs) {
          stop(
            new FabricError(
              "UNAVAILABLE",
              `lost the task stream and could not re-open it for ${Math.round(reconnectWindowMs / 1000)} s: ${err.message}`,
              { cause: err },
            ),
          );
          return finish();
        }
        const delay = backoffDelay(attempt++, initialBackoffMs, maxBackoffMs);
        log?.debug(
          { code: err.code, delayMs: delay, remaining: remaining?.length },
          "re-opening task stream",
        );
        const timer = setTimeout(() => {
          timers.delete(timer);
          // By id list when we know the ids; a group we know nothing about is re-watched whole,
          // and what was already seen is dropped by `deliver`.
          openOnce(remaining ? { taskIds: remaining, groupId: "" } : request);
        }, delay);
        timers.add(timer);
      });
    };
    openOnce(initial);
  };

  let deadline: LongTimer | undefined;
  const onAbort = () => stop(new FabricError("CANCELLED", "stopped watching tasks: the watch was aborted"));
  try {
    if (options.signal?.aborted)
      throw new FabricError("CANCELLED", "stopped watching tasks: the watch was aborted");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.timeoutMs !== undefined) {
      const ms = options.timeoutMs;
      // The caller's timeout may exceed setTimeout's 24.8-day limit (which would fire at once).
      deadline = setLongTimeout(() => {
        stop(new FabricError("DEADLINE_EXCEEDED", `tasks did not finish within ${ms} ms`));
      }, ms);
    }

    if ("taskIds" in target) {
      const unique = [...new Set(target.taskIds)];
      for (const ids of chunk(unique, options.chunkSize)) runLane({ taskIds: ids, groupId: "" }, ids);
    } else if (target.knownTaskIds && target.knownTaskIds.length > 0) {
      // Start from the group (the broker's authoritative membership); if the stream breaks,
      // re-open by the ids we know are in it.
      runLane({ taskIds: [], groupId: target.groupId }, [...new Set(target.knownTaskIds)]);
    } else {
      runLane({ taskIds: [], groupId: target.groupId }, undefined);
    }

    for (;;) {
      const next = queue.shift();
      if (next) {
        if (paused && queue.length < HIGH_WATER / 2) {
          paused = false;
          for (const s of live.keys()) s.resume();
        }
        yield next;
        continue;
      }
      if (failure) throw failure;
      if (lanesLeft === 0 || stopped) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    deadline?.clear();
    options.signal?.removeEventListener("abort", onAbort);
    stopped = true;
    for (const [s, ids] of live) {
      if (ids && ids.every((id) => seen.has(id))) {
        // Everything it carries arrived (the caller stopped at its last task): the broker ends
        // it now. Cancelling would send an RST_STREAM, and HTTP/2 servers close a connection
        // that receives too many of them (rapid-reset protection: about 1,000 in a burst, then
        // 33/s), which failed every call of a client that waited for tasks one by one.
        s.resume();
        const t = setTimeout(() => s.cancel(), COMPLETE_STREAM_END_MS);
        t.unref();
        const done = () => clearTimeout(t);
        s.on("end", done);
        s.on("error", done);
      } else {
        s.cancel();
      }
    }
    for (const t of timers) clearTimeout(t);
  }
}

/** How long a stream whose tasks have all arrived may take to end before it is cancelled. */
const COMPLETE_STREAM_END_MS = 5_000;
