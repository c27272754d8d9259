import { type Logger, isTerminal } from "../../common/index.js";
import { TaskState, TaskUpdateBatch, type ErrorInfo, type TaskUpdate } from "../../proto/index.js";

/** Options of an {@link UpdatePublisher}. */
export interface UpdatePublisherOptions {
  readonly endpointId: string;
  /** Publishes one encoded TaskUpdateBatch of `count` updates and resolves once it is stored. */
  readonly publish: (bytes: Uint8Array, count: number) => Promise<void>;
  readonly log: Logger;
  /** Wait before publishing when no publish is in flight (0: once the current code has run). @default 0 */
  readonly flushDelayMs?: number;
  /** @default 500 */
  readonly maxUpdates?: number;
  /** Largest encoded batch (stay under the server's max_payload). @default 900000 */
  readonly maxBytes?: number;
  /**
   * How long a RUNNING update is held back: a task that finishes sooner sends one update instead of
   * two (one write fewer at the broker). Long tasks show as running this much later. @default 50
   */
  readonly startDelayMs?: number;
}

interface Entry {
  readonly update: TaskUpdate;
  readonly size: number;
  readonly onPublished: (() => void) | undefined;
}

/**
 * Batches task updates into TaskUpdateBatch messages. One publish is in flight at a time, so a
 * task's updates arrive in order; what arrives meanwhile waits and leaves in the next batch (up to
 * `maxUpdates` or `maxBytes`). When idle, an update leaves once the code that added it has run: low
 * latency when quiet, large batches under load. A task's RUNNING update still waiting when its
 * terminal update arrives is folded into it (`startedAtMs`), saving a write at the broker. `onPublished` runs only after the PubAck: that is when the agent may
 * ack the task message. A failed publish is retried (with backoff) until it succeeds or the
 * publisher is abandoned, never dropped.
 */
export class UpdatePublisher {
  private queue: Entry[] = [];
  /** RUNNING updates in `queue`, by task id: a terminal update arriving before they leave absorbs them. */
  private readonly queuedRunning = new Map<string, Entry>();
  /** RUNNING updates held back (see `startDelayMs`), by task id. */
  private readonly held = new Map<string, { entry: Entry; timer: NodeJS.Timeout }>();
  private readonly startDelayMs: number;
  private timer: NodeJS.Timeout | undefined;
  private microtask = false;
  private running: Promise<void> | undefined;
  private abandoned = false;
  private readonly flushDelayMs: number;
  private readonly maxUpdates: number;
  private readonly maxBytes: number;
  /** The last publish error, for status reports. */
  lastError = "";

  constructor(private readonly opts: UpdatePublisherOptions) {
    this.flushDelayMs = opts.flushDelayMs ?? 0;
    this.maxUpdates = opts.maxUpdates ?? 500;
    this.maxBytes = opts.maxBytes ?? 900_000;
    this.startDelayMs = opts.startDelayMs ?? 50;
  }

  /** Updates waiting to be published. */
  get pending(): number {
    return this.queue.length + this.held.size;
  }

  /** Queues an update; `onPublished` runs once the stream has it. */
  add(update: TaskUpdate, onPublished?: () => void): void {
    // +8 covers the field tag and length prefix inside the batch.
    if (update.state === TaskState.TASK_STATE_RUNNING && this.startDelayMs > 0) {
      this.release(update.taskId); // an earlier RUNNING of the same task (a retry) goes first
      const entry: Entry = { update, size: 0, onPublished };
      const timer = setTimeout(() => this.release(update.taskId), this.startDelayMs);
      this.held.set(update.taskId, { entry, timer });
      return;
    }
    const held = this.held.get(update.taskId);
    if (held && isTerminal(update.state)) {
      this.held.delete(update.taskId);
      clearTimeout(held.timer);
      update = { ...update, startedAtMs: held.entry.update.atMs, startedBy: held.entry.update.actor };
      held.entry.onPublished?.();
    } else if (held) {
      this.release(update.taskId);
    }
    if (isTerminal(update.state) && this.queuedRunning.size > 0) {
      const running = this.queuedRunning.get(update.taskId);
      const i = running ? this.queue.indexOf(running) : -1;
      if (running && i >= 0) {
        this.queue.splice(i, 1);
        this.queuedRunning.delete(update.taskId);
        update = { ...update, startedAtMs: running.update.atMs, startedBy: running.update.actor };
        running.onPublished?.();
      }
    }
    const entry = { update, size: encodedSizeBound(update), onPublished };
    this.queue.push(entry);
    if (update.state === TaskState.TASK_STATE_RUNNING) this.queuedRunning.set(update.taskId, entry);
    this.kick(this.queue.length >= this.maxUpdates ? 0 : this.flushDelayMs);
  }

  /** Moves a held RUNNING update into the queue. */
  private release(taskId: string): void {
    const held = this.held.get(taskId);
    if (!held) return;
    this.held.delete(taskId);
    clearTimeout(held.timer);
    const { update, onPublished } = held.entry;
    const entry = { update, size: encodedSizeBound(update), onPublished };
    this.queue.push(entry);
    this.queuedRunning.set(taskId, entry);
    this.kick(this.flushDelayMs);
  }

