/**
 * The pool's queue and dispatch, driven through a stand-in slot kind: no process or container is
 * started; the test plays the workers (ready, outcomes, exits, failed launches).
 */
import { describe, expect, it } from "vitest";

import { FabricError } from "../../common/lean.js";
import { silentLogger } from "../../common/logger.js";
import type { WorkItem, WorkOutcome } from "../../proto/index.js";
import type { ContainerRuntimeName } from "../runtime/config.js";
import { resolveContainerConfig } from "../runtime/config.js";
import { failedOutcome } from "./outcomes.js";
import { WorkerPool } from "./worker-pool.js";
import type { Placement, SlotEvents, SlotKind, SlotState, WorkerSlot } from "./worker-slot.js";

function item(taskId: string, image = ""): WorkItem {
  return {
    taskId,
    functionId: `f-${taskId}`,
    function: { kind: { $case: "js", value: { source: "", entryPoint: "f" } }, containerImage: image },
    argsJson: Buffer.alloc(0),
    kwargsJson: Buffer.alloc(0),
    attempt: 1,
  };
}

/** A worker the test plays. */
class FakeSlot implements WorkerSlot {
  state: SlotState = "starting";
  current: WorkItem | undefined;
  startedAtMs = 0;
  idleSinceMs = Date.now();
  next: WorkItem[] = [];
  /** Every task sent to the worker, in order. */
  readonly sent: string[] = [];
  stoppedBecause: FabricError | undefined;
  stopped = false;

  constructor(
    readonly id: string,
    readonly placement: Placement,
    private readonly events: SlotEvents,
  ) {}

  get pipelined(): number {
    return this.next.length;
  }
  get acceptsPipelined(): boolean {
    return this.state === "ready" && this.current !== undefined && !this.stoppedBecause;
  }
  run(item: WorkItem): void {
    this.sent.push(item.taskId);
    this.begin(item);
  }
  pipeline(items: readonly WorkItem[]): void {
    this.next.push(...items);
    this.sent.push(...items.map((i) => i.taskId));
  }
  withdraw(taskIds: ReadonlySet<string>): WorkItem[] {
    const out = this.next.filter((i) => taskIds.has(i.taskId));
    this.next = this.next.filter((i) => !taskIds.has(i.taskId));
    return out;
  }
  stopTask(why: FabricError): void {
    this.stoppedBecause = why;
  }
  retire(): void {
    this.state = "retiring";
  }
  async stop(): Promise<void> {
    this.stopped = true;
    this.exit();
  }

  // What the test makes the worker do.
  ready(): void {
    this.state = "ready";
    this.idleSinceMs = Date.now();
    this.events.onReady(this);
  }
  finish(): void {
    const done = this.current!;
    this.current = undefined;
    this.idleSinceMs = Date.now();
    const following = this.next.shift();
    if (following) this.begin(following);
    const at = Date.now();
    this.events.onOutcome(this, {
      taskId: done.taskId,
      ok: true,
      resultJson: Buffer.from("1"),
      error: undefined,
      output: undefined,
      startedAtMs: at,
      finishedAtMs: at,
      workerId: this.id,
    });
  }
  exit(): void {
    const item = this.current;
    const why = this.stoppedBecause ?? new FabricError("UNAVAILABLE", "gone", { reason: "worker_lost" });
    const outcome = item
      ? failedOutcome(item.taskId, why, { startedAtMs: 0, finishedAtMs: 0, workerId: this.id })
      : undefined;
    this.events.onExit(this, outcome, this.next.splice(0));
  }
  failLaunch(message: string): void {
    this.events.onLaunchFailed(this, new FabricError("FAILED_PRECONDITION", message));
  }

  private begin(item: WorkItem): void {
    this.current = item;
    this.startedAtMs = Date.now();
    this.events.onStarted(this, item, this.startedAtMs);
  }
}

