import type { FabricError } from "../../common/errors.js";
import { toFabricError } from "../../common/errors.js";
import { readFrames, writeFrame } from "../../common/framing.js";
import type { Logger } from "../../common/logger.js";
import { type LongTimer, setLongTimeout } from "../../common/timers.js";
// The worker protocol alone, not the proto/index barrel (which loads @grpc/grpc-js too).
import { WorkerRequest, WorkerResponse } from "../../proto/gen/fabric/v1/worker.js";
import type { WorkItem, WorkOutcome } from "../../proto/index.js";
import type { ContainerConfig } from "../runtime/config.js";
import { networkAllowed } from "../runtime/docker-options.js";
import type { LaunchedWorker, WorkerExit, WorkerLauncher } from "../runtime/launcher.js";
import { ProcessLauncher } from "../runtime/process-launcher.js";
import { WORKER_MAIN, workerEnvOf, workerIdOf } from "./early-workers.js";
import {
  cancelledError,
  cancelledOutcome,
  failedOutcome,
  timeoutError,
  unstartedOutcome,
  workerLostError,
} from "./outcomes.js";

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
  /** The endpoint's `container` section; required with a container launcher. */
  readonly container?: ContainerConfig;
  /** Period of the idle check. @default 1000 */
  readonly maintenanceIntervalMs?: number;
}

type SlotState = "starting" | "ready" | "retiring";

interface WorkerSlot {
  readonly id: string;
  readonly key: string;
  readonly image: string;
  readonly network: boolean;
  state: SlotState;
  worker: LaunchedWorker | undefined;
  current: WorkItem | undefined;
  /**
   * Tasks sent to the worker behind `current`, in order (see PIPELINE_DEPTH): the worker starts
   * each when the one before it ends.
   */
  next: WorkItem[];
  /** Pipelined tasks cancelled here: the worker may still run them; their outcomes are dropped. */
  discard: Set<string>;
  startedAtMs: number;
  idleSinceMs: number;
  /** Fires when the current task exceeds its timeout (up to 30 days: past setTimeout's limit). */
  deadline?: LongTimer | undefined;
  /** Why the pool itself stopped this worker's task (timeout, cancellation): its outcome. */
  stoppedBecause?: FabricError | undefined;
}

interface Placement {
  readonly key: string;
  readonly image: string;
  readonly network: boolean;
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
 * The workers of one manager: runs one task at a time on each, queues the rest, and turns a
 * worker's death into a `worker_lost` (or `out_of_memory`) outcome for its task.
 *
 * With bare processes it keeps `size` workers alive. With containers it keeps warm pools per
 * (image, network) placement: a task goes to an idle container of its image; otherwise a new one
 * starts while fewer than `size` exist, or an idle container of another image makes room. Idle
 * containers beyond `pool.keepWarm` (of the default image) are removed after `pool.idleSeconds`.
 */
export class WorkerPool {
  private readonly slots = new Map<string, WorkerSlot>();
  private queue: WorkItem[] = [];
  private nextWorker = 0;
  private stopping = false;
  private readonly log: Logger;
  private readonly launcher: WorkerLauncher;
  private readonly containers: boolean;
  private readonly warm: Placement;
  private readonly keepWarm: number;
  private warmRetryAtMs = 0;
  private maintenance: NodeJS.Timeout | undefined;
  /** Running mean of task run times (ms); starts high, so nothing is pipelined until tasks prove short. */
  private meanTaskMs = 1_000;

  constructor(
    private readonly opts: WorkerPoolOptions,
    private readonly events: WorkerPoolEvents,
  ) {
    this.log = opts.log;
    const main = opts.workerMain ?? WORKER_MAIN;
    this.launcher = opts.launcher ?? new ProcessLauncher("none", () => [process.execPath, main]);
    this.containers = opts.launcher !== undefined && opts.launcher.runtime !== "none";
    if (this.containers && !opts.container)
      throw new Error("a container launcher needs the container config");
    if (this.containers) {
      const cfg = opts.container!;
      this.warm = this.placementOf(cfg.image, false);
      this.keepWarm = Math.min(cfg.pool.keepWarm, opts.size);
    } else {
      this.warm = { key: "", image: "", network: false };
      this.keepWarm = opts.size;
    }
  }

