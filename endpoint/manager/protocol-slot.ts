/**
 * Workers that speak the worker protocol (WorkerRequest / WorkerResponse frames) over the link a
 * {@link WorkerLauncher} opens: bare processes over fd 3, Docker/Podman containers over a unix
 * socket, Apptainer processes over fd 3. One task runs at a time; short ones may be pipelined.
 */
import {
  type FabricError,
  toFabricError,
  readMessages,
  writeFrame,
  type LongTimer,
  setLongTimeout,
} from "../../common/lean.js";
import type { Logger } from "../../common/logger.js";
// The worker protocol alone, not the proto/index barrel (which loads @grpc/grpc-js too).
import { WorkerRequest, WorkerResponse } from "../../proto/messages.js";
import type { WorkItem } from "../../proto/index.js";
import type { ContainerRuntimeName } from "../runtime/config.js";
import type { LaunchedWorker, WorkerExit, WorkerLauncher } from "../runtime/launcher.js";
import { workerEnvOf } from "./early-workers.js";
import { failedOutcome, timeoutError, workerLostError } from "./outcomes.js";
import type { Placement, SlotEvents, SlotKind, SlotState, WorkerSlot } from "./worker-slot.js";

/** Options of a {@link ProtocolSlotKind}. */
export interface ProtocolSlotKindOptions {
  readonly launcher: WorkerLauncher;
  /** Extra environment for workers (walltime default, result limit). */
  readonly env?: Readonly<Record<string, string>> | undefined;
  readonly log: Logger;
}

/** Workers started by a launcher, speaking the worker protocol. */
export class ProtocolSlotKind implements SlotKind {
  readonly runtime: ContainerRuntimeName;
  /** What its workers are, for people. */
  readonly noun: string;

  constructor(private readonly opts: ProtocolSlotKindOptions) {
    this.runtime = opts.launcher.runtime;
    this.noun = this.runtime === "none" ? "worker process" : "worker container";
  }

  open(id: string, placement: Placement, events: SlotEvents): WorkerSlot {
    const slot = new ProtocolSlot(id, placement, this.noun, this.opts.log, events);
    this.opts.launcher
      .launch({
        id,
        image: placement.image,
        network: placement.network,
        env: workerEnvOf(this.opts.env, id),
      })
      .then(
        (worker) => slot.attach(worker),
        (err: unknown) => slot.launchFailed(err),
      );
    return slot;
  }

  close(): Promise<void> {
    return this.opts.launcher.close();
  }
}

class ProtocolSlot implements WorkerSlot {
  state: SlotState = "starting";
  current: WorkItem | undefined;
  startedAtMs = 0;
  idleSinceMs = Date.now();
  private worker: LaunchedWorker | undefined;
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
  private stoppedBecause: FabricError | undefined;
  private stopping = false;

  constructor(
    readonly id: string,
    readonly placement: Placement,
    private readonly noun: string,
    private readonly log: Logger,
    private readonly events: SlotEvents,
  ) {}

  get pipelined(): number {
    return this.next.length;
  }

  get acceptsPipelined(): boolean {
    return (
      this.worker !== undefined &&
      this.current !== undefined &&
      !this.stoppedBecause &&
      this.state === "ready"
    );
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
      "stopping a task's worker",
    );
    this.worker?.kill();
  }

  retire(): void {
    this.state = "retiring";
    this.log.debug({ workerId: this.id, image: this.placement.image }, "removing an idle worker");
    void this.worker?.stop(2000);
  }

  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    // A worker still starting is stopped once its launch settles (see attach).
    if (this.worker) await this.worker.stop(graceMs).catch(() => undefined);
  }

  attach(worker: LaunchedWorker): void {
    this.worker = worker;
    if (this.stopping) {
      void worker.stop(500).finally(() => this.events.onExit(this, undefined, []));
      return;
    }
    readMessages(worker.link, WorkerResponse, {
      onMessage: (res) => this.onMessage(res),
      onBadFrame: (err, problem) => {
        this.log.error({ err, workerId: this.id }, `${problem} from worker; killing it`);
        worker.kill();
      },
    });
    worker.link.on("error", () => {
      // The exit handler accounts for the worker; a broken link adds nothing.
    });
    void worker.exited.then(
      (exit) => this.onExit(exit),
      (err: unknown) => this.onExit({ description: `was lost: ${String(err)}`, outOfMemory: false }),
    );
  }

  launchFailed(err: unknown): void {
    this.events.onLaunchFailed(this, toFabricError(err));
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

  private send(item: WorkItem): void {
    writeFrame(this.worker!.link, WorkerRequest.encode({ item }).finish());
  }

  private onMessage(res: WorkerResponse): void {
    const m = res.msg;
    if (m?.$case === "ready") {
      if (this.state === "starting") this.state = "ready";
      this.idleSinceMs = Date.now();
      this.log.debug({ workerId: this.id, image: this.placement.image }, "worker ready");
      this.events.onReady(this);
    } else if (m?.$case === "outcome") {
      if (this.discard.delete(m.value.taskId)) return; // withdrawn while pipelined: reported already
      const item = this.current;
      if (!item || item.taskId !== m.value.taskId) {
        this.log.warn(
          { workerId: this.id, taskId: m.value.taskId },
          "outcome for a task this worker was not running",
        );
        return;
      }
      // A task being stopped ends with the stop's reason, when the worker exits.
      if (this.stoppedBecause) return;
      this.deadline?.clear();
      this.current = undefined;
      this.idleSinceMs = Date.now();
      // The worker goes on with the next pipelined task at once.
      const following = this.next.shift();
      if (following) this.begin(following);
      this.events.onOutcome(this, { ...m.value, workerId: this.id });
    }
  }

  private onExit(exit: WorkerExit): void {
    const item = this.current;
    this.deadline?.clear();
    // Tasks pipelined behind the one it was running never started: the pool hands them on.
    const returned = this.next.splice(0);
    const times = { startedAtMs: this.startedAtMs, finishedAtMs: Date.now(), workerId: this.id };
    let outcome;
    if (item && this.stoppedBecause) {
      outcome = failedOutcome(item.taskId, this.stoppedBecause, times);
    } else if (item) {
      this.log.warn(
        { workerId: this.id, taskId: item.taskId, exit: exit.description },
        "worker died while running a task",
      );
      outcome = failedOutcome(item.taskId, workerLostError(this.noun, this.id, exit), times);
    } else if (!this.stopping && this.state !== "retiring") {
      this.log.warn(
        { workerId: this.id, exit: exit.description },
        `${this.noun} ${exit.description}; replacing it`,
      );
    }
    this.events.onExit(this, outcome, returned);
  }
}
