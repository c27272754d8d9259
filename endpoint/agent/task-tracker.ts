/**
 * The tasks this agent holds, from the message that brought each one to the update that ends it.
 *
 * The rule that keeps tasks safe lives here: a task message is acked only after the PubAck of
 * the update carrying its terminal state ({@link TaskTracker.finish}: the ack runs in the update's
 * `onPublished`). Until then the task stays in the in-flight table, whose deliveries
 * {@link TaskTracker.extendDeliveries} keeps alive with `working()`; if the agent dies, the
 * broker's consumer hands the task out again. Every other way out of the table gives the message
 * back (nak), never acks it.
 *
 * A task's phases: `resolving` (its payload is read, from the object store if it is large),
 * `queued` (waiting for a manager with room), `dispatched` (sent to a manager), `running` (its
 * manager said it started), `reporting` (its terminal update is on its way).
 */
import { setTimeout as sleep } from "node:timers/promises";

import type { JsMsg } from "@nats-io/jetstream";

import {
  Bus,
  FabricError,
  errorToInfo,
  toFabricError,
  type Logger,
  fitsInline,
  inlineBytes,
  inlinePayload,
  isStored,
  isTerminal,
  storedPayload,
} from "../../common/index.js";
import { TaskState } from "../../proto/index.js";
import type {
  CheckedTask,
  ErrorInfo,
  Payload,
  TaskMessage,
  TaskStarted,
  TaskUpdate,
  WorkItem,
  WorkOutcome,
} from "../../proto/index.js";
import type { QueueSizer } from "./queue-sizing.js";
import {
  cancelledUpdate,
  errorUpdate,
  lostRunUpdate,
  failedUpdate,
  fitError,
  fitOutput,
  retryDelayMs,
  retryDetail,
  retryingUpdate,
  startedUpdate,
  successUpdate,
  withStart,
} from "./task-updates.js";
import type { UpdateHead } from "./task-updates.js";

/** One delivery of a task message: what the tracker acks, keeps alive or gives back. */
export type Delivery = Pick<JsMsg, "ack" | "nak" | "working"> & {
  readonly info?: { readonly deliveryCount: number; readonly timestampNanos?: number };
};

/** What brokers answered to a task check: each task's record, and whether this agent was fenced. */
export interface TaskCheckAnswer {
  readonly tasks: ReadonlyMap<string, CheckedTask>;
  /** A newer agent took this endpoint over (its task consumer is another now). */
  readonly fenced: boolean;
}

/** How the tracker learns what is recorded of tasks it may have seen before (see TaskChecks). */
export interface TaskChecks {
  /**
   * Whether a delivery may be of a task that ran, or finished, before: redelivered, or queued
   * before this agent's current connection to NATS began.
   */
  suspect(msg: Delivery): boolean;
  /** The brokers' answer; undefined when none came (the tasks then run). */
  ask(taskIds: readonly string[]): Promise<TaskCheckAnswer | undefined>;
}

/** A connected manager, as the tracker uses it (a ManagerConnection). */
export interface TaskManager {
  readonly managerId: string;
  readonly blockId: string;
  /** Room for more tasks, by the agent's count. */
  readonly idle: number;
  /** Tasks sent to it and not yet reported back; the tracker keeps it up to date. */
  readonly assigned: Set<string>;
  sendWork(items: readonly WorkItem[]): void;
  cancelTasks(taskIds: readonly string[]): void;
}

/** Where the tracker's updates go: `onPublished` runs once the update is stored. */
export interface UpdateSink {
  add(update: TaskUpdate, onPublished?: () => void): void;
}

/** The endpoint's payload object store. */
export interface PayloadStore {
  /** An object's bytes; null when it does not exist. Rejects when the store cannot be reached. */
  read(objectRef: string): Promise<Uint8Array | null>;
  write(name: string, bytes: Uint8Array): Promise<void>;
  /** Largest result that travels inline in its update. */
  readonly inlineLimit: number;
}

