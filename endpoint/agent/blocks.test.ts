import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";

import { inlinePayload } from "../../common/index.js";
import { TaskState } from "../../proto/index.js";
import type { TaskMessage, TaskUpdate, WorkItem } from "../../proto/index.js";
import { resolveConfig } from "../config.js";
import type { EndpointConfigInput } from "../config.js";
import type { BlockJobStatus, BlockLaunch, ExecutionProvider } from "../provider.js";
import { Blocks } from "./blocks.js";
import type { BlockManager, BlocksOptions } from "./blocks.js";
import { QueueSizer } from "./queue-sizing.js";
import { TaskTracker } from "./task-tracker.js";
import type { Delivery, TaskManager } from "./task-tracker.js";

const log = pino({ level: "silent" });
const logDir = mkdtempSync(path.join(tmpdir(), "blocks-test-"));
afterAll(() => rmSync(logDir, { recursive: true, force: true }));

/** A batch scheduler in memory: jobs are pending until the test says otherwise. */
class FakeProvider implements ExecutionProvider {
  readonly name = "slurm";
  readonly submitted: BlockLaunch[] = [];
  readonly cancelled: string[] = [];
  readonly jobs = new Map<string, BlockJobStatus>();
  async submitBlock(launch: BlockLaunch): Promise<string> {
    this.submitted.push(launch);
    const jobId = `job-${this.submitted.length}`;
    this.jobs.set(jobId, { state: "pending", reason: "Priority" });
    return jobId;
  }
  async status(jobIds: readonly string[]): Promise<Map<string, BlockJobStatus>> {
    return new Map(jobIds.map((id) => [id, this.jobs.get(id) ?? { state: "missing" }]));
  }
  async cancel(jobId: string): Promise<void> {
    this.cancelled.push(jobId);
    this.jobs.set(jobId, { state: "cancelled" });
  }
}

/** A connected manager (the tracker's and the blocks' view of one). */
class FakeManager implements TaskManager, BlockManager {
  readonly assigned = new Set<string>();
  readonly sent: WorkItem[] = [];
  constructor(
    readonly managerId: string,
    readonly blockId: string,
    readonly workers = 2,
  ) {}
  get idle(): number {
    return Math.max(0, this.workers - this.assigned.size);
  }
  sendWork(items: readonly WorkItem[]): void {
    this.sent.push(...items);
  }
  cancelTasks(): void {}
}

/** The manager server: the blocks it was told to expect, and who is connected. */
class FakeServer {
  readonly expected = new Map<string, string>();
  readonly connected: FakeManager[] = [];
  expectBlock(blockId: string, secret: string): void {
    this.expected.set(blockId, secret);
  }
  forgetBlock(blockId: string): void {
    this.expected.delete(blockId);
  }
  managers(): FakeManager[] {
    return this.connected;
  }
}

const provider = (over: Record<string, unknown> = {}): EndpointConfigInput["provider"] => ({
  type: "slurm",
  maxBlocks: 3,
  workersPerNode: 2,
  idleTimeoutSeconds: 60,
  ...over,
});

function setup(providerConfig = provider()) {
  const config = resolveConfig({ broker: "broker:7000", provider: providerConfig }, {});
  const clock = { now: 1_000_000 };
  const scheduler = new FakeProvider();
  const server = new FakeServer();
  const demand = { outstanding: 0 };
  const lost: { m: FakeManager; taskIds: readonly string[]; detail: string; reason: string }[] = [];
  const errors: string[] = [];
  const failedWaiting: string[] = [];
  const options: BlocksOptions<FakeManager> = {
    config,
    provider: scheduler,
    blockLogDir: logDir,
    managerMain: "/opt/fabric/manager/main.js",
    log,
    now: () => clock.now,
    server,
    managerAddress: () => "10.0.0.1:7001",
    outstanding: () => demand.outstanding,
    readQueueLength: async () => {},
    tasksLost: (m, taskIds, detail, reason) => void lost.push({ m, taskIds, detail, reason }),
    failWaitingTasks: async (why) => void failedWaiting.push(why),
    noteError: (e) => void errors.push(e),
    lastError: () => errors.at(-1) ?? "",
    stopping: () => false,
  };
  const blocks = new Blocks<FakeManager>(options);
  /** Connects a manager of the block launched `i`-th, as the manager server would. */
  const connect = (i: number) => {
    const m = new FakeManager(`m${i}`, scheduler.submitted[i]!.blockId);
    server.connected.push(m);
    blocks.managerReady(m);
    return m;
  };
  return { blocks, options, clock, scheduler, server, demand, lost, errors, failedWaiting, connect };
}