class FakeKind implements SlotKind {
  readonly opened: FakeSlot[] = [];
  closed = false;
  constructor(readonly runtime: ContainerRuntimeName = "none") {}
  open(id: string, placement: Placement, events: SlotEvents): WorkerSlot {
    const s = new FakeSlot(id, placement, events);
    this.opened.push(s);
    return s;
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

function harness(size: number, kind = new FakeKind(), containerDoc?: unknown) {
  const started: string[] = [];
  const outcomes: WorkOutcome[] = [];
  const pool = new WorkerPool(
    {
      size,
      managerId: "m",
      log: silentLogger,
      slotKind: kind,
      ...(containerDoc ? { container: resolveContainerConfig(containerDoc) } : {}),
    },
    {
      onStarted: (taskId, workerId) => started.push(`${taskId}@${workerId}`),
      onOutcome: (o) => outcomes.push(o),
    },
  );
  return { pool, kind, started, outcomes };
}

describe("WorkerPool dispatch", () => {
  it("keeps `size` bare workers, queues tasks until one is ready, and hands them out in order", () => {
    const { pool, kind, started, outcomes } = harness(2);
    pool.start();
    expect(kind.opened.map((s) => s.id)).toEqual(["m/w0", "m/w1"]);
    pool.submit([item("a"), item("b"), item("c")]);
    expect(pool.queued).toBe(3);
    kind.opened[1]!.ready();
    expect(started).toEqual(["a@m/w1"]);
    kind.opened[0]!.ready();
    expect(started).toEqual(["a@m/w1", "b@m/w0"]);
    expect(pool).toMatchObject({ queued: 1, running: 2, idle: 0 });
    kind.opened[0]!.finish();
    expect(started.at(-1)).toBe("c@m/w0");
    expect(outcomes.map((o) => [o.taskId, o.workerId])).toEqual([["b", "m/w0"]]);
    expect(pool.workersByImage()).toEqual(new Map([["", 2]]));
  });

  it("cancels queued and pipelined tasks at once, and running ones through their worker", () => {
    const { pool, kind, outcomes } = harness(1);
    pool.start();
    const w = kind.opened[0]!;
    w.ready();
    pool.submit([item("run"), item("queued")]);
    w.next.push(item("piped"));
    pool.cancel(["run", "queued", "piped", "unknown"]);
    expect(outcomes.map((o) => [o.taskId, o.error?.reason, o.workerId])).toEqual([
      ["queued", "cancelled", ""],
      ["piped", "cancelled", ""],
    ]);
    expect(w.stoppedBecause).toMatchObject({ code: "CANCELLED", reason: "cancelled" });
    // The stopped worker exits: the task ends with the stop's reason and the worker is replaced.
    w.exit();
    expect(outcomes.at(-1)).toMatchObject({ taskId: "run", error: { reason: "cancelled" } });
    expect(kind.opened.map((s) => s.id)).toEqual(["m/w0", "m/w1"]);
  });

  it("a worker that dies hands its pipelined tasks back first; its replacement takes them", () => {
    const { pool, kind, started, outcomes } = harness(1);
    pool.start();
    const w = kind.opened[0]!;
    w.ready();
    pool.submit([item("dies"), item("later")]);
    w.next.push(item("piped"));
    w.exit();
    expect(outcomes.map((o) => [o.taskId, o.error?.reason])).toEqual([["dies", "worker_lost"]]);
    const replacement = kind.opened[1]!;
    replacement.ready();
    expect(started.slice(1)).toEqual(["piped@m/w1"]);
    replacement.finish();
    expect(started.at(-1)).toBe("later@m/w1");
  });

  it("pipelines short tasks behind a busy worker once the mean run time is below 1 ms", () => {
    const { pool, kind } = harness(1);
    pool.start();
    const w = kind.opened[0]!;
    w.ready();
    // Nothing is pipelined while tasks have not proven short.
    pool.submit([item("first"), item("second")]);
    expect(w.sent).toEqual(["first"]);
    // Many no-op tasks bring the mean (starting at 1 s) under 1 ms.
    pool.submit(Array.from({ length: 200 }, (_, i) => item(`n${i}`)));
    while (pool.queued > 0 || w.current) w.finish();
    expect(w.next).toEqual([]);
    pool.submit(["p0", "p1", "p2", "p3", "p4", "p5"].map((id) => item(id)));
    // One runs, three go behind it (depth 4), the rest wait.
    expect(w.sent.at(-4)).toBe("p0");
    expect(pool.running).toBe(1);
    expect(w.next.map((i) => i.taskId)).toEqual(["p1", "p2", "p3"]);
    expect(pool.queued).toBe(2);
  });

  it("stops every worker and closes the kind", async () => {
    const { pool, kind } = harness(2);
    pool.start();
    await pool.stop(10);
    expect(kind.opened.every((s) => s.stopped)).toBe(true);
    expect(kind.closed).toBe(true);
    // Nothing is started or replaced once stopping.
    pool.submit([item("late")]);
    expect(kind.opened).toHaveLength(2);
  });
});

describe("WorkerPool with containers", () => {
  const doc = { runtime: "docker", image: "js:1", pool: { keepWarm: 1, idleSeconds: 300 } };

  it("starts containers of a task's image on demand and makes room when full", async () => {
    const { pool, kind, started } = harness(2, new FakeKind("docker"), doc);
    pool.start();
    expect(kind.opened.map((s) => s.placement.image)).toEqual(["js:1"]);
    kind.opened[0]!.ready();
    pool.submit([item("a", "lab:2")]);
    expect(kind.opened.map((s) => s.placement.image)).toEqual(["js:1", "lab:2"]);
    kind.opened[1]!.ready();
    expect(started).toEqual(["a@m/w1"]);
    kind.opened[1]!.finish();
    // Full (2 of 2): a third image retires the container idle longest of an image nobody waits for.
    pool.submit([item("b", "other:3")]);
    const [js, lab] = kind.opened;
    expect(js!.state).toBe("retiring");
    expect(lab!.state).toBe("ready");
    expect(kind.opened).toHaveLength(2);
    js!.exit();
    expect(kind.opened.map((s) => s.placement.image)).toEqual(["js:1", "lab:2", "other:3"]);
    kind.opened[2]!.ready();
    expect(started).toEqual(["a@m/w1", "b@m/w2"]);
    await pool.stop(1);
  });

  it("fails the tasks waiting for an image whose container cannot start, and no others", async () => {
    const { pool, kind, outcomes } = harness(3, new FakeKind("docker"), doc);
    pool.start();
    pool.submit([item("a", "missing:1"), item("b", "js:1"), item("c", "missing:1")]);
    const missing = kind.opened.filter((s) => s.placement.image === "missing:1");
    expect(missing).toHaveLength(2);
    missing[0]!.failLaunch("no such image missing:1");
    expect(outcomes.map((o) => [o.taskId, o.error?.code, o.error?.message])).toEqual([
      ["a", "FAILED_PRECONDITION", "no such image missing:1"],
      ["c", "FAILED_PRECONDITION", "no such image missing:1"],
    ]);
    expect(pool.queued).toBe(1);
    await pool.stop(1);
  });

  it("needs the container section with a container runtime", () => {
    expect(() => harness(1, new FakeKind("docker"))).toThrow(/container config/);
  });
});