/** Options and callbacks of a {@link TaskTracker}. */
export interface TaskTrackerOptions {
  readonly log: Logger;
  /** Actor of what the agent decides itself: `endpoint/<id>`. */
  readonly actor: string;
  readonly maxResultBytes: number;
  /** Times a task whose worker was lost runs again (`provider.retriesOnBlockLoss`). */
  readonly retriesOnBlockLoss: number;
  readonly updates: UpdateSink;
  readonly payloads: PayloadStore;
  readonly sizer: Pick<QueueSizer, "observe" | "observeRunning">;
  /** Checks of suspect deliveries; without it every delivery runs. */
  readonly checks?: TaskChecks;
  /** A task check said a newer agent took the endpoint over: this one must stop. */
  onFenced?(): void;
  /** Connected managers. */
  managers(): Iterable<TaskManager>;
  /** Whether a manager takes new tasks (its block is not draining). */
  takesWork(m: TaskManager): boolean;
  /** Room for more tasks appeared (a task left the table): pull more. */
  onRoom(): void;
  noteError(message: string): void;
  stopping(): boolean;
}

/** Where one task is in the agent. */
export type Phase = "resolving" | "queued" | "dispatched" | "running" | "reporting";

interface InFlightTask {
  readonly taskId: string;
  /** The newest delivery of the task message: the one to ack, extend or nak. */
  msg: Delivery;
  phase: Phase;
  item: WorkItem | undefined;
  manager: TaskManager | undefined;
  attempt: number;
  /** When this agent took the task. */
  readonly heldSinceMs: number;
}

/** Ids remembered as done or cancelled, newest kept. */
const RECENT_LIMIT = 10_000;

function remember(set: Set<string>, id: string): void {
  set.add(id);
  if (set.size > RECENT_LIMIT) set.delete(set.values().next().value!);
}

/** The in-flight table and every phase of a task; see the file's header for the acking rule. */
export class TaskTracker {
  private readonly inflight = new Map<string, InFlightTask>();
  /** Tasks resolved and waiting for a manager with room, in arrival order. */
  private readonly ready: InFlightTask[] = [];
  /** Tasks whose terminal update was stored: a late redelivery is acked without running. */
  private readonly recentlyDone = new Set<string>();
  /** Tasks cancelled by their owners before they reached this agent: dropped on arrival. */
  private readonly cancelledIds = new Set<string>();
  private dispatchScheduled = false;
  /** Suspect deliveries waiting for the next task check, in arrival order. */
  private toCheck: { t: InFlightTask; task: TaskMessage }[] = [];
  private checkScheduled = false;
  private skipped = 0;

  constructor(private readonly o: TaskTrackerOptions) {}

  /** Deliveries of tasks whose outcome was recorded already, acked without running them. */
  get skippedFinished(): number {
    return this.skipped;
  }

  /** Tasks held (in any phase). */
  get size(): number {
    return this.inflight.size;
  }

  /** Tasks a manager said are running. */
  get running(): number {
    let n = 0;
    for (const t of this.inflight.values()) if (t.phase === "running") n++;
    return n;
  }

  /** The phase of a task held here, if it is. */
  phaseOf(taskId: string): Phase | undefined {
    return this.inflight.get(taskId)?.phase;
  }

  /** Whether a task is resolving, dispatched or running: what a stopping agent waits for. */
  hasActiveTasks(): boolean {
    for (const t of this.inflight.values())
      if (t.phase === "dispatched" || t.phase === "running" || t.phase === "resolving") return true;
    return false;
  }

  /**
   * A verified, decoded task message. Returns true when it is a task new here (tracked and being
   * prepared); a redelivery, a cancelled or a finished task is settled at once.
   */
  receive(msg: Delivery, task: TaskMessage): boolean {
    const taskId = task.taskId;
    const existing = this.inflight.get(taskId);
    if (existing) {
      // A redelivery of a task we already hold (our working() came too late, or NATS reconnected):
      // keep the newest handle so the final ack lands, and do not run it twice.
      existing.msg = msg;
      this.o.log.debug({ taskId }, "redelivered task already in flight");
      return false;
    }
    if (this.cancelledIds.has(taskId)) {
      // Cancelled while queued: the broker recorded it already; only the message is left.
      this.cancelledIds.delete(taskId);
      msg.ack();
      return false;
    }
    const doneHere = this.recentlyDone.has(taskId);
    if (doneHere && ((msg.info?.deliveryCount ?? 1) > 1 || !this.o.checks)) {
      // Its result was published; only the ack was lost.
      msg.ack();
      return false;
    }
    // A first delivery of a task finished here is a new queue entry for it: a broker queued it
    // again (its result was not recorded). Asked about, like any suspect delivery.
    if (doneHere) this.recentlyDone.delete(taskId);
    const t = this.track(taskId, msg);
    if (doneHere || this.o.checks?.suspect(msg)) {
      // It may have run, or finished, before: ask what is recorded of it before running it.
      this.toCheck.push({ t, task });
      this.scheduleCheck();
    } else {
      void this.prepare(t, task);
    }
    return true;
  }

