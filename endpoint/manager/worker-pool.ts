import type { FabricError } from "../../common/lean.js";
import type { Logger } from "../../common/logger.js";
import type { WorkItem, WorkOutcome } from "../../proto/index.js";
import type { ContainerConfig } from "../runtime/config.js";
import type { WorkerLauncher } from "../runtime/launcher.js";
import { ProcessLauncher } from "../runtime/process-launcher.js";
import { WORKER_MAIN, workerIdOf } from "./early-workers.js";
import { cancelledError, cancelledOutcome, unstartedOutcome } from "./outcomes.js";
import {
  barePlacements,
  containerPlacements,
  demandOf,
  idleToRetire,
  planLaunches,
  warmToLaunch,
} from "./placement.js";
import type { Placements } from "./placement.js";
import { ProtocolSlotKind } from "./protocol-slot.js";
import { PythonProcessLauncher, PythonSlotKind } from "./python-slot.js";
import type { Placement, SlotEvents, SlotKind, WorkerSlot } from "./worker-slot.js";

export { WORKER_MAIN };

/** What a pool tells its owner. */
export interface WorkerPoolEvents {
  /** A task was handed to a worker. */
  onStarted(taskId: string, workerId: string, atMs: number): void;
  /** A task ended (successfully, with a function error, or because its worker died). */
  onOutcome(outcome: WorkOutcome): void;
}

/** Options of a {@link WorkerPool}. */
export interface WorkerPoolOptions {
  /** Most workers at once (the manager's task slots). */
  readonly size: number;
  readonly managerId: string;
  /** Extra environment for workers (walltime default, result limit). */
  readonly env?: Readonly<Record<string, string>>;
  readonly log: Logger;
  /** Entry file of the bare worker process. @default WORKER_MAIN */
  readonly workerMain?: string;
  /**
   * Starts workers in containers. Without it, or with a launcher of runtime `none` (such as an
   * `EarlyWorkerLauncher` holding workers started before the pool), workers are bare
   * processes: `size` of them are kept alive whatever the demand, as before containers existed.
   */
  readonly launcher?: WorkerLauncher;
  /** The endpoint's `container` section; required with a container launcher (or slot kind). */
  readonly container?: ContainerConfig;
  /**
   * The worker runtime, for workers that are not launcher-started protocol workers. With it,
   * `launcher`, `workerMain` and `env` are not used; its `runtime` says whether the pool is a
   * fixed set of workers or warm pools of containers.
   * @default workers started by `launcher`, speaking the worker protocol
   */
  readonly slotKind?: SlotKind;
  /**
   * The runtime of Python functions' workers (placements of language `python`).
   * @default interpreters of `python3` on PATH, as bare processes (see python-slot.ts)
   */
  readonly pythonSlotKind?: SlotKind;
  /** Period of the idle check. @default 1000 */
  readonly maintenanceIntervalMs?: number;
}

/**
 * Most tasks on one worker at once when tasks are very short: the running one plus those sent
 * behind it, which the worker starts back to back. One message to the worker and one back carry
 * several tasks, instead of a write and a process wake-up each way per task, which on a busy
 * node cost more than a no-op task itself.
 */
const PIPELINE_DEPTH = 4;
/** Tasks are pipelined only while the mean run time is below this (ms)... */
const PIPELINE_MAX_TASK_MS = 1;
/** ...and only behind a task that started less than this long ago (ms). */
const PIPELINE_MAX_AGE_MS = 5;
/** Weight of each run time in the pool's running mean. */
const MEAN_WEIGHT = 0.05;

/** After a warm-up launch fails, how long before the pool tries again. */
const WARM_RETRY_MS = 10_000;

/**
 * The workers of one manager: queues tasks and decides which worker runs each. A worker runs one
 * task at a time; while tasks are very short, a few more are sent behind the one it runs (see
 * PIPELINE_DEPTH). A worker's death becomes a `worker_lost` (or `out_of_memory`) outcome for its
 * task, and the worker is replaced.
 *
 * Which worker may take which task, and how many are kept, is placement.ts: `size` bare processes,
 * or warm pools of containers per (image, network). How a worker is started and spoken to is its
 * {@link SlotKind} (protocol-slot.ts for processes and containers).
 */
export class WorkerPool {
  private readonly slots = new Map<string, WorkerSlot>();
  private queue: WorkItem[] = [];
  private nextWorker = 0;
  private stopping = false;
  private readonly log: Logger;
  private readonly kind: SlotKind;
  private readonly placements: Placements;
  private readonly slotEvents: SlotEvents;
  private warmRetryAtMs = 0;
  private maintenance: NodeJS.Timeout | undefined;
  /** Running mean of task run times (ms); starts high, so nothing is pipelined until tasks prove short. */
  private meanTaskMs = 1_000;

