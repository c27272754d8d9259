/**
 * How tasks reach the agent: the durable pull consumer the broker made for this endpoint, pulled
 * in a window sized to the connected workers, and the control subject (cancellations, policy
 * changes). Every message is checked for a broker's MAC before anything else is read.
 */
import { setTimeout as sleep } from "node:timers/promises";

import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { Msg, NatsConnection } from "@nats-io/transport-node";

import { FabricError, type Logger } from "../../common/index.js";
import { EndpointControl, TaskMessage } from "../../proto/index.js";
import type { QueueSizer } from "./queue-sizing.js";

const FETCH_EXPIRES_MS = 5000;

/** Which of the endpoint's subjects a message came on (each has its own drop log). */
export type BrokerSubject = "task" | "control";

/** Options and callbacks of a {@link TaskIntake}. */
export interface TaskIntakeOptions {
  readonly log: Logger;
  readonly sizer: Pick<QueueSizer, "workerQueueDepth" | "prefetch">;
  /** Workers of the blocks started at start (at least one block): the prefetch's floor. */
  readonly blockWorkers: number;
  /** Whether a broker signed this message; if not, it was logged as dropped. */
  fromBroker(m: Pick<Msg, "subject" | "data" | "headers">, on: BrokerSubject): boolean;
  /** Workers of the connected managers. */
  workers(): number;
  /** Tasks the agent holds now. */
  held(): number;
  /** Whether pulling makes sense now (the agent runs and its NATS link is open). */
  canPull(): boolean;
  stopping(): boolean;
  throwIfStopping(): void;
  /** Whether the endpoint's policy lets this function run. */
  allows(functionId: string): boolean;
  /** A verified, decoded task message. */
  onTask(msg: JsMsg, task: TaskMessage): void;
  /** A signed task message the agent must fail without running it. */
  onRefused(taskId: string, msg: JsMsg, err: FabricError): void;
  /** The owners of these tasks cancelled them. */
  onCancel(taskIds: readonly string[]): void;
  /** The endpoint's allowed-functions list changed. */
  onAllowedFunctions(functionIds: readonly string[]): void;
  /** A fetch failed (the consumer may be gone: a newer agent took over). */
  onFetchFailed?(err: Error): void;
  noteError(message: string): void;
}

/** The task consumer, its pull window, and the control subject. */
export class TaskIntake {
  private consumer: Consumer | undefined;
  /** Tasks asked for in fetches still open. */
  private requested = 0;
  private readonly fetches = new Set<ConsumerMessages>();
  private pumpScheduled = false;
  private numPending = 0;

  constructor(private readonly o: TaskIntakeOptions) {}

  /** Tasks waiting in the endpoint's queue, as last read. */
  get queued(): number {
    return this.numPending;
  }

  /** Opens the broker-made consumer, retrying until it exists (or the agent stops). */
  async open(js: JetStreamClient, stream: string, name: string): Promise<void> {
    let delay = 500;
    for (;;) {
      this.o.throwIfStopping();
      try {
        this.consumer = await js.consumers.get(stream, name);
        return;
      } catch (err) {
        this.o.noteError(`task consumer ${stream}/${name}: ${(err as Error).message}`);
        this.o.log.warn(
          { stream, consumer: name, err: (err as Error).message, retryInMs: delay },
          "cannot open the task consumer; retrying",
        );
        await sleep(delay);
        delay = Math.min(delay * 2, 10_000);
      }
    }
  }

  /** Follows the broker's control messages (cancellations, policy changes) for this endpoint. */
  listenForControl(nc: NatsConnection, subject: string): void {
    nc.subscribe(subject, {
      callback: (err, m) => {
        if (err) {
          this.o.log.warn({ err: err.message }, "control subscription failed");
          return;
        }
        if (!this.o.fromBroker(m, "control")) return;
        let control: EndpointControl;
        try {
          control = EndpointControl.decode(m.data);
        } catch (e) {
          this.o.log.warn({ err: (e as Error).message }, "undecodable control message dropped");
          return;
        }
        if (control.cancelTaskIds.length > 0) this.o.onCancel(control.cancelTaskIds);
        if (control.allowedFunctions) this.o.onAllowedFunctions(control.allowedFunctions.functionIds);
      },
    });
  }

  /** Ends the open fetches (the agent is stopping). */
  close(): void {
    for (const f of this.fetches) void f.close();
  }

  /**
   * Ends the open fetches and asks anew (the link came back): a pull made before a disconnect
   * would otherwise hold the window until it expires, though the server forgot it.
   */
  refetch(): void {
    for (const f of this.fetches) void f.close();
    this.pump();
  }

  /** Reads how many tasks wait in the queue; rejects when the server will not say. */
  async readQueueLength(): Promise<void> {
    if (this.consumer) this.numPending = (await this.consumer.info(false)).num_pending;
  }