  private scheduleCheck(): void {
    if (this.checkScheduled) return;
    this.checkScheduled = true;
    // After the current fetch's burst of messages: one check for all of them.
    setImmediate(() => {
      this.checkScheduled = false;
      void this.checkSuspects();
    });
  }

  /**
   * Asks what is recorded of the suspect deliveries: a task whose outcome is recorded is acked and
   * not run again; one with a recorded run that did not end runs as the next attempt, and that lost
   * run goes into its history. Without an answer, every one of them runs (a task run twice beats
   * a task lost).
   */
  private async checkSuspects(): Promise<void> {
    const batch = this.toCheck;
    this.toCheck = [];
    if (batch.length === 0) return;
    const answer = await this.o.checks!.ask(batch.map((b) => b.t.taskId));
    if (answer?.fenced) this.o.onFenced?.();
    let finished = 0;
    for (const { t, task } of batch) {
      if (this.inflight.get(t.taskId) !== t || t.phase !== "resolving") continue; // cancelled or given back meanwhile
      if (this.o.stopping() || answer?.fenced) {
        this.giveBack(t, answer?.fenced ? "another agent took this endpoint over" : "agent stopping");
        continue;
      }
      const rec = answer?.tasks.get(t.taskId);
      if (rec && isTerminal(rec.state)) {
        // NATS restored the message of a task acked before a crash, or it was cancelled while
        // this agent could not hear it: its outcome is recorded, it never runs again.
        this.inflight.delete(t.taskId);
        t.msg.ack();
        remember(this.recentlyDone, t.taskId);
        finished++;
        continue;
      }
      if (rec?.state === TaskState.TASK_STATE_RUNNING) {
        // A run was started and did not end (or ended in a retried failure). The delivery count
        // starts from 1 with each agent's consumer, so the record counts the runs.
        const delivered = t.attempt;
        t.attempt = Math.max(delivered, rec.attempts + 1);
        if (rec.attempts >= delivered) {
          const detail = `attempt ${rec.attempts} did not finish (its agent, worker or NATS was lost while it ran); attempt ${t.attempt} follows`;
          this.o.updates.add(lostRunUpdate(this.head(t.taskId, rec.attempts), detail));
        }
      } else if (rec) {
        t.attempt = Math.max(t.attempt, rec.attempts);
      }
      void this.prepare(t, task);
    }
    if (finished > 0) {
      this.skipped += finished;
      this.o.log.info(
        { tasks: finished },
        "deliveries of tasks whose outcome is recorded acked without running them again",
      );
      this.o.onRoom();
    }
  }

  /**
   * Asks what is recorded of every task held here for `heldForMs` or longer (all of them when the
   * link to NATS came back; the long-held ones now and then): a task whose record is terminal
   * (cancelled by its owner while this agent could not hear it, or failed by a broker) is dropped
   * if it waits and stopped if it runs.
   */
  async recheckHeld(heldForMs = 0): Promise<void> {
    if (!this.o.checks) return;
    const since = Date.now() - heldForMs;
    const ids = [...this.inflight.values()]
      .filter((t) => t.phase !== "reporting" && t.heldSinceMs <= since)
      .map((t) => t.taskId);
    if (ids.length === 0) return;
    const answer = await this.o.checks.ask(ids);
    if (!answer) return;
    if (answer.fenced) {
      this.o.onFenced?.();
      return;
    }
    const ended = ids.filter((id) => {
      const rec = answer.tasks.get(id);
      return rec !== undefined && isTerminal(rec.state);
    });
    if (ended.length > 0) {
      this.o.log.info({ tasks: ended.length }, "tasks that ended while NATS was unreachable are stopped");
      this.cancel(ended);
    }
  }

  /** Fails a task message the agent will not run (undecodable, or a function not allowed here). */
  refuse(taskId: string, msg: Delivery, err: FabricError): void {
    this.finish(this.track(taskId, msg), errorUpdate(this.head(taskId, 1), err));
  }

  /**
   * Fails a task message taken from the queue without running it (no block could start); a task
   * held already only gets the newer delivery.
   */
  failDelivery(taskId: string, msg: Delivery, err: FabricError): void {
    const held = this.inflight.get(taskId);
    if (held) {
      held.msg = msg;
      return;
    }
    this.failTask(this.track(taskId, msg), err);
  }