  constructor(
    private readonly opts: WorkerPoolOptions,
    private readonly events: WorkerPoolEvents,
  ) {
    this.log = opts.log;
    this.kind = byLanguage(
      opts.slotKind ?? protocolSlotKind(opts),
      opts.pythonSlotKind ??
        new PythonSlotKind({ launcher: new PythonProcessLauncher("python3"), env: opts.env, log: opts.log }),
    );
    if (this.kind.runtime !== "none") {
      if (!opts.container) throw new Error("a container launcher needs the container config");
      this.placements = containerPlacements(opts.container, opts.size);
    } else {
      this.placements = barePlacements(opts.size);
    }
    this.slotEvents = {
      onReady: () => this.dispatch(),
      onStarted: (slot, item, atMs) => this.events.onStarted(item.taskId, slot.id, atMs),
      onOutcome: (_slot, outcome) => this.onOutcome(outcome),
      onLaunchFailed: (slot, err) => this.onLaunchFailed(slot, err),
      onExit: (slot, outcome, returned) => this.onExit(slot, outcome, returned),
    };
  }

  /** Starts the workers kept warm (all `size` bare processes, or `pool.keepWarm` containers). */
  start(): void {
    this.maintain();
    if (this.placements.elastic) {
      this.maintenance = setInterval(() => this.maintain(), this.opts.maintenanceIntervalMs ?? 1000);
      this.maintenance.unref();
    }
  }

  /** Workers ready and without a task. */
  get idle(): number {
    let n = 0;
    for (const s of this.slots.values()) if (s.state === "ready" && !s.current) n++;
    return n;
  }

  /** Tasks on workers right now. */
  get running(): number {
    let n = 0;
    for (const s of this.slots.values()) if (s.current) n++;
    return n;
  }

  /** Tasks waiting for a worker. */
  get queued(): number {
    return this.queue.length;
  }

  /** Workers alive or starting, by image ("" for bare processes). */
  workersByImage(): Map<string, number> {
    const out = new Map<string, number>();
    for (const s of this.slots.values()) {
      out.set(s.placement.image, (out.get(s.placement.image) ?? 0) + 1);
    }
    return out;
  }

  /** Queues tasks; each goes to the next idle worker of its placement. */
  submit(items: readonly WorkItem[]): void {
    this.queue.push(...items);
    this.dispatch();
  }

  /**
   * Stops tasks: queued ones are dropped, running ones have their worker stopped (and replaced).
   * Each ends with a CANCELLED outcome.
   */
  cancel(taskIds: readonly string[]): void {
    const ids = new Set(taskIds);
    const dropped = this.queue.filter((item) => ids.has(item.taskId));
    this.queue = this.queue.filter((item) => !ids.has(item.taskId));
    const now = Date.now();
    for (const slot of this.slots.values()) {
      // Pipelined but not started: cancelled here; the worker may still run it (it is short).
      dropped.push(...slot.withdraw(ids));
      if (slot.current && ids.has(slot.current.taskId)) slot.stopTask(cancelledError());
    }
    for (const item of dropped) this.events.onOutcome(cancelledOutcome(item.taskId, now));
  }

