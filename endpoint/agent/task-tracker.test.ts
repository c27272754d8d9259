import { pino } from "pino";
import { describe, expect, it } from "vitest";

import { FabricError, inlinePayload, storedPayload } from "../../common/index.js";
import { TaskState } from "../../proto/index.js";
import type { TaskMessage, TaskUpdate, WorkItem, WorkOutcome } from "../../proto/index.js";
import { QueueSizer } from "./queue-sizing.js";
import { TaskTracker } from "./task-tracker.js";
import type { Delivery, TaskCheckAnswer, TaskManager, UpdateSink } from "./task-tracker.js";

const log = pino({ level: "silent" });

/** A task message's delivery: counts acks, naks (with their delays) and extensions. */
class FakeDelivery implements Delivery {
  acks = 0;
  readonly naks: (number | undefined)[] = [];
  workings = 0;
  readonly info: { deliveryCount: number };
  constructor(deliveryCount = 1) {
    this.info = { deliveryCount };
  }
  ack(): void {
    this.acks++;
  }
  nak(delayMs?: number): void {
    this.naks.push(delayMs);
  }
  working(): void {
    this.workings++;
  }
}

/** A connected manager with `slots` room; records what it was sent and asked to cancel. */
class FakeManager implements TaskManager {
  readonly assigned = new Set<string>();
  readonly sent: WorkItem[] = [];
  readonly cancelled: string[] = [];
  constructor(
    readonly managerId: string,
    readonly blockId: string,
    private readonly slots: number,
  ) {}
  get idle(): number {
    return Math.max(0, this.slots - this.assigned.size);
  }
  sendWork(items: readonly WorkItem[]): void {
    this.sent.push(...items);
  }
  cancelTasks(taskIds: readonly string[]): void {
    this.cancelled.push(...taskIds);
  }
}

/** The update publisher: keeps each update's `onPublished` until the test lets the PubAck in. */
class FakeUpdates implements UpdateSink {
  readonly updates: TaskUpdate[] = [];
  private readonly unacked: (() => void)[] = [];
  add(update: TaskUpdate, onPublished?: () => void): void {
    this.updates.push(update);
    if (onPublished) this.unacked.push(onPublished);
  }
  pubAck(): void {
    for (const f of this.unacked.splice(0)) f();
  }
}

function task(taskId: string, over: Partial<TaskMessage> & { maxRetries?: number } = {}): TaskMessage {
  const { maxRetries = 0, ...rest } = over;
  return {
    taskId,
    functionId: "fn-1",
    function: {
      kind: { $case: "shell", value: { command: "echo hi", walltimeS: 0 } },
      containerImage: "",
      maxRetries,
    },
    args: inlinePayload(Buffer.from("[1,2]")),
    kwargs: undefined,
    owner: "user-1",
    submittedAtMs: 0,
    timeoutS: 30,
    ...rest,
  };
}

function outcome(taskId: string, over: Partial<WorkOutcome> = {}): WorkOutcome {
  return {
    taskId,
    ok: true,
    resultJson: Buffer.from('"done"'),
    error: undefined,
    output: undefined,
    startedAtMs: 1000,
    finishedAtMs: 1010,
    workerId: "w1",
    ...over,
  };
}

const failure = (message = "boom") =>
  outcome("t1", {
    ok: false,
    resultJson: new Uint8Array(0),
    error: { code: "UNKNOWN", message, reason: "function_error", remote: undefined, shell: undefined },
  });

/** Lets queued microtasks (dispatch) and awaited payload reads run. */
const settle = () => new Promise<void>((r) => setImmediate(r));

interface Setup {
  managers?: FakeManager[];
  retriesOnBlockLoss?: number;
  maxResultBytes?: number;
  /** Reads of the payload store. @default the test's object map */
  read?: (objectRef: string) => Promise<Uint8Array | null>;
  /** Task checks: redelivered messages are suspect, and `answer` is what the brokers say. */
  answer?: (ids: readonly string[]) => TaskCheckAnswer | undefined;
}