  /** Fails every task waiting for a manager with `err`. */
  failQueued(err: FabricError): void {
    for (const t of this.ready.splice(0)) this.failTask(t, err);
  }

  /** Gives back every task waiting for a manager (the agent is stopping). */
  giveBackQueued(why: string): void {
    for (const t of this.ready.splice(0)) this.giveBack(t, why);
  }

  /** Gives back every task whose terminal update is not on its way yet (the agent is stopping). */
  giveBackUnreported(why: string): void {
    for (const t of [...this.inflight.values()]) if (t.phase !== "reporting") this.giveBack(t, why);
  }

  /** Extends every held delivery, so the bus does not hand it out again while the task runs. */
  extendDeliveries(): void {
    for (const t of this.inflight.values()) {
      try {
        t.msg.working();
      } catch (err) {
        this.o.log.debug({ taskId: t.taskId, err: (err as Error).message }, "cannot extend delivery");
      }
    }
  }

  private track(taskId: string, msg: Delivery): InFlightTask {
    const t: InFlightTask = {
      taskId,
      msg,
      phase: "resolving",
      item: undefined,
      manager: undefined,
      attempt: msg.info?.deliveryCount ?? 1,
      heldSinceMs: Date.now(),
    };
    this.inflight.set(taskId, t);
    return t;
  }

  private head(taskId: string, attempt: number, atMs = Date.now(), actor = this.o.actor): UpdateHead {
    return { taskId, attempt, atMs, actor };
  }

  // ---------------------------------------------------------------- prepare and dispatch

  private async resolvePayload(p: Payload | undefined, what: string): Promise<Buffer> {
    if (!isStored(p)) return inlineBytes(p);
    const data = await this.o.payloads.read(p.objectRef);
    if (data === null) {
      throw new FabricError(
        "INVALID_ARGUMENT",
        `the task's ${what} object ${p.objectRef} is missing from the payload store`,
        { reason: "invalid_task" },
      );
    }
    return Buffer.from(data);
  }

  private async prepare(t: InFlightTask, task: TaskMessage): Promise<void> {
    try {
      if (!task.function?.kind) {
        throw new FabricError("INVALID_ARGUMENT", "the task carries no function to run", {
          reason: "invalid_task",
        });
      }
      // Inline payloads (the common case) need no round trip: no await, no extra turn.
      const inline = !isStored(task.args) && !isStored(task.kwargs);
      const [argsJson, kwargsJson] = inline
        ? [inlineBytes(task.args), inlineBytes(task.kwargs)]
        : await Promise.all([
            this.resolvePayload(task.args, "args"),
            this.resolvePayload(task.kwargs, "kwargs"),
          ]);
      t.item = {
        taskId: t.taskId,
        functionId: task.functionId,
        function: task.function,
        argsJson,
        kwargsJson,
        attempt: t.attempt,
        timeoutS: task.timeoutS ?? 0,
      };
    } catch (err) {
      const fe = toFabricError(err);
      const log = this.o.log.child({ taskId: t.taskId });
      if (fe.code === "INVALID_ARGUMENT") {
        log.warn({ err: fe.message }, "invalid task");
        this.finish(t, errorUpdate(this.head(t.taskId, 1), fe));
      } else {
        // The payload store is unreachable for now: hand the task back for a later try.
        log.warn({ err: fe.message }, "cannot fetch the task's payload; giving it back");
        this.o.noteError(`payload store: ${fe.message}`);
        this.giveBack(t, "payload store unavailable", 1000);
      }
      return;
    }
    if (this.o.stopping()) {
      this.giveBack(t, "agent stopping");
      return;
    }
    t.phase = "queued";
    this.ready.push(t);
    this.dispatch();
  }

  /**
   * Hands queued tasks to managers with room, the idlest first. Calls made in one go (a burst of
   * pulled tasks, a frame of outcomes) are coalesced: one pass, one WorkBatch per manager.
   */
  dispatch(): void {
    if (this.dispatchScheduled) return;
    this.dispatchScheduled = true;
    queueMicrotask(() => {
      this.dispatchScheduled = false;
      this.dispatchNow();
    });
  }

  private dispatchNow(): void {
    if (this.ready.length === 0 || this.o.stopping()) return;
    const managers = [...this.o.managers()]
      // Managers of a block near its walltime take nothing new.
      .filter((m) => m.idle > 0 && this.o.takesWork(m))
      .sort((a, b) => b.idle - a.idle);
    for (const m of managers) {
      if (this.ready.length === 0) break;
      const batch = this.ready.splice(0, m.idle);
      for (const t of batch) {
        t.phase = "dispatched";
        t.manager = m;
        m.assigned.add(t.taskId);
      }
      m.sendWork(batch.map((t) => t.item!));
    }
  }