  /** Stops every worker (politely, then by force after `graceMs`) and resolves when all are gone. */
  async stop(graceMs = 2000): Promise<void> {
    this.stopping = true;
    clearInterval(this.maintenance);
    await Promise.all([...this.slots.values()].map((s) => s.stop(graceMs)));
    // Wait for launches in flight: their slots stop what they produce.
    const deadline = Date.now() + graceMs + 65_000;
    while (this.slots.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await this.kind.close();
  }

  private launchSlot(p: Placement): void {
    const id = workerIdOf(this.opts.managerId, this.nextWorker++);
    this.slots.set(id, this.kind.open(id, p, this.slotEvents));
  }

  private onOutcome(outcome: WorkOutcome): void {
    const run = outcome.finishedAtMs - outcome.startedAtMs;
    if (run >= 0) this.meanTaskMs += MEAN_WEIGHT * (run - this.meanTaskMs);
    this.events.onOutcome(outcome);
    this.dispatch();
  }

  private onLaunchFailed(slot: WorkerSlot, fe: FabricError): void {
    this.slots.delete(slot.id);
    if (this.stopping) return;
    const key = slot.placement.key;
    this.log.error(
      { workerId: slot.id, image: slot.placement.image, err: fe.message },
      "cannot start a worker",
    );
    if (key === this.placements.warm.key) this.warmRetryAtMs = Date.now() + WARM_RETRY_MS;
    // Tasks waiting for this placement would wait for ever: fail them with the reason.
    const failed = this.queue.filter((item) => this.placements.of(item).key === key);
    if (failed.length > 0) {
      this.queue = this.queue.filter((item) => this.placements.of(item).key !== key);
      const now = Date.now();
      for (const item of failed) this.events.onOutcome(unstartedOutcome(item.taskId, fe, slot.id, now));
    }
    this.dispatch();
  }

  private onExit(slot: WorkerSlot, outcome: WorkOutcome | undefined, returned: WorkItem[]): void {
    this.slots.delete(slot.id);
    // Tasks pipelined behind the one it was running never started: another worker takes them.
    if (returned.length > 0) this.queue.unshift(...returned);
    if (outcome) this.events.onOutcome(outcome);
    if (!this.stopping) {
      this.dispatch();
      this.maintain();
    }
  }

  /** Keeps the warm workers, and removes containers idle for too long. */
  private maintain(): void {
    if (this.stopping) return;
    if (this.placements.elastic) {
      const now = Date.now();
      for (const s of idleToRetire(this.slots.values(), this.placements, now)) s.retire();
      if (now < this.warmRetryAtMs) return;
    }
    for (let n = warmToLaunch(this.slots.values(), this.placements, this.opts.size); n > 0; n--) {
      this.launchSlot(this.placements.warm);
    }
  }

  /**
   * Sends waiting tasks to busy workers behind what they run (tasks are short, see
   * PIPELINE_DEPTH): one frame per worker carries them all.
   */
  private pipeline(): void {
    const now = Date.now();
    for (const slot of this.slots.values()) {
      if (this.queue.length === 0) return;
      if (!slot.acceptsPipelined) continue;
      if (now - slot.startedAtMs > PIPELINE_MAX_AGE_MS) continue;
      const room = PIPELINE_DEPTH - 1 - slot.pipelined;
      if (room <= 0) continue;
      const taken: WorkItem[] = [];
      const rest: WorkItem[] = [];
      for (const item of this.queue) {
        if (taken.length < room && this.placements.of(item).key === slot.placement.key) taken.push(item);
        else rest.push(item);
      }
      if (taken.length === 0) continue;
      this.queue = rest;
      slot.pipeline(taken);
    }
  }

  private dispatch(): void {
    if (this.stopping) return;
    // 1. Queued tasks go to idle workers of their placement, in order.
    const waiting: WorkItem[] = [];
    /** Whether a waiting task needs a placement other than the warm one (a Python task on a bare pool). */
    let elsewhere = false;
    for (const item of this.queue) {
      const key = this.placements.of(item).key;
      let slot: WorkerSlot | undefined;
      for (const s of this.slots.values()) {
        if (s.placement.key === key && s.state === "ready" && !s.current) {
          slot = s;
          break;
        }
      }
      if (!slot) {
        waiting.push(item);
        if (key !== this.placements.warm.key) elsewhere = true;
      } else slot.run(item);
    }
    this.queue = waiting;
    if (waiting.length > 0 && this.meanTaskMs < PIPELINE_MAX_TASK_MS) this.pipeline();
    if (this.queue.length === 0) return;
    // A full bare pool whose waiting tasks all run on its warm workers has nothing to plan.
    if (!this.placements.elastic && !elsewhere && this.slots.size >= this.opts.size) return;

    // 2. Start workers for what still waits (containers of its image, a Python interpreter),
    //    beyond those already starting, or make room.
    const plan = planLaunches(
      [...this.slots.values()],
      demandOf(this.queue, this.placements),
      this.opts.size,
    );
    for (const p of plan.launch) this.launchSlot(p);
    // The room is freed when the retired worker has exited; dispatch runs again then.
    plan.retire?.retire();
  }
}

/** One kind that opens each placement's slot with the kind of its language. */
function byLanguage(node: SlotKind, python: SlotKind): SlotKind {
  return {
    runtime: node.runtime,
    open: (id, placement, events) =>
      (placement.language === "python" ? python : node).open(id, placement, events),
    close: async () => {
      await Promise.all([node.close(), python.close()]);
    },
  };
}

/** The default worker runtime: protocol workers from the options' launcher, bare processes without one. */
function protocolSlotKind(opts: WorkerPoolOptions): SlotKind {
  const main = opts.workerMain ?? WORKER_MAIN;
  return new ProtocolSlotKind({
    launcher: opts.launcher ?? new ProcessLauncher("none", () => [process.execPath, main]),
    env: opts.env,
    log: opts.log,
  });
}