  /** Starts the workers kept warm (all `size` bare processes, or `pool.keepWarm` containers). */
  start(): void {
    this.maintain();
    if (this.containers) {
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
    for (const s of this.slots.values()) out.set(s.image, (out.get(s.image) ?? 0) + 1);
    return out;
  }

  /** Queues tasks; each goes to the next idle worker of its image. */
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
      for (const item of slot.next.filter((i) => ids.has(i.taskId))) {
        slot.next.splice(slot.next.indexOf(item), 1);
        slot.discard.add(item.taskId);
        dropped.push(item);
      }
      if (slot.current && ids.has(slot.current.taskId)) this.stopTask(slot, cancelledError());
    }
    for (const item of dropped) this.events.onOutcome(cancelledOutcome(item.taskId, now));
  }

  /** Ends the task running on `slot` by stopping its worker; the outcome is `why`. */
  private stopTask(slot: WorkerSlot, why: FabricError): void {
    if (!slot.current || slot.stoppedBecause) return;
    slot.stoppedBecause = why;
    this.log.info(
      { workerId: slot.id, taskId: slot.current.taskId, why: why.message },
      "stopping a task's worker",
    );
    slot.worker?.kill();
  }

  /** Stops every worker (politely, then by force after `graceMs`) and resolves when all are gone. */
  async stop(graceMs = 2000): Promise<void> {
    this.stopping = true;
    clearInterval(this.maintenance);
    const pending = [...this.slots.values()];
    await Promise.all(
      pending.map(async (s) => {
        // A worker still starting is stopped once its launch settles (see launchSlot).
        if (s.worker) await s.worker.stop(graceMs).catch(() => undefined);
      }),
    );
    // Wait for launches in flight: launchSlot stops what they produce.
    const deadline = Date.now() + graceMs + 65_000;
    while (this.slots.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await this.launcher.close();
  }

  private placementOf(image: string, network: boolean): Placement {
    return { key: `${image}\u0000${network ? "net" : "none"}`, image, network };
  }

  private placementFor(item: WorkItem): Placement {
    if (!this.containers) return this.warm;
    const cfg = this.opts.container!;
    const fn = item.function;
    const image = fn?.containerImage || (fn?.kind?.$case === "shell" ? cfg.shellImage : cfg.image);
    return this.placementOf(image, networkAllowed(cfg, fn?.network ?? false));
  }

  private launchSlot(p: Placement): WorkerSlot {
    const id = workerIdOf(this.opts.managerId, this.nextWorker++);
    const slot: WorkerSlot = {
      id,
      key: p.key,
      image: p.image,
      network: p.network,
      state: "starting",
      worker: undefined,
      current: undefined,
      next: [],
      discard: new Set(),
      startedAtMs: 0,
      idleSinceMs: Date.now(),
    };
    this.slots.set(id, slot);
    this.launcher
      .launch({ id, image: p.image, network: p.network, env: workerEnvOf(this.opts.env, id) })
      .then(
        (worker) => this.attach(slot, worker),
        (err: unknown) => this.onLaunchFailed(slot, err),
      );
    return slot;
  }

  private attach(slot: WorkerSlot, worker: LaunchedWorker): void {
    slot.worker = worker;
    if (this.stopping) {
      void worker.stop(500).finally(() => this.slots.delete(slot.id));
      return;
    }
    readFrames(
      worker.link,
      (frame) => this.onFrame(slot, frame),
      (err) => {
        this.log.error({ err, workerId: slot.id }, "protocol error from worker; killing it");
        worker.kill();
      },
    );
    worker.link.on("error", () => {
      // The exit handler accounts for the worker; a broken link adds nothing.
    });
    void worker.exited.then(
      (exit) => this.onExit(slot, exit),
      (err: unknown) => this.onExit(slot, { description: `was lost: ${String(err)}`, outOfMemory: false }),
    );
  }

  private onLaunchFailed(slot: WorkerSlot, err: unknown): void {
    this.slots.delete(slot.id);
    const fe = toFabricError(err);
    if (this.stopping) return;
    this.log.error({ workerId: slot.id, image: slot.image, err: fe.message }, "cannot start a worker");
    if (slot.key === this.warm.key) this.warmRetryAtMs = Date.now() + WARM_RETRY_MS;
    // Tasks waiting for this placement would wait for ever: fail them with the reason.
    const failed = this.queue.filter((item) => this.placementFor(item).key === slot.key);
    if (failed.length > 0) {
      this.queue = this.queue.filter((item) => this.placementFor(item).key !== slot.key);
      const now = Date.now();
      for (const item of failed) this.events.onOutcome(unstartedOutcome(item.taskId, fe, slot.id, now));
    }
    this.dispatch();
  }

  private onFrame(slot: WorkerSlot, frame: Uint8Array): void {
    let res: WorkerResponse;
    try {
      res = WorkerResponse.decode(frame);
    } catch (err) {
      this.log.error({ err, workerId: slot.id }, "undecodable frame from worker; killing it");
      slot.worker?.kill();
      return;
    }
    const m = res.msg;
    if (m?.$case === "ready") {
      if (slot.state === "starting") slot.state = "ready";
      slot.idleSinceMs = Date.now();
      this.log.debug({ workerId: slot.id, image: slot.image }, "worker ready");
      this.dispatch();
    } else if (m?.$case === "outcome") {
      if (slot.discard.delete(m.value.taskId)) return; // cancelled while pipelined: reported already
      const item = slot.current;
      if (!item || item.taskId !== m.value.taskId) {
        this.log.warn(
          { workerId: slot.id, taskId: m.value.taskId },
          "outcome for a task this worker was not running",
        );
        return;
      }
      // A task the pool is stopping ends with the stop's reason, when the worker exits.
      if (slot.stoppedBecause) return;
      slot.deadline?.clear();
      slot.current = undefined;
      slot.idleSinceMs = Date.now();
      const run = m.value.finishedAtMs - m.value.startedAtMs;
      if (run >= 0) this.meanTaskMs += MEAN_WEIGHT * (run - this.meanTaskMs);
      // The worker goes on with the next pipelined task at once.
      const following = slot.next.shift();
      if (following) this.begin(slot, following);
      this.events.onOutcome({ ...m.value, workerId: slot.id });
      this.dispatch();
    }
  }

  private onExit(slot: WorkerSlot, exit: WorkerExit): void {
    this.slots.delete(slot.id);
    const item = slot.current;
    slot.deadline?.clear();
    // Tasks pipelined behind the one it was running never started: another worker takes them.
    if (slot.next.length > 0) this.queue.unshift(...slot.next.splice(0));
    const what = this.containers ? "worker container" : "worker process";
    const times = { startedAtMs: slot.startedAtMs, finishedAtMs: Date.now(), workerId: slot.id };
    if (item && slot.stoppedBecause) {
      this.events.onOutcome(failedOutcome(item.taskId, slot.stoppedBecause, times));
    } else if (item) {
      this.log.warn(
        { workerId: slot.id, taskId: item.taskId, exit: exit.description },
        "worker died while running a task",
      );
      this.events.onOutcome(failedOutcome(item.taskId, workerLostError(what, slot.id, exit), times));
    } else if (!this.stopping && slot.state !== "retiring") {
      this.log.warn(
        { workerId: slot.id, exit: exit.description },
        `${what} ${exit.description}; replacing it`,
      );
    }
    if (!this.stopping) {
      this.dispatch();
      this.maintain();
    }
  }

  private count(pred: (s: WorkerSlot) => boolean): number {
    let n = 0;
    for (const s of this.slots.values()) if (pred(s)) n++;
    return n;
  }

  private retire(slot: WorkerSlot): void {
    slot.state = "retiring";
    this.log.debug({ workerId: slot.id, image: slot.image }, "removing an idle worker");
    void slot.worker?.stop(2000);
  }

  /** Keeps the warm workers, and removes containers idle for too long. */
  private maintain(): void {
    if (this.stopping) return;
    if (this.containers) {
      const idleMs = this.opts.container!.pool.idleSeconds * 1000;
      const now = Date.now();
      let warmKept = 0;
      // Oldest-idle first, so the most recently used containers stay.
      const idle = [...this.slots.values()]
        .filter((s) => s.state === "ready" && !s.current)
        .sort((a, b) => b.idleSinceMs - a.idleSinceMs);
      for (const s of idle) {
        if (s.key === this.warm.key && warmKept < this.keepWarm) {
          warmKept++;
          continue;
        }
        if (now - s.idleSinceMs >= idleMs) this.retire(s);
      }
      if (now < this.warmRetryAtMs) return;
    }
    const live = (s: WorkerSlot) => s.state !== "retiring";
    let warm = this.count((s) => live(s) && s.key === this.warm.key);
    while (warm < this.keepWarm && this.count(live) < this.opts.size) {
      this.launchSlot(this.warm);
      warm++;
    }
  }

  /** Makes `item` the task `slot` runs now (it was sent to the worker already or is about to be). */
  private begin(slot: WorkerSlot, item: WorkItem): void {
    slot.current = item;
    slot.startedAtMs = Date.now();
    const timeoutS = item.timeoutS ?? 0;
    if (timeoutS > 0) {
      slot.deadline = setLongTimeout(() => this.stopTask(slot, timeoutError(timeoutS)), timeoutS * 1000);
    }
    this.events.onStarted(item.taskId, slot.id, slot.startedAtMs);
  }

  /**
   * Sends waiting tasks to busy workers behind what they run (tasks are short, see
   * PIPELINE_DEPTH): one frame per worker carries them all.
   */
  private pipeline(): void {
    const now = Date.now();
    for (const slot of this.slots.values()) {
      if (this.queue.length === 0) return;
      if (!slot.worker || !slot.current || slot.stoppedBecause || slot.state !== "ready") continue;
      if (now - slot.startedAtMs > PIPELINE_MAX_AGE_MS) continue;
      const room = PIPELINE_DEPTH - 1 - slot.next.length;
      if (room <= 0) continue;
      const taken: WorkItem[] = [];
      const rest: WorkItem[] = [];
      for (const item of this.queue) {
        if (taken.length < room && this.placementFor(item).key === slot.key) taken.push(item);
        else rest.push(item);
      }
      if (taken.length === 0) continue;
      this.queue = rest;
      slot.next.push(...taken);
      for (const item of taken) writeFrame(slot.worker.link, WorkerRequest.encode({ item }).finish());
    }
  }

  private dispatch(): void {
    if (this.stopping) return;
    // 1. Queued tasks go to idle workers of their placement, in order.
    const waiting: WorkItem[] = [];
    for (const item of this.queue) {
      const key = this.placementFor(item).key;
      let slot: WorkerSlot | undefined;
      for (const s of this.slots.values()) {
        if (s.key === key && s.state === "ready" && !s.current) {
          slot = s;
          break;
        }
      }
      if (!slot || !slot.worker) {
        waiting.push(item);
        continue;
      }
      this.begin(slot, item);
      writeFrame(slot.worker.link, WorkerRequest.encode({ item }).finish());
    }
    this.queue = waiting;
    if (waiting.length > 0 && this.meanTaskMs < PIPELINE_MAX_TASK_MS) this.pipeline();
    if (!this.containers || this.queue.length === 0) return;

    // 2. Start containers for what still waits, beyond those already starting.
    const demand = new Map<string, { p: Placement; n: number }>();
    for (const item of this.queue) {
      const p = this.placementFor(item);
      const d = demand.get(p.key) ?? { p, n: 0 };
      d.n++;
      demand.set(p.key, d);
    }
    for (const { p, n } of demand.values()) {
      let starting = this.count((s) => s.key === p.key && s.state === "starting");
      while (starting < n) {
        if (this.count(() => true) >= this.opts.size) {
          // Full: an idle container of a placement nobody waits for makes room.
          const victim = [...this.slots.values()]
            .filter((s) => s.state === "ready" && !s.current && !demand.has(s.key))
            .sort((a, b) => a.idleSinceMs - b.idleSinceMs)[0];
          if (!victim) return;
          this.retire(victim);
          // The slot is freed when the victim has exited; dispatch runs again then.
          return;
        }
        this.launchSlot(p);
        starting++;
      }
    }
  }
}