/** Lets the provider's promises (cancel, status) settle. */
const settle = () => new Promise<void>((r) => setImmediate(r));
const states = (b: Blocks<FakeManager>) => b.statuses().map((s) => s.state);

describe("Blocks", () => {
  it("launches no block while nothing waits, then scales out to the queue's need up to maxBlocks", async () => {
    const s = setup();
    await s.blocks.scale();
    expect(s.scheduler.submitted).toEqual([]);

    s.demand.outstanding = 3; // two workers per block: two blocks
    await s.blocks.scale();
    expect(s.scheduler.submitted).toHaveLength(2);
    const launch = s.scheduler.submitted[0]!;
    expect(launch.command).toEqual([
      process.execPath,
      "/opt/fabric/manager/main.js",
      "--agent",
      "10.0.0.1:7001",
      "--block",
      launch.blockId,
      "--workers",
      "2",
    ]);
    // The manager proves it belongs to the block with the secret the server expects.
    expect(launch.env["FABRIC_BLOCK_SECRET"]).toBe(s.server.expected.get(launch.blockId));
    expect(launch.logFile).toBe(path.join(logDir, `${launch.blockId}.log`));
    expect(s.blocks.statuses().map((b) => [b.jobId, b.state])).toEqual([
      ["job-1", "pending"],
      ["job-2", "pending"],
    ]);

    s.demand.outstanding = 100;
    await s.blocks.scale();
    expect(s.scheduler.submitted).toHaveLength(3); // maxBlocks
    await s.blocks.scale();
    expect(s.scheduler.submitted).toHaveLength(3);
    expect(s.blocks.size).toBe(3);
  });

  it("scales in blocks idle past idleTimeoutSeconds, keeping busy ones", async () => {
    const s = setup();
    s.demand.outstanding = 4;
    await s.blocks.scale();
    const [idle, busy] = [s.connect(0), s.connect(1)];
    expect(idle.blockId).not.toBe(busy.blockId);
    expect(states(s.blocks)).toEqual(["connected", "connected"]);
    busy.assigned.add("t1");
    s.demand.outstanding = 1;

    s.clock.now += 30_000;
    await s.blocks.scale();
    expect(s.scheduler.cancelled).toEqual([]); // idle, but not for long enough

    s.clock.now += 31_000;
    await s.blocks.scale();
    await settle();
    expect(s.scheduler.cancelled).toEqual(["job-1"]);
    const ended = s.blocks.statuses().find((b) => b.jobId === "job-1")!;
    expect(ended).toMatchObject({ state: "ended", reason: "idle for 60 s (scaling in to 1)" });
    expect(s.server.expected.has(idle.blockId)).toBe(false);
    expect(s.server.expected.has(busy.blockId)).toBe(true);
    expect(s.blocks.size).toBe(1);
    expect(s.errors).toEqual([]); // a block we cancelled is no failure
  });

  it("ends the block of a vanished batch job and gives its tasks back", async () => {
    const s = setup();
    const sent: TaskUpdate[] = [];
    const tracker = new TaskTracker({
      log,
      actor: "endpoint/e1",
      maxResultBytes: 1000,
      retriesOnBlockLoss: 0,
      updates: { add: (u) => void sent.push(u) },
      payloads: { read: async () => null, write: async () => {}, inlineLimit: 100 },
      sizer: new QueueSizer({ workerQueueDepth: 1 }),
      managers: () => s.server.managers(),
      takesWork: (m) => blocks.takesWork(m.blockId),
      onRoom: () => {},
      noteError: () => {},
      stopping: () => false,
    });
    s.options.tasksLost = (m, taskIds, detail, reason) => tracker.tasksLost(m, taskIds, detail, reason);
    const blocks = new Blocks<FakeManager>(s.options);
    s.demand.outstanding = 1;
    await blocks.scale();
    const m = new FakeManager("m0", s.scheduler.submitted[0]!.blockId);
    s.server.connected.push(m);
    blocks.managerReady(m);
    const naks: (number | undefined)[][] = [[], []];
    const delivery = (i: number): Delivery => ({
      ack: () => {},
      nak: (ms) => void naks[i]!.push(ms),
      working: () => {},
    });
    const message = (taskId: string): TaskMessage => ({
      taskId,
      functionId: "f",
      function: { kind: { $case: "shell", value: { command: "true", walltimeS: 0 } }, containerImage: "" },
      args: inlinePayload(Buffer.from("[]")),
      kwargs: undefined,
      owner: "u",
      submittedAtMs: 0,
    });
    tracker.receive(delivery(0), message("t1"));
    tracker.receive(delivery(1), message("t2"));
    await settle();
    expect([...m.assigned]).toEqual(["t1", "t2"]);

    // The scheduler forgot the job (purged, or killed by an admin); its manager's link drops.
    s.scheduler.jobs.delete("job-1");
    s.server.connected.splice(0);
    blocks.managerLost(m, "lost the connection to manager m0 (block b)");
    await settle();
    expect(m.assigned.size).toBe(0);
    expect(naks).toEqual([[undefined], [undefined]]);
    expect(tracker.size).toBe(0);
    expect(sent.filter((u) => u.state === TaskState.TASK_STATE_FAILED)).toEqual([]);
    expect(blocks.statuses()[0]).toMatchObject({ jobId: "job-1", state: "ended" });
    expect(blocks.statuses()[0]!.reason).toMatch(/ended: missing$/);
    expect(s.scheduler.cancelled).toEqual([]);
  });

  it("says how a lost manager's block ended, and cancels a job still running without it", async () => {
    const s = setup();
    s.demand.outstanding = 3;
    await s.blocks.scale();
    const [a, b] = [s.connect(0), s.connect(1)];
    a.assigned.add("t1");
    s.scheduler.jobs.set("job-1", { state: "timeout", reason: "DUE TO TIME LIMIT" });
    s.blocks.managerLost(a, "lost the connection to manager m0");
    await settle();
    expect(s.lost[0]).toMatchObject({ m: a, taskIds: ["t1"], reason: "walltime" });
    expect(s.lost[0]!.detail).toBe(
      `its block ended: slurm job job-1 (block ${a.blockId}) timeout (DUE TO TIME LIMIT)`,
    );

    s.scheduler.jobs.set("job-2", { state: "running" });
    s.blocks.managerLost(b, "manager m1 stopped sending heartbeats");
    // A job that does not end within a few seconds is cancelled.
    for (let i = 0; i < 200 && s.lost.length < 2; i++) {
      s.clock.now += 1000;
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(s.lost[1]!.reason).toBe("worker_lost");
    expect(s.lost[1]!.detail).toContain("its slurm job job-2 was running, so the endpoint cancelled it");
    expect(s.scheduler.cancelled).toEqual(["job-2"]);
  });

  it("ends a job that died before its manager connected, and backs off the next launch", async () => {
    const s = setup(provider({ maxBlocks: 1, minBlocks: 1 }));
    await s.blocks.scale();
    expect(s.scheduler.submitted).toHaveLength(1);
    s.scheduler.jobs.set("job-1", { state: "failed", reason: "exit code 127" });
    await s.blocks.poll();
    expect(s.blocks.statuses()[0]).toMatchObject({ state: "ended" });
    expect(s.errors.at(-1)).toMatch(/ended before its manager connected: exit code 127/);
    await s.blocks.scale();
    expect(s.scheduler.submitted).toHaveLength(1); // backing off
    s.clock.now += 1000;
    await s.blocks.scale();
    expect(s.scheduler.submitted).toHaveLength(2);
  });

  it("drains a block near its walltime: no new tasks, cancelled once idle", async () => {
    const s = setup(provider({ walltime: "00:10:00", drainBeforeWalltimeSeconds: 60, minBlocks: 1 }));
    await s.blocks.scale();
    s.scheduler.jobs.set("job-1", { state: "running", startedAtMs: s.clock.now });
    await s.blocks.poll();
    const m = s.connect(0);
    m.assigned.add("t1");
    expect(s.blocks.takesWork(m.blockId)).toBe(true);
    s.clock.now += 9 * 60_000 + 1;
    await s.blocks.scale();
    expect(s.blocks.takesWork(m.blockId)).toBe(false);
    expect(states(s.blocks)[0]).toBe("draining");
    expect(s.scheduler.cancelled).toEqual([]); // still busy
    m.assigned.clear();
    await s.blocks.scale();
    await settle();
    expect(s.scheduler.cancelled).toEqual(["job-1"]);
  });

  it("asks to fail waiting tasks when no block can start for failTasksWithoutBlocksAfterSeconds", async () => {
    const s = setup(provider({ failTasksWithoutBlocksAfterSeconds: 30 }));
    s.scheduler.submitBlock = () => Promise.reject(new Error("sbatch: invalid partition"));
    s.demand.outstanding = 5;
    await s.blocks.scale();
    expect(s.errors.at(-1)).toMatch(/cannot launch block b-.*: sbatch: invalid partition/);
    s.clock.now += 31_000;
    await s.blocks.scale();
    await settle();
    expect(s.failedWaiting).toHaveLength(1);
    expect(s.failedWaiting[0]).toMatch(/^no block could start on this endpoint for 30 s: /);
  });
});
