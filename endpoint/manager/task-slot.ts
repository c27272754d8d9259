/**
 * What every slot kind shares: the task running now and those pipelined behind it, its timeout,
 * stopping it, and the account of a worker's end (the running task's failure, the pipelined
 * tasks handed back). A kind adds how its worker is started, spoken to and killed.
 */
import { type FabricError, type LongTimer, setLongTimeout } from "../../common/lean.js";
import type { Logger } from "../../common/logger.js";
import type { WorkItem, WorkOutcome } from "../../proto/index.js";
import type { LaunchedWorker, WorkerLauncher } from "../runtime/launcher.js";
import { workerEnvOf } from "./early-workers.js";
import { failedOutcome, timeoutError } from "./outcomes.js";
import type { Placement, SlotEvents, SlotState, WorkerSlot } from "./worker-slot.js";

/** A slot whose worker runs one task at a time and may be sent more behind it. */
export abstract class TaskSlot implements WorkerSlot {
  state: SlotState = "starting";
  current: WorkItem | undefined;
  startedAtMs = 0;
  idleSinceMs = Date.now();
  /**
   * Tasks sent to the worker behind `current`, in order: the worker starts each when the one
   * before it ends.
   */
  private readonly next: WorkItem[] = [];
  /** Pipelined tasks withdrawn: the worker may still run them; their outcomes are dropped. */
  private readonly discard = new Set<string>();
  /** Fires when the current task exceeds its timeout (up to 30 days: past setTimeout's limit). */
  private deadline: LongTimer | undefined;
  /** Why the pool itself stopped this worker's task (timeout, cancellation): its outcome. */
  protected stoppedBecause: FabricError | undefined;
  /** Set once the pool asked the slot to stop. */
  protected stopping = false;

  constructor(
    readonly id: string,
    readonly placement: Placement,
    /** What the worker is, for people ("worker process", "Python interpreter"). */
    protected readonly noun: string,
    protected readonly log: Logger,
    protected readonly events: SlotEvents,
  ) {}

  /** Whether the worker's link is up (tasks can be sent). */
  protected abstract get linked(): boolean;
  /** Sends `item` to the worker. */
  protected abstract send(item: WorkItem): void;
  /** Kills the worker now; its end is reported through {@link ended}. */
  protected abstract kill(): void;
  abstract retire(): void;
  abstract stop(graceMs: number): Promise<void>;

  get pipelined(): number {
    return this.next.length;
  }

  get acceptsPipelined(): boolean {
    return this.linked && this.current !== undefined && !this.stoppedBecause && this.state === "ready";
  }

  run(item: WorkItem): void {
    this.begin(item);
    this.send(item);
  }

  pipeline(items: readonly WorkItem[]): void {
    this.next.push(...items);
    for (const item of items) this.send(item);
  }

  withdraw(taskIds: ReadonlySet<string>): WorkItem[] {
    const taken = this.next.filter((i) => taskIds.has(i.taskId));
    for (const item of taken) {
      this.next.splice(this.next.indexOf(item), 1);
      this.discard.add(item.taskId);
    }
    return taken;
  }

  stopTask(why: FabricError): void {
    if (!this.current || this.stoppedBecause) return;
    this.stoppedBecause = why;
    this.log.info(
      { workerId: this.id, taskId: this.current.taskId, why: why.message },
      `stopping a task's ${this.noun}`,
    );
    this.kill();
  }

  /** Makes `item` the task running now (it was sent to the worker already or is about to be). */
  private begin(item: WorkItem): void {
    this.current = item;
    this.startedAtMs = Date.now();
    const timeoutS = item.timeoutS ?? 0;
    if (timeoutS > 0) {
      this.deadline = setLongTimeout(() => this.stopTask(timeoutError(timeoutS)), timeoutS * 1000);
    }
    this.events.onStarted(this, item, this.startedAtMs);
  }

  /**
   * The worker finished task `taskId`: returns it and when it started, after starting the next
   * pipelined task; undefined when its outcome is to be dropped (withdrawn, not the running
   * task, or being stopped: that task ends with the stop's reason when the worker exits).
   */
  protected finished(taskId: string): { readonly item: WorkItem; readonly startedAtMs: number } | undefined {
    if (this.discard.delete(taskId)) return undefined; // withdrawn while pipelined: reported already
    const item = this.current;
    if (!item || item.taskId !== taskId) {
      this.log.warn({ workerId: this.id, taskId }, `outcome for a task this ${this.noun} was not running`);
      return undefined;
    }
    if (this.stoppedBecause) return undefined;
    this.deadline?.clear();
    const startedAtMs = this.startedAtMs;
    this.current = undefined;
    this.idleSinceMs = Date.now();
    // The worker goes on with the next pipelined task at once.
    const following = this.next.shift();
    if (following) this.begin(following);
    return { item, startedAtMs };
  }

  /**
   * The worker is gone (`how`, for people): the running task fails with the stop's reason or
   * `lost()`, and the tasks pipelined behind it, which never started, go back to the pool.
   */
  protected ended(how: string, lost: () => FabricError): void {
    const item = this.current;
    this.deadline?.clear();
    const returned = this.next.splice(0);
    const times = { startedAtMs: this.startedAtMs, finishedAtMs: Date.now(), workerId: this.id };
    let outcome: WorkOutcome | undefined;
    if (item && this.stoppedBecause) {
      outcome = failedOutcome(item.taskId, this.stoppedBecause, times);
    } else if (item) {
      this.log.warn(
        { workerId: this.id, taskId: item.taskId, exit: how },
        `${this.noun} died while running a task`,
      );
      outcome = failedOutcome(item.taskId, lost(), times);
    } else if (!this.stopping && this.state !== "retiring") {
      this.log.warn({ workerId: this.id, exit: how }, `${this.noun} ${how}; replacing it`);
    }
    this.current = undefined;
    this.events.onExit(this, outcome, returned);
  }
}

/** A slot whose worker a {@link WorkerLauncher} starts. */
export interface LaunchedSlot extends WorkerSlot {
  /** The worker runs: speak to it. */
  attach(worker: LaunchedWorker): void;
  /** The worker could not start. */
  launchFailed(err: unknown): void;
}

/**
 * Starts the worker of `slot` (placement `placement`, worker id `id`) through `launcher`, and hands
 * the slot the worker once it runs, or the reason it could not start. Returns the slot.
 */
export function launchInto<S extends LaunchedSlot>(
  slot: S,
  launcher: WorkerLauncher,
  placement: Placement,
  env: Readonly<Record<string, string>> | undefined,
  language: "node" | "python",
): S {
  launcher
    .launch({
      id: slot.id,
      image: placement.image,
      network: placement.network,
      env: workerEnvOf(env, slot.id),
      ...(language === "python" ? { language } : {}),
    })
    .then(
      (worker) => slot.attach(worker),
      (err: unknown) => slot.launchFailed(err),
    );
  return slot;
}
