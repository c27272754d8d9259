/**
 * Workers that speak the worker protocol (WorkerRequest / WorkerResponse frames) over the link a
 * {@link WorkerLauncher} opens: bare processes over fd 3, Docker/Podman containers over a unix
 * socket, Apptainer processes over fd 3. One task runs at a time; short ones may be pipelined.
 */
import { toFabricError, readMessages, writeFrame } from "../../common/lean.js";
import type { Logger } from "../../common/logger.js";
// The worker protocol alone, not the proto/index barrel (which loads @grpc/grpc-js too).
import { WorkerRequest, WorkerResponse } from "../../proto/messages.js";
import type { WorkItem } from "../../proto/index.js";
import type { ContainerRuntimeName } from "../runtime/config.js";
import type { LaunchedWorker, WorkerExit, WorkerLauncher } from "../runtime/launcher.js";
import { workerLostError } from "./outcomes.js";
import { launchInto, TaskSlot } from "./task-slot.js";
import type { Placement, SlotEvents, SlotKind, WorkerSlot } from "./worker-slot.js";

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
    return launchInto(
      new ProtocolSlot(id, placement, this.noun, this.opts.log, events),
      this.opts.launcher,
      placement,
      this.opts.env,
      "node",
    );
  }

  close(): Promise<void> {
    return this.opts.launcher.close();
  }
}

class ProtocolSlot extends TaskSlot {
  private worker: LaunchedWorker | undefined;

  protected get linked(): boolean {
    return this.worker !== undefined;
  }

  protected kill(): void {
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

  protected send(item: WorkItem): void {
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
      if (this.finished(m.value.taskId)) this.events.onOutcome(this, { ...m.value, workerId: this.id });
    }
  }

  private onExit(exit: WorkerExit): void {
    this.ended(exit.description, () => workerLostError(this.noun, this.id, exit));
  }
}