function setup(o: Setup = {}) {
  const managers = o.managers ?? [new FakeManager("m1", "b1", 4)];
  const updates = new FakeUpdates();
  const objects = new Map<string, Uint8Array>();
  const errors: string[] = [];
  const state = {
    rooms: 0,
    stopping: false,
    draining: new Set<string>(),
    fenced: 0,
    asked: [] as string[][],
  };
  const tracker = new TaskTracker({
    log,
    actor: "endpoint/e1",
    maxResultBytes: o.maxResultBytes ?? 1000,
    retriesOnBlockLoss: o.retriesOnBlockLoss ?? 0,
    updates,
    payloads: {
      read: o.read ?? (async (ref) => objects.get(ref) ?? null),
      write: async (name, bytes) => void objects.set(name, bytes),
      inlineLimit: 100,
    },
    sizer: new QueueSizer({}),
    ...(o.answer
      ? {
          checks: {
            suspect: (msg: Delivery) => (msg.info?.deliveryCount ?? 1) > 1,
            ask: async (ids: readonly string[]) => {
              state.asked.push([...ids]);
              return o.answer!(ids);
            },
          },
          onFenced: () => state.fenced++,
        }
      : {}),
    managers: () => managers,
    takesWork: (m) => !state.draining.has(m.blockId),
    onRoom: () => state.rooms++,
    noteError: (e) => errors.push(e),
    stopping: () => state.stopping,
  });
  return { tracker, managers, updates, objects, errors, state };
}

/** A tracker with task `t1` dispatched to its manager `m1`. */
async function dispatched(o: Setup & { msg?: FakeDelivery; maxRetries?: number } = {}) {
  const s = setup(o);
  const msg = o.msg ?? new FakeDelivery();
  expect(s.tracker.receive(msg, task("t1", { maxRetries: o.maxRetries ?? 0 }))).toBe(true);
  await settle();
  expect(s.tracker.phaseOf("t1")).toBe("dispatched");
  return { ...s, msg, m: s.managers[0]! };
}