  /** Resolves when everything queued so far has been published. */
  async flush(): Promise<void> {
    for (const taskId of [...this.held.keys()]) this.release(taskId);
    while (this.queue.length > 0 || this.running) {
      this.kick(-1);
      await this.running;
    }
  }

  /**
   * The link came back: a retry's backoff ends now, and a publish sent before (whose answer the
   * restarted server may never send) is given up after `graceMs` and sent again. Sending a batch
   * twice is harmless: brokers record each update once.
   */
  retryNow(graceMs = 300): void {
    this.wake?.();
    const attempt = this.attempt;
    if (!attempt) return;
    setTimeout(() => {
      if (this.attempt === attempt) attempt.interrupt();
    }, graceMs).unref();
  }

  private wake: (() => void) | undefined;
  /** The publish in flight, if any. */
  private attempt: { interrupt(): void } | undefined;

  /** One publish of `bytes`, which {@link retryNow} may give up. */
  private publishOnce(bytes: Uint8Array, count: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const attempt = {
        interrupt: () => reject(new Error("no answer from before the link to NATS came back; sending again")),
      };
      this.attempt = attempt;
      this.opts.publish(bytes, count).then(resolve, reject);
    }).finally(() => (this.attempt = undefined));
  }

  /** Stops retrying: what is still queued is left unpublished (its tasks stay un-acked). */
  abandon(): void {
    this.abandoned = true;
    clearTimeout(this.timer);
    for (const { timer } of this.held.values()) clearTimeout(timer);
  }

  private kick(delayMs: number): void {
    if (this.running || this.abandoned) return;
    if (delayMs < 0) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.running = this.drain().finally(() => {
        this.running = undefined;
        // Whatever queued up during the publish leaves at once, as the next batch.
        if (this.queue.length > 0) this.kick(-1);
      });
    } else if (delayMs === 0) {
      // After the current run of code: the updates added with this one (a frame of outcomes)
      // leave together, without waiting for the event loop's next turn.
      if (this.microtask) return;
      this.microtask = true;
      queueMicrotask(() => {
        this.microtask = false;
        this.kick(-1);
      });
    } else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.kick(-1);
      }, delayMs);
    }
  }

  private takeBatch(): Entry[] {
    let bytes = 64;
    let n = 0;
    while (n < this.queue.length && n < this.maxUpdates) {
      const size = this.queue[n]!.size;
      // Always take at least one, even if oversized: the caller sized it, and stalling is worse.
      if (n > 0 && bytes + size > this.maxBytes) break;
      bytes += size;
      n++;
    }
    const batch = this.queue.splice(0, n);
    if (this.queuedRunning.size > 0)
      for (const e of batch)
        if (this.queuedRunning.get(e.update.taskId) === e) this.queuedRunning.delete(e.update.taskId);
    return batch;
  }

  private async drain(): Promise<void> {
    let backoffMs = 100;
    while (this.queue.length > 0 && !this.abandoned) {
      const batch = this.takeBatch();
      const bytes = TaskUpdateBatch.encode({
        endpointId: this.opts.endpointId,
        updates: batch.map((e) => e.update),
      }).finish();
      for (;;) {
        try {
          await this.publishOnce(bytes, batch.length);
          this.lastError = "";
          backoffMs = 100;
          break;
        } catch (err) {
          this.lastError = `cannot publish task updates: ${(err as Error).message}`;
          this.opts.log.warn(
            { err: (err as Error).message, updates: batch.length, retryInMs: backoffMs },
            "publishing task updates failed; retrying",
          );
          if (this.abandoned) {
            this.queue.unshift(...batch);
            return;
          }
          const woken = await new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(false), backoffMs);
            this.wake = () => {
              clearTimeout(timer);
              resolve(true);
            };
          });
          this.wake = undefined;
          backoffMs = woken ? 100 : Math.min(backoffMs * 2, 5000);
        }
      }
      for (const e of batch) {
        try {
          e.onPublished?.();
        } catch (err) {
          this.opts.log.error({ err, taskId: e.update.taskId }, "after-publish hook failed");
        }
      }
    }
  }
}

/**
 * An upper bound of an update's encoded size inside a batch, without encoding it: every field's
 * bytes plus generous room for tags, lengths and numbers. Strings count as UTF-8.
 */
export function encodedSizeBound(u: TaskUpdate): number {
  const str = (x: string) => (x.length === 0 ? 0 : Buffer.byteLength(x) + 6);
  let n = 96 + str(u.taskId) + str(u.actor) + str(u.detail) + str(u.startedBy);
  if (u.result) n += u.result.json.length + str(u.result.objectRef) + 24;
  if (u.error) n += errorSizeBound(u.error);
  if (u.output) n += 12 + str(u.output.stdout) + str(u.output.stderr);
  return n;
}

function errorSizeBound(e: ErrorInfo): number {
  const str = (x: string) => (x.length === 0 ? 0 : Buffer.byteLength(x) + 6);
  let n = 24 + str(e.code) + str(e.message) + str(e.reason);
  if (e.remote) n += 18 + str(e.remote.type) + str(e.remote.message) + str(e.remote.stack);
  if (e.shell) n += 30 + str(e.shell.stdout) + str(e.shell.stderr) + str(e.shell.signal);
  return n;
}
