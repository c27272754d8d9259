/**
 * The contract between a {@link WorkerPool} and its workers. The pool decides which task goes to
 * which slot; a slot runs what it is given on its worker and says how that went. A worker runtime
 * (bare processes and containers speaking the worker protocol today: see protocol-slot.ts) is a
 * {@link SlotKind}: it opens slots, and everything runtime-specific (how a worker starts, how
 * tasks reach it, how its end is told) stays inside them.
 */
import type { FabricError } from "../../common/lean.js";
import type { WorkItem, WorkOutcome } from "../../proto/index.js";
import type { ContainerRuntimeName } from "../runtime/config.js";

/** What a worker runs: JavaScript and shell functions (`node`), or Python functions. */
export type WorkerLanguage = "node" | "python";

/** Where a worker runs. Workers of one placement are interchangeable: any may take its tasks. */
export interface Placement {
  /** Identifies the placement (language, image and network together). */
  readonly key: string;
  readonly language: WorkerLanguage;
  /** Container image ("" for bare processes). */
  readonly image: string;
  /** Whether the worker may use the network (containers only). */
  readonly network: boolean;
}

/**
 * `starting`: its worker is being launched; `ready`: it said it is ready and takes tasks;
 * `retiring`: it is being removed and takes nothing more.
 */
export type SlotState = "starting" | "ready" | "retiring";

/** One worker of a pool, as the pool sees it. */
export interface WorkerSlot {
  /** The worker's id (`<managerId>/w<n>`), reported with each task it ran. */
  readonly id: string;
  readonly placement: Placement;
  readonly state: SlotState;
  /** The task running now. */
  readonly current: WorkItem | undefined;
  /** When `current` started (ms since the epoch). */
  readonly startedAtMs: number;
  /** Since when the slot has had nothing to run (ms since the epoch). */
  readonly idleSinceMs: number;
  /** How many tasks were sent behind `current` (see {@link WorkerSlot.pipeline}). */
  readonly pipelined: number;
  /** Whether tasks may be sent behind `current` now: its worker is up and the task is not being stopped. */
  readonly acceptsPipelined: boolean;
  /** Starts `item` on the worker; the slot must be ready and idle. */
  run(item: WorkItem): void;
  /** Sends tasks behind `current`; the worker starts each when the one before it ends. */
  pipeline(items: readonly WorkItem[]): void;
  /**
   * Takes back the pipelined tasks among `taskIds` (they never started): the caller reports them;
   * should the worker run one anyway, its outcome is dropped.
   */
  withdraw(taskIds: ReadonlySet<string>): WorkItem[];
  /** Ends `current` by stopping its worker; the task's outcome is `why`. */
  stopTask(why: FabricError): void;
  /** Removes the idle worker (the slot ends with {@link SlotEvents.onExit}). */
  retire(): void;
  /**
   * Stops the worker (politely, then by force after `graceMs`), or, while it is still starting,
   * once its launch settles. Resolves once a started worker is gone (at once for one still
   * starting); the slot ends with {@link SlotEvents.onExit} either way.
   */
  stop(graceMs: number): Promise<void>;
}

/** What a slot tells its pool. */
export interface SlotEvents {
  /** The worker is ready for tasks (first after launch; again whenever it says so). */
  onReady(slot: WorkerSlot): void;
  /** The slot started a task (one it was given to run, or the next pipelined one). */
  onStarted(slot: WorkerSlot, item: WorkItem, atMs: number): void;
  /** The worker finished `current` with this outcome (a result or the function's own error). */
  onOutcome(slot: WorkerSlot, outcome: WorkOutcome): void;
  /** The worker could not be started; the slot is gone. */
  onLaunchFailed(slot: WorkerSlot, err: FabricError): void;
  /**
   * The worker is gone, and so is the slot. `outcome` is the failure of the task it was running
   * (stopped, out of memory, worker lost); `returned` are the pipelined tasks it never started.
   */
  onExit(slot: WorkerSlot, outcome: WorkOutcome | undefined, returned: WorkItem[]): void;
}

/** A worker runtime: opens slots whose workers it launches. */
export interface SlotKind {
  /**
   * Where its workers run: `none` for processes on the node (the pool keeps a fixed set of them),
   * else the container runtime (the pool keeps warm pools per placement).
   */
  readonly runtime: ContainerRuntimeName;
  /** Starts launching a worker for `placement`; the slot reports to `events` from then on. */
  open(id: string, placement: Placement, events: SlotEvents): WorkerSlot;
  /** Releases what the kind holds (launcher connections, early workers), once every slot is gone. */
  close(): Promise<void>;
}