describe("TaskTracker", () => {
  it("prepares a task and dispatches it to the manager with room, the idlest first", async () => {
    const full = new FakeManager("m0", "b0", 1);
    full.assigned.add("other");
    const busy = new FakeManager("m1", "b1", 2);
    const idlest = new FakeManager("m2", "b2", 3);
    const { tracker } = setup({ managers: [full, busy, idlest] });
    const msg = new FakeDelivery(2);
    expect(tracker.receive(msg, task("t1"))).toBe(true);
    expect(tracker.phaseOf("t1")).toBe("queued");
    await settle();
    expect(full.sent).toEqual([]);
    expect(busy.sent).toEqual([]);
    expect(idlest.sent).toHaveLength(1);
    const item = idlest.sent[0]!;
    expect(item).toMatchObject({ taskId: "t1", functionId: "fn-1", attempt: 2, timeoutS: 30 });
    expect(Buffer.from(item.argsJson).toString()).toBe("[1,2]");
    expect(idlest.assigned.has("t1")).toBe(true);
    expect(tracker.phaseOf("t1")).toBe("dispatched");
    expect(msg.acks + msg.naks.length).toBe(0);
  });

  it("holds tasks while no manager has room, and skips managers of a draining block", async () => {
    const m = new FakeManager("m1", "b1", 1);
    const { tracker, state } = setup({ managers: [m] });
    state.draining.add("b1");
    tracker.receive(new FakeDelivery(), task("t1"));
    await settle();
    expect(m.sent).toEqual([]);
    state.draining.clear();
    tracker.receive(new FakeDelivery(), task("t2"));
    tracker.receive(new FakeDelivery(), task("t3"));
    await settle();
    expect(m.sent.map((i) => i.taskId)).toEqual(["t1"]);
    expect(tracker.phaseOf("t2")).toBe("queued");
  });

  it("reads large arguments from the payload store; a missing object fails the task", async () => {
    const { tracker, managers, objects, updates } = setup();
    objects.set("args-1", Buffer.from('{"big":true}'));
    tracker.receive(new FakeDelivery(), task("t1", { kwargs: storedPayload("args-1", 12) }));
    expect(tracker.phaseOf("t1")).toBe("resolving");
    await settle();
    expect(Buffer.from(managers[0]!.sent[0]!.kwargsJson).toString()).toBe('{"big":true}');

    const lost = new FakeDelivery();
    tracker.receive(lost, task("t2", { args: storedPayload("gone", 5) }));
    await settle();
    expect(updates.updates).toHaveLength(1);
    expect(updates.updates[0]).toMatchObject({
      taskId: "t2",
      state: TaskState.TASK_STATE_FAILED,
      detail: "invalid_task",
    });
    expect(updates.updates[0]!.error!.message).toContain("gone is missing from the payload store");
    updates.pubAck();
    expect(lost.acks).toBe(1);
  });

  it("gives a task back when the payload store cannot be reached", async () => {
    const { tracker, updates, errors } = setup({ read: () => Promise.reject(new Error("no responders")) });
    const msg = new FakeDelivery();
    tracker.receive(msg, task("t1", { args: storedPayload("a", 1) }));
    await settle();
    expect(msg.naks).toEqual([1000]);
    expect(tracker.size).toBe(0);
    expect(updates.updates).toEqual([]);
    expect(errors[0]).toMatch(/^payload store: /);
  });

  it("finishes a success with one update and acks only after its PubAck", async () => {
    const { tracker, updates, msg, m, state } = await dispatched();
    await tracker.onOutcome(m, outcome("t1"));
    expect(updates.updates).toHaveLength(1);
    const u = updates.updates[0]!;
    expect(u).toMatchObject({
      taskId: "t1",
      state: TaskState.TASK_STATE_SUCCESS,
      actor: "manager/m1",
      atMs: 1010,
      attempt: 1,
      // No "started" notice came: the outcome's start is folded in.
      startedAtMs: 1000,
      startedBy: "manager/m1",
    });
    expect(Buffer.from(u.result!.json).toString()).toBe('"done"');
    expect(m.assigned.size).toBe(0);
    // Stored nowhere yet: the message stays un-acked and held, and its delivery kept alive.
    expect(msg.acks).toBe(0);
    expect(tracker.phaseOf("t1")).toBe("reporting");
    tracker.extendDeliveries();
    expect(msg.workings).toBe(1);
    const roomsBefore = state.rooms;
    updates.pubAck();
    expect(msg.acks).toBe(1);
    expect(msg.naks).toEqual([]);
    expect(tracker.size).toBe(0);
    expect(state.rooms).toBe(roomsBefore + 1);
    // A late redelivery of a finished task is acked, not run again.
    const again = new FakeDelivery(2);
    expect(tracker.receive(again, task("t1"))).toBe(false);
    expect(again.acks).toBe(1);
    expect(m.sent).toHaveLength(1);
  });

  it("reports a started task RUNNING, and a redelivery in flight only replaces the handle", async () => {
    const { tracker, updates, msg, m } = await dispatched();
    tracker.onStarted(m, { taskId: "t1", workerId: "w7", atMs: Date.now() });
    expect(tracker.phaseOf("t1")).toBe("running");
    expect(updates.updates[0]).toMatchObject({
      state: TaskState.TASK_STATE_RUNNING,
      detail: "block b1, worker w7",
    });
    const newer = new FakeDelivery(2);
    expect(tracker.receive(newer, task("t1"))).toBe(false);
    expect(m.sent).toHaveLength(1);
    await tracker.onOutcome(m, outcome("t1"));
    expect(updates.updates[1]).toMatchObject({ state: TaskState.TASK_STATE_SUCCESS, startedAtMs: 0 });
    updates.pubAck();
    expect(newer.acks).toBe(1);
    expect(msg.acks).toBe(0);
  });

  it("stores a large result and refuses one over the limit", async () => {
    const big = Buffer.from(JSON.stringify("x".repeat(200)));
    const a = await dispatched();
    await a.tracker.onOutcome(a.m, outcome("t1", { resultJson: big }));
    expect(a.updates.updates[0]!.result).toEqual(storedPayload("t1.result", big.length));
    expect(Buffer.from(a.objects.get("t1.result")!).equals(big)).toBe(true);

    const b = await dispatched({ maxResultBytes: 100 });
    await b.tracker.onOutcome(b.m, outcome("t1", { resultJson: big }));
    expect(b.updates.updates[0]).toMatchObject({
      state: TaskState.TASK_STATE_FAILED,
      detail: "result_too_large",
    });
    expect(b.updates.updates[0]!.error!.code).toBe("RESOURCE_EXHAUSTED");
  });

  it("retries a failure after a backoff while retries are left, counting attempts, then fails it", async () => {
    const first = await dispatched({ maxRetries: 2 });
    await first.tracker.onOutcome(first.m, failure());
    expect(first.msg.naks).toEqual([1000]);
    expect(first.msg.acks).toBe(0);
    expect(first.tracker.size).toBe(0);
    expect(first.updates.updates).toHaveLength(1);
    expect(first.updates.updates[0]).toMatchObject({
      state: TaskState.TASK_STATE_RUNNING,
      attempt: 1,
      detail: "attempt 1 of 3 failed (function_error: boom); retrying in 1 s",
    });

    // The redelivery's count is the attempt number.
    const second = await dispatched({ maxRetries: 2, msg: new FakeDelivery(2) });
    expect(second.m.sent[0]!.attempt).toBe(2);
    await second.tracker.onOutcome(second.m, failure());
    expect(second.msg.naks).toEqual([2000]);

    const last = await dispatched({ maxRetries: 2, msg: new FakeDelivery(3) });
    await last.tracker.onOutcome(last.m, failure("still broken"));
    expect(last.msg.naks).toEqual([]);
    expect(last.updates.updates).toHaveLength(1);
    expect(last.updates.updates[0]).toMatchObject({
      state: TaskState.TASK_STATE_FAILED,
      attempt: 3,
      detail: "function_error",
      actor: "manager/m1",
    });
    expect(last.updates.updates[0]!.error!.message).toBe("still broken");
    expect(last.msg.acks).toBe(0);
    last.updates.pubAck();
    expect(last.msg.acks).toBe(1);
  });

  it("fails a failure at once when the function asks for no retries", async () => {
    const { tracker, updates, msg, m } = await dispatched();
    await tracker.onOutcome(m, failure());
    expect(msg.naks).toEqual([]);
    expect(updates.updates.map((u) => u.state)).toEqual([TaskState.TASK_STATE_FAILED]);
    updates.pubAck();
    expect(msg.acks).toBe(1);
  });

  it("cancels a queued task with a CANCELLED failure; it never reaches a manager", async () => {
    const m = new FakeManager("m1", "b1", 0);
    const { tracker, updates } = setup({ managers: [m] });
    const msg = new FakeDelivery();
    tracker.receive(msg, task("t1"));
    await settle();
    expect(tracker.phaseOf("t1")).toBe("queued");
    tracker.cancel(["t1"]);
    expect(updates.updates).toHaveLength(1);
    expect(updates.updates[0]).toMatchObject({
      state: TaskState.TASK_STATE_FAILED,
      detail: "cancelled",
      actor: "endpoint/e1",
    });
    expect(updates.updates[0]!.error!.code).toBe("CANCELLED");
    updates.pubAck();
    expect(msg.acks).toBe(1);
    tracker.dispatch();
    await settle();
    expect(m.sent).toEqual([]);
    expect(m.cancelled).toEqual([]);
  });

  it("cancels a running task at its manager, and drops a cancelled task that arrives later", async () => {
    const { tracker, updates, msg, m } = await dispatched();
    tracker.onStarted(m, { taskId: "t1", workerId: "w1", atMs: Date.now() });
    tracker.cancel(["t1", "t-later"]);
    expect(m.cancelled).toEqual(["t1"]);
    expect(msg.acks).toBe(0);
    // The manager reports the cancelled task's end like any other.
    await tracker.onOutcome(
      m,
      outcome("t1", {
        ok: false,
        error: {
          code: "CANCELLED",
          message: "cancelled",
          reason: "cancelled",
          remote: undefined,
          shell: undefined,
        },
      }),
    );
    expect(updates.updates.at(-1)).toMatchObject({ state: TaskState.TASK_STATE_FAILED, detail: "cancelled" });

    const later = new FakeDelivery();
    expect(tracker.receive(later, task("t-later"))).toBe(false);
    expect(later.acks).toBe(1);
    expect(m.sent.map((i) => i.taskId)).toEqual(["t1"]);
  });

  it("gives back the tasks of a lost manager that never started; fails started ones", async () => {
    const m = new FakeManager("m1", "b1", 4);
    const { tracker, updates, state } = setup({ managers: [m] });
    const queuedMsg = new FakeDelivery();
    const runningMsg = new FakeDelivery();
    tracker.receive(queuedMsg, task("t1"));
    tracker.receive(runningMsg, task("t2"));
    await settle();
    tracker.onStarted(m, { taskId: "t2", workerId: "w1", atMs: Date.now() });
    const rooms = state.rooms;
    tracker.tasksLost(m, ["t1", "t2"], "lost the connection to manager m1", "worker_lost");
    expect(queuedMsg.naks).toEqual([undefined]);
    expect(queuedMsg.acks).toBe(0);
    expect(tracker.phaseOf("t1")).toBeUndefined();
    const failed = updates.updates.filter((u) => u.state === TaskState.TASK_STATE_FAILED);
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ taskId: "t2", detail: "worker_lost" });
    expect(failed[0]!.error!.message).toBe(
      "the worker running this task was lost: lost the connection to manager m1",
    );
    expect(state.rooms).toBe(rooms + 1);
    updates.pubAck();
    expect(runningMsg.acks).toBe(1);
  });

  it("runs a started task of a lost manager again while retriesOnBlockLoss allows", async () => {
    const { tracker, updates, msg, m } = await dispatched({ retriesOnBlockLoss: 1 });
    tracker.onStarted(m, { taskId: "t1", workerId: "w1", atMs: Date.now() });
    tracker.tasksLost(m, ["t1"], "its block ended", "walltime");
    expect(msg.naks).toEqual([undefined]);
    expect(updates.updates.filter((u) => u.state === TaskState.TASK_STATE_FAILED)).toEqual([]);
    // An outcome arriving from the lost manager afterwards is ignored.
    await tracker.onOutcome(m, outcome("t1"));
    expect(updates.updates.filter((u) => u.state === TaskState.TASK_STATE_SUCCESS)).toEqual([]);
  });

  it("refuses and fails waiting tasks without running them", async () => {
    const m = new FakeManager("m1", "b1", 0);
    const { tracker, updates } = setup({ managers: [m] });
    const refused = new FakeDelivery();
    tracker.refuse(
      "t0",
      refused,
      new FabricError("PERMISSION_DENIED", "not allowed", { reason: "function_not_allowed" }),
    );
    tracker.receive(new FakeDelivery(3), task("t1"));
    await settle();
    const noCapacity = () => new FabricError("UNAVAILABLE", "no block", { reason: "no_capacity" });
    tracker.failQueued(noCapacity());
    tracker.failDelivery("t2", new FakeDelivery(), noCapacity());
    expect(updates.updates.map((u) => [u.taskId, u.detail, u.attempt])).toEqual([
      ["t0", "function_not_allowed", 1],
      ["t1", "no_capacity", 3],
      ["t2", "no_capacity", 1],
    ]);
    expect(m.sent).toEqual([]);
    updates.pubAck();
    expect(refused.acks).toBe(1);
    expect(tracker.size).toBe(0);
  });

  it("on stop, gives back what waits and what still runs, keeping tasks being reported", async () => {
    const m = new FakeManager("m1", "b1", 1);
    const { tracker, updates, state } = setup({ managers: [m] });
    const [a, b, c] = [new FakeDelivery(), new FakeDelivery(), new FakeDelivery()];
    tracker.receive(a, task("t1"));
    tracker.receive(b, task("t2"));
    await settle();
    state.stopping = true;
    tracker.giveBackQueued("not started before the agent stopped");
    expect(b.naks).toEqual([undefined]);
    expect(tracker.hasActiveTasks()).toBe(true);
    tracker.receive(c, task("t3"));
    await settle();
    expect(c.naks).toEqual([undefined]); // resolved while stopping: given back, not queued
    tracker.giveBackUnreported("still running when the agent stopped");
    expect(a.naks).toEqual([undefined]);
    expect(tracker.size).toBe(0);
    expect(updates.updates).toEqual([]);
  });
});