  /**
   * Tasks the agent may hold now: every worker busy plus `prefetch` waiting, minus what it holds.
   * Nothing is pulled while no manager is connected, so tasks stay in the queue for another agent
   * or for later rather than sitting un-started here.
   */
  private capacity(): number {
    const workers = this.o.workers();
    if (workers === 0) return 0;
    return this.window(workers) - this.o.held() - this.requested;
  }

  /** Tasks the agent may hold with `workers` connected: what they hold, plus the prefetch. */
  private window(workers: number): number {
    return (
      workers * this.o.sizer.workerQueueDepth() +
      this.o.sizer.prefetch(Math.max(workers, this.o.blockWorkers))
    );
  }

  /** Pulls more tasks if there is room; coalesced so a burst of completions makes one request. */
  pump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      if (this.o.stopping() || !this.o.canPull() || !this.consumer) return;
      const want = this.capacity();
      // Pull in batches: a request per finished task would cost more than the tasks. A quarter of
      // the window is enough to ask for, unless nothing at all is held or asked for.
      const window = this.window(this.o.workers());
      const idle = this.o.held() === 0 && this.requested === 0;
      if (want > 0 && (idle || want >= Math.max(1, Math.floor(window / 4)))) void this.fetchBatch(want);
    });
  }

  private async fetchBatch(n: number): Promise<void> {
    this.requested += n;
    let got = 0;
    let failed = false;
    try {
      const iter = await this.consumer!.fetch({ max_messages: n, expires: FETCH_EXPIRES_MS });
      this.fetches.add(iter);
      try {
        for await (const msg of iter) {
          got++;
          this.requested--;
          this.onTaskMessage(msg);
        }
      } finally {
        this.fetches.delete(iter);
      }
    } catch (err) {
      failed = true;
      if (!this.o.stopping()) {
        this.o.noteError(`fetching tasks: ${(err as Error).message}`);
        this.o.log.warn({ err: (err as Error).message }, "fetching tasks failed; retrying");
        this.o.onFetchFailed?.(err as Error);
      }
    } finally {
      this.requested -= n - got;
    }
    if (failed) await sleep(1000);
    this.pump();
  }

  private onTaskMessage(msg: JsMsg): void {
    // First of all: a message no broker signed is not a task, whatever it says, and names no task
    // we could report on (its id may be anyone's). Acked, not terminated: an ack removes it from
    // the work queue, where a terminated message stays stored (nats-server 2.9) until its max age.
    if (!this.o.fromBroker(msg, "task")) {
      msg.ack();
      return;
    }
    if (this.o.stopping()) {
      msg.nak();
      return;
    }
    let task: TaskMessage;
    try {
      task = TaskMessage.decode(msg.data);
      if (!task.taskId) throw new Error("it has no task id");
    } catch (err) {
      const taskId = msg.headers?.get("Nats-Msg-Id") ?? "";
      if (!taskId) {
        this.o.log.error(
          { seq: msg.seq, err: (err as Error).message },
          "undecodable task message without a task id; terminating it",
        );
        msg.term("undecodable task message");
        return;
      }
      this.o.log.error(
        { taskId, err: (err as Error).message },
        "undecodable task message; reporting it failed",
      );
      const undecodable = new FabricError(
        "INVALID_ARGUMENT",
        `the task message cannot be decoded: ${(err as Error).message}`,
        { reason: "invalid_task" },
      );
      this.o.onRefused(taskId, msg, undecodable);
      return;
    }
    if (!this.o.allows(task.functionId)) {
      // The broker checks this too; the agent does not trust a task message that slipped past it.
      const taskId = task.taskId;
      this.o.log.warn({ taskId, functionId: task.functionId }, "task of a function not allowed here refused");
      const refused = new FabricError(
        "PERMISSION_DENIED",
        `function ${task.functionId} is not in this endpoint's allowed-functions list`,
        { reason: "function_not_allowed" },
      );
      this.o.onRefused(taskId, msg, refused);
      return;
    }
    this.o.onTask(msg, task);
  }

  /**
   * Takes every task waiting in the queue (up to 1,000) and hands each signed one to `fail`: no
   * block could start for too long, and they must not wait forever.
   */
  async takeWaiting(fail: (taskId: string, msg: JsMsg) => void): Promise<void> {
    if (!this.consumer) return;
    try {
      const iter = await this.consumer.fetch({ max_messages: 1000, expires: 1000 });
      for await (const msg of iter) {
        if (!this.o.fromBroker(msg, "task")) {
          msg.ack(); // not a task (see onTaskMessage)
          continue;
        }
        let taskId = "";
        try {
          taskId = TaskMessage.decode(msg.data).taskId;
        } catch {
          // Named by its header below, or terminated.
        }
        taskId ||= msg.headers?.get("Nats-Msg-Id") ?? "";
        if (!taskId) {
          msg.term("undecodable task message");
          continue;
        }
        fail(taskId, msg);
      }
      this.numPending = 0;
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, "cannot fetch the waiting tasks to fail them");
    }
  }
}
