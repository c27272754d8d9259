import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";

import { errorToInfo, FabricError } from "../../common/errors.js";
import { readFrames, writeFrame } from "../../common/framing.js";
import type { Logger } from "../../common/logger.js";
import { WorkerRequest, WorkerResponse } from "../../proto/index.js";
import type { WorkItem, WorkOutcome } from "../../proto/index.js";

/** The worker entry, beside this file once compiled (dist/endpoint/worker/main.js). */
export const WORKER_MAIN = fileURLToPath(new URL("../worker/main.js", import.meta.url));

/** What a pool tells its owner. */
export interface WorkerPoolEvents {
  /** A task was handed to a worker. */
  onStarted(taskId: string, workerId: string, atMs: number): void;
  /** A task ended (successfully, with a function error, or because its worker died). */
  onOutcome(outcome: WorkOutcome): void;
}

/** Options of a {@link WorkerPool}. */
export interface WorkerPoolOptions {
  readonly size: number;
  readonly managerId: string;
  /** Extra environment for workers (walltime default, result limit). */
  readonly env?: NodeJS.ProcessEnv;
  readonly log: Logger;
  /** Entry file of the worker process. @default WORKER_MAIN */
  readonly workerMain?: string;
}

interface WorkerSlot {
  readonly id: string;
  child: ChildProcess;
  link: Socket;
  ready: boolean;
  current: WorkItem | undefined;
  startedAtMs: number;
}

/**
 * The worker processes of one manager: keeps `size` of them alive, runs one task at a time on
 * each, queues the rest, and turns a worker's death into a `worker_lost` outcome for its task.
 */
export class WorkerPool {
  private readonly slots = new Map<string, WorkerSlot>();
  private readonly queue: WorkItem[] = [];
  private nextWorker = 0;
  private stopping = false;
  private readonly log: Logger;

  constructor(
    private readonly opts: WorkerPoolOptions,
    private readonly events: WorkerPoolEvents,
  ) {
    this.log = opts.log;
  }

  /** Starts the workers. */
  start(): void {
    for (let i = 0; i < this.opts.size; i++) this.spawnWorker();
  }

  /** Workers ready and without a task. */
  get idle(): number {
    let n = 0;
    for (const s of this.slots.values()) if (s.ready && !s.current) n++;
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

  /** Queues tasks; each goes to the next idle worker. */
  submit(items: readonly WorkItem[]): void {
    this.queue.push(...items);
    this.dispatch();
  }

  /** Stops every worker (SIGTERM, then SIGKILL after `graceMs`) and resolves when all have exited. */
  async stop(graceMs = 2000): Promise<void> {
    this.stopping = true;
    const exits = [...this.slots.values()].map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.child.exitCode !== null || s.child.signalCode !== null) return resolve();
          s.child.once("exit", () => resolve());
          s.child.kill("SIGTERM");
          setTimeout(() => s.child.kill("SIGKILL"), graceMs).unref();
        }),
    );
    await Promise.all(exits);
  }

  private spawnWorker(): void {
    const id = `${this.opts.managerId}/w${this.nextWorker++}`;
    const child = spawn(process.execPath, [this.opts.workerMain ?? WORKER_MAIN], {
      stdio: ["ignore", "inherit", "inherit", "pipe"],
      env: { ...process.env, ...this.opts.env, FABRIC_WORKER_ID: id },
    });
    const link = child.stdio[3] as Socket;
    const slot: WorkerSlot = { id, child, link, ready: false, current: undefined, startedAtMs: 0 };
    this.slots.set(id, slot);
    readFrames(
      link,
      (frame) => this.onFrame(slot, frame),
      (err) => {
        this.log.error({ err, workerId: id }, "protocol error from worker; killing it");
        child.kill("SIGKILL");
      },
    );
    link.on("error", () => {
      // The exit handler below accounts for the worker; a broken pipe adds nothing.
    });
    child.on("error", (err) => this.log.error({ err, workerId: id }, "cannot start worker process"));
    child.on("exit", (code, signal) => this.onExit(slot, code, signal));
  }

  private onFrame(slot: WorkerSlot, frame: Uint8Array): void {
    let res: WorkerResponse;
    try {
      res = WorkerResponse.decode(frame);
    } catch (err) {
      this.log.error({ err, workerId: slot.id }, "undecodable frame from worker; killing it");
      slot.child.kill("SIGKILL");
      return;
    }
    const m = res.msg;
    if (m?.$case === "ready") {
      slot.ready = true;
      this.log.debug({ workerId: slot.id }, "worker ready");
      this.dispatch();
    } else if (m?.$case === "outcome") {
      const item = slot.current;
      if (!item || item.taskId !== m.value.taskId) {
        this.log.warn(
          { workerId: slot.id, taskId: m.value.taskId },
          "outcome for a task this worker was not running",
        );
        return;
      }
      slot.current = undefined;
      this.events.onOutcome({ ...m.value, workerId: slot.id });
      this.dispatch();
    }
  }

  private onExit(slot: WorkerSlot, code: number | null, signal: NodeJS.Signals | null): void {
    this.slots.delete(slot.id);
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    const item = slot.current;
    if (item) {
      this.log.warn(
        { workerId: slot.id, taskId: item.taskId, code, signal },
        "worker died while running a task",
      );
      const err = new FabricError(
        "UNAVAILABLE",
        `the worker process ${slot.id} ${how} while running the task`,
        {
          reason: "worker_lost",
        },
      );
      this.events.onOutcome({
        taskId: item.taskId,
        ok: false,
        resultJson: Buffer.alloc(0),
        error: errorToInfo(err),
        startedAtMs: slot.startedAtMs,
        finishedAtMs: Date.now(),
        workerId: slot.id,
      });
    } else if (!this.stopping) {
      this.log.warn({ workerId: slot.id, code, signal }, `worker ${how}; replacing it`);
    }
    if (!this.stopping) this.spawnWorker();
  }

  private dispatch(): void {
    if (this.stopping) return;
    for (const slot of this.slots.values()) {
      if (this.queue.length === 0) return;
      if (!slot.ready || slot.current) continue;
      const item = this.queue.shift()!;
      slot.current = item;
      slot.startedAtMs = Date.now();
      writeFrame(slot.link, WorkerRequest.encode({ item }).finish());
      this.events.onStarted(item.taskId, slot.id, slot.startedAtMs);
    }
  }
}