describe("TaskTracker: checks of deliveries it may have seen before", () => {
  const record = (taskId: string, state: TaskState, attempts: number) => ({ taskId, state, attempts });
  const answer = (...recs: ReturnType<typeof record>[]): TaskCheckAnswer => ({
    tasks: new Map(recs.map((r) => [r.taskId, r])),
    fenced: false,
  });

  it("runs a fresh delivery without asking, and acks a suspect one whose outcome is recorded without running it", async () => {
    const s = setup({ answer: () => answer(record("t2", TaskState.TASK_STATE_SUCCESS, 1)) });
    expect(s.tracker.receive(new FakeDelivery(), task("t1"))).toBe(true);
    const again = new FakeDelivery(2);
    expect(s.tracker.receive(again, task("t2"))).toBe(true);
    await settle();
    await settle();
    expect(s.state.asked).toEqual([["t2"]]);
    expect(s.managers[0]!.sent.map((w) => w.taskId)).toEqual(["t1"]);
    expect(again.acks).toBe(1);
    expect(s.tracker.size).toBe(1);
    expect(s.tracker.skippedFinished).toBe(1);
    expect(s.updates.updates).toEqual([]);
    // A later delivery of it again is acked at once, without another question.
    const third = new FakeDelivery(3);
    expect(s.tracker.receive(third, task("t2"))).toBe(false);
    expect(third.acks).toBe(1);
  });

  it("counts a recorded run that never ended as an attempt, in the history and against maxRetries", async () => {
    // Delivered a second time; the record says attempt 1 started and never ended (its agent died).
    const s = setup({ answer: () => answer(record("t1", TaskState.TASK_STATE_RUNNING, 1)) });
    s.tracker.receive(new FakeDelivery(2), task("t1", { maxRetries: 1 }));
    await settle();
    await settle();
    const m = s.managers[0]!;
    expect(m.sent[0]!.attempt).toBe(2);
    // Delivered twice by this consumer and one run recorded: the count explains it, no lost-run note.
    expect(s.updates.updates).toEqual([]);
    await s.tracker.onOutcome(m, failure());
    // Attempt 2 of 2 (maxRetries 1) failed: no more retries.
    expect(s.updates.updates.at(-1)).toMatchObject({ state: TaskState.TASK_STATE_FAILED, attempt: 2 });
  });

  it("records the lost run when the delivery count cannot explain it (a new consumer)", async () => {
    const s = setup({ answer: () => answer(record("t1", TaskState.TASK_STATE_RUNNING, 2)) });
    s.tracker.receive(new FakeDelivery(2), task("t1", { maxRetries: 5 }));
    await settle();
    await settle();
    expect(s.managers[0]!.sent[0]!.attempt).toBe(3);
    expect(s.updates.updates).toHaveLength(1);
    expect(s.updates.updates[0]).toMatchObject({
      state: TaskState.TASK_STATE_RUNNING,
      attempt: 2,
      actor: "endpoint/e1",
    });
    expect(s.updates.updates[0]!.detail).toMatch(/^attempt 2 did not finish .*; attempt 3 follows$/);
  });

  it("runs suspect deliveries when no broker answers, and gives them back when fenced off", async () => {
    const none = setup({ answer: () => undefined });
    none.tracker.receive(new FakeDelivery(2), task("t1"));
    await settle();
    await settle();
    expect(none.managers[0]!.sent.map((w) => [w.taskId, w.attempt])).toEqual([["t1", 2]]);

    const fenced = setup({ answer: () => ({ tasks: new Map(), fenced: true }) });
    const msg = new FakeDelivery(2);
    fenced.tracker.receive(msg, task("t1"));
    await settle();
    await settle();
    expect(fenced.state.fenced).toBe(1);
    expect(fenced.managers[0]!.sent).toEqual([]);
    expect(msg.naks).toHaveLength(1);
    expect(fenced.tracker.size).toBe(0);
  });

  it("at reconnect, stops held tasks whose record ended meanwhile (a cancellation it could not hear)", async () => {
    let recs: ReturnType<typeof record>[] = [];
    const s = setup({ answer: () => answer(...recs) });
    s.tracker.receive(new FakeDelivery(), task("t1"));
    s.tracker.receive(new FakeDelivery(), task("t2"));
    await settle();
    const m = s.managers[0]!;
    expect(m.sent.map((w) => w.taskId)).toEqual(["t1", "t2"]);
    recs = [record("t1", TaskState.TASK_STATE_CANCELLED, 1), record("t2", TaskState.TASK_STATE_RUNNING, 1)];
    // The periodic look asks only about tasks held long enough: none yet.
    await s.tracker.recheckHeld(60_000);
    expect(s.state.asked).toEqual([]);
    await s.tracker.recheckHeld();
    expect(s.state.asked.at(-1)).toEqual(["t1", "t2"]);
    expect(m.cancelled).toEqual(["t1"]);
  });
});