  // ---------------------------------------------------------------- what managers report

  /** A manager's notice that a task has been running for a moment. */
  onStarted(m: TaskManager, s: TaskStarted): void {
    const t = this.inflight.get(s.taskId);
    if (!t || t.manager !== m || t.phase !== "dispatched") return;
    t.phase = "running";
    // Started notices come only for tasks still running after a moment: tasks are not all short.
    this.o.sizer.observeRunning(Math.max(0, Date.now() - s.atMs));
    const head = this.head(s.taskId, t.attempt, s.atMs, `manager/${m.managerId}`);
    this.o.updates.add(startedUpdate(head, `block ${m.blockId}, worker ${s.workerId}`));
  }

  /** A task's outcome from its manager: finished, retried or failed. */
  async onOutcome(m: TaskManager, o: WorkOutcome): Promise<void> {
    m.assigned.delete(o.taskId);
    const t = this.inflight.get(o.taskId);
    if (!t || t.manager !== m || (t.phase !== "dispatched" && t.phase !== "running")) {
      this.o.log.debug(
        { taskId: o.taskId, managerId: m.managerId },
        "outcome for a task not in flight here; ignored",
      );
      this.dispatch();
      return;
    }
    if (o.startedAtMs > 0 && o.finishedAtMs >= o.startedAtMs)
      this.o.sizer.observe(o.finishedAtMs - o.startedAtMs);
    // The manager sends no "started" notice for a task that finishes quickly: the outcome says it.
    const unstarted = t.phase === "dispatched";
    t.phase = "reporting";
    this.dispatch();
    const actor = `manager/${m.managerId}`;
    let update: TaskUpdate;
    if (o.ok) {
      const success = this.succeeded(t, o, actor);
      update = success instanceof Promise ? await success : success;
    } else {
      const error = fitError(
        o.error ?? errorToInfo(new FabricError("UNKNOWN", "the task failed without an error")),
      );
      if (this.retryAfterFailure(t, error, actor)) return;
      update = failedUpdate(this.head(t.taskId, t.attempt, o.finishedAtMs || Date.now(), actor), error);
    }
    if (unstarted) update = withStart(update, o.startedAtMs, actor);
    if (o.output) update = { ...update, output: fitOutput(o.output) };
    this.finish(t, update);
  }

  /**
   * Runs a failed task again when its function asks for retries and attempts remain: the attempt's
   * failure is recorded in the task's history, and the message goes back to the queue with a
   * backoff (its delivery count is the attempt number, so it survives an agent restart).
   */
  private retryAfterFailure(t: InFlightTask, error: ErrorInfo, actor: string): boolean {
    const maxRetries = t.item?.function?.maxRetries ?? 0;
    const final = error.reason === "cancelled" || error.reason === "invalid_task";
    if (final || t.attempt > maxRetries || this.o.stopping()) return false;
    const delayMs = retryDelayMs(t.attempt);
    const detail = retryDetail(t.attempt, maxRetries, error, delayMs);
    this.o.updates.add(retryingUpdate(this.head(t.taskId, t.attempt, Date.now(), actor), detail));
    this.giveBack(t, detail, delayMs);
    this.dispatch();
    this.o.onRoom();
    return true;
  }

  /**
   * The update of a task that succeeded. A small result (the common case) travels inline and the
   * update is returned at once, without waiting a turn; a large one is stored first.
   */
  private succeeded(t: InFlightTask, o: WorkOutcome, actor: string): TaskUpdate | Promise<TaskUpdate> {
    const bytes = o.resultJson;
    const max = this.o.maxResultBytes;
    if (bytes.length > max) {
      const tooLarge = new FabricError(
        "RESOURCE_EXHAUSTED",
        `the function's result is ${bytes.length} bytes, over this endpoint's limit of ${max} bytes`,
        { reason: "result_too_large" },
      );
      return errorUpdate(this.head(t.taskId, t.attempt, Date.now(), actor), tooLarge);
    }
    const head = this.head(t.taskId, t.attempt, o.finishedAtMs || Date.now(), actor);
    if (fitsInline(bytes.length, this.o.payloads.inlineLimit))
      return successUpdate(head, inlinePayload(bytes));
    return this.storeResult(head, bytes);
  }

  /** Writes a large result to the payload store; the update then refers to it. */
  private async storeResult(head: UpdateHead, bytes: Uint8Array): Promise<TaskUpdate> {
    const name = Bus.resultObject(head.taskId);
    for (let i = 0, delay = 250; i < 5; i++, delay *= 2) {
      try {
        await this.o.payloads.write(name, bytes);
        return successUpdate(head, storedPayload(name, bytes.length));
      } catch (err) {
        this.o.log.warn(
          { taskId: head.taskId, err: (err as Error).message },
          "cannot store a large result; retrying",
        );
        await sleep(delay);
      }
    }
    const lost = new FabricError(
      "UNAVAILABLE",
      `the result (${bytes.length} bytes) could not be written to the payload store`,
    );
    return errorUpdate({ ...head, atMs: Date.now() }, lost);
  }

  // ---------------------------------------------------------------- ways out of the table

  /** Queues the terminal update; the task message is acked once that update's PubAck is in. */
  private finish(t: InFlightTask, update: TaskUpdate): void {
    t.phase = "reporting";
    this.o.updates.add(update, () => {
      t.msg.ack();
      if (this.inflight.get(t.taskId) === t) this.inflight.delete(t.taskId);
      remember(this.recentlyDone, t.taskId);
      this.o.onRoom();
    });
  }

  private failTask(t: InFlightTask, err: FabricError): void {
    this.finish(t, errorUpdate(this.head(t.taskId, t.attempt), err));
  }

  /** Returns a task to the queue for immediate (or delayed) redelivery. */
  private giveBack(t: InFlightTask, why: string, delayMs?: number): void {
    if (this.inflight.get(t.taskId) === t) this.inflight.delete(t.taskId);
    t.manager?.assigned.delete(t.taskId);
    const i = this.ready.indexOf(t);
    if (i >= 0) this.ready.splice(i, 1);
    try {
      if (delayMs === undefined) t.msg.nak();
      else t.msg.nak(delayMs);
    } catch (err) {
      this.o.log.debug({ taskId: t.taskId, err: (err as Error).message }, "nak failed");
    }
    this.o.log.info({ taskId: t.taskId, why }, "task handed back to the queue");
  }

  /** Drops cancelled tasks that wait here and stops those that run; remembers the others. */
  cancel(taskIds: readonly string[]): void {
    const byManager = new Map<TaskManager, string[]>();
    for (const taskId of taskIds) {
      const t = this.inflight.get(taskId);
      if (!t) {
        remember(this.cancelledIds, taskId);
        continue;
      }
      this.o.log.info({ taskId, phase: t.phase }, "task cancelled by its owner");
      if (t.phase === "queued" || t.phase === "resolving") {
        const i = this.ready.indexOf(t);
        if (i >= 0) this.ready.splice(i, 1);
        this.finish(t, cancelledUpdate(this.head(taskId, t.attempt)));
      } else if ((t.phase === "dispatched" || t.phase === "running") && t.manager) {
        const list = byManager.get(t.manager) ?? [];
        list.push(taskId);
        byManager.set(t.manager, list);
      }
    }
    for (const [m, ids] of byManager) m.cancelTasks(ids);
  }

  /**
   * Manager `m` is gone with `taskIds` on it (`detail` and `reason` say how, see blocks.ts). A task
   * that never reported a start runs elsewhere; one that started runs again while
   * `retriesOnBlockLoss` allows, else fails with `reason`.
   */
  tasksLost(m: TaskManager, taskIds: readonly string[], detail: string, reason: string): void {
    const retries = this.o.retriesOnBlockLoss;
    const stopping = this.o.stopping();
    for (const taskId of taskIds) {
      const t = this.inflight.get(taskId);
      if (!t || t.manager !== m || t.phase === "reporting") continue;
      if (t.phase === "dispatched" && !stopping) {
        // Never reported started: it waited in the manager's queue (or had started only moments
        // before, see the manager's STARTED_HOLD_MS). It runs elsewhere, not failed.
        this.giveBack(t, `its manager was lost before the task started (${detail}); it will run again`);
        continue;
      }
      if (t.attempt <= retries && !stopping) {
        this.giveBack(
          t,
          `its worker was lost (${detail}); attempt ${t.attempt} of ${retries + 1}, running it again`,
        );
        continue;
      }
      const lost = new FabricError("UNAVAILABLE", `the worker running this task was lost: ${detail}`, {
        reason,
      });
      this.failTask(t, lost);
    }
    this.o.onRoom();
  }
}
