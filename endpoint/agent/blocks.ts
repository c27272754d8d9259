/**
 * The endpoint's blocks (a local process, a Slurm or PBS job each, running one worker manager
 * per node): launched, watched through the provider, scaled out and in by the BlockScaler,
 * drained before their walltime, cancelled, and what happens to the tasks of a manager that is
 * lost with its block.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { toFabricError, newId, type Logger } from "../../common/index.js";
import type { BlockStatus } from "../../proto/index.js";
import { scalingOf } from "../config.js";
import type { EndpointConfig } from "../config.js";
import { isJobEnded } from "../provider.js";
import type { BlockJobStatus, ExecutionProvider } from "../provider.js";
import { parseWalltime } from "../providers/batch-script.js";
import { blockLogTail } from "../providers/block-log.js";
import { BlockScaler } from "./block-scaler.js";
import type { BlockView } from "./block-scaler.js";

/** Ended blocks stay visible in status this long, so their reasons can be read. */
const ENDED_BLOCK_VISIBLE_MS = 10 * 60_000;
/** How long the agent waits for a dead manager's job to show its final state. */
const JOB_END_WAIT_MS = 4000;
/** How often scaling is decided; quick, so a cold start (0 blocks) is quick too. */
export const SCALE_TICK_MS = 200;

/** A connected manager, as blocks see it (a ManagerConnection). */
export interface BlockManager {
  readonly managerId: string;
  readonly blockId: string;
  readonly workers: number;
  /** Tasks on it; a lost manager's are taken from here. */
  readonly assigned: Set<string>;
}

/** Options and callbacks of {@link Blocks}. */
export interface BlocksOptions<M extends BlockManager> {
  readonly config: EndpointConfig;
  readonly provider: ExecutionProvider;
  /** Where each block's log goes (`<blockId>.log`). */
  readonly blockLogDir: string;
  /** Entry file of the worker manager. */
  readonly managerMain: string;
  readonly log: Logger;
  /** @default Date.now */
  readonly now?: () => number;
  /** The manager server: which blocks' managers it lets in, and who is connected. */
  readonly server: {
    expectBlock(blockId: string, secret: string): void;
    forgetBlock(blockId: string): void;
    managers(): Iterable<M>;
  };
  /** Where managers connect back to (`host:port`). */
  managerAddress(): string;
  /** Tasks this endpoint owes: held by the agent plus waiting in its queue (as last read). */
  outstanding(): number;
  /** Refreshes the queue's length behind {@link outstanding}; rejects when the server will not say. */
  readQueueLength(): Promise<void>;
  /** Manager `m` is gone with these tasks; `detail` and `reason` say how (see TaskTracker.tasksLost). */
  tasksLost(m: M, taskIds: readonly string[], detail: string, reason: string): void;
  /** No block could start for too long: fail the tasks held and queued, saying `why`. */
  failWaitingTasks(why: string): Promise<void>;
  noteError(message: string): void;
  lastError(): string;
  stopping(): boolean;
}

interface BlockRecord {
  readonly blockId: string;
  readonly secret: string;
  jobId: string;
  /** What status shows; `draining`: near its walltime, takes no new tasks. */
  state: "submitting" | "pending" | "held" | "running" | "connected" | "draining" | "ended" | "cancelling";
  sinceMs: number;
  /** The scheduler's word on it (pending reason, why it ended). */
  reason: string;
  /** Cancelled by us: its end is not a failure. */
  cancelRequested: boolean;
  readonly logFile: string;
  /** When its job started running (scheduler's time if it says, else when first seen running). */
  startedAtMs: number | undefined;
  /** Managers of this block connected now. */
  managers: number;
  everConnected: boolean;
  /** Since when none of its managers has had a task (undefined: busy). */
  idleSinceMs: number | undefined;
  draining: boolean;
}

/** The blocks of one endpoint and the policy that launches and ends them. */
export class Blocks<M extends BlockManager = BlockManager> {
  private readonly blocks = new Map<string, BlockRecord>();
  /** Recently ended blocks, newest first, for status. */
  private endedBlocks: BlockRecord[] = [];
  private readonly scaler: BlockScaler;
  private readonly now: () => number;
  private scaling = false;
  private polling = false;
  private failingWaiting = false;
  private lastDemandCheckMs = 0;

  constructor(private readonly o: BlocksOptions<M>) {
    this.now = o.now ?? Date.now;
    this.scaler = new BlockScaler({
      ...scalingOf(o.config.provider),
      failTasksAfterMs: o.config.provider.failTasksWithoutBlocksAfterSeconds * 1000,
    });
  }

  /** Blocks not ended. */
  get size(): number {
    return this.blocks.size;
  }

  /** Whether managers of this block take new tasks (it is not draining before its walltime). */
  takesWork(blockId: string): boolean {
    return !this.blocks.get(blockId)?.draining;
  }

  /** The blocks as status shows them: live ones, then recently ended ones. */
  statuses(): BlockStatus[] {
    return [...this.blocks.values(), ...this.endedBlocks].map((b) => ({
      blockId: b.blockId,
      jobId: b.jobId,
      state: b.state,
      sinceMs: b.sinceMs,
      reason: b.reason,
    }));
  }

  private workers(): number {
    let n = 0;
    for (const m of this.o.server.managers()) n += m.workers;
    return n;
  }

  /** Blocks that count: not ended, not being cancelled. */
  private liveBlocks(): BlockRecord[] {
    return [...this.blocks.values()].filter((b) => b.state !== "ended" && b.state !== "cancelling");
  }

  // ---------------------------------------------------------------- managers

  /** A manager of one of our blocks connected: the block serves, and the environment works. */
  managerReady(m: M): void {
    const b = this.blocks.get(m.blockId);
    if (b) {
      const now = this.now();
      if (!b.draining && b.state !== "cancelling") b.state = "connected";
      b.sinceMs = now;
      b.reason = "";
      b.managers += 1;
      b.everConnected = true;
      b.startedAtMs ??= now;
      b.idleSinceMs ??= now;
    }
    this.scaler.recordHealthy();
  }

  /** A manager's connection dropped or went silent: its tasks are lost with it (see {@link loseTasks}). */
  managerLost(m: M, why: string): void {
    const level = this.o.stopping() ? "debug" : "warn";
    this.o.log[level]({ managerId: m.managerId, blockId: m.blockId, tasks: m.assigned.size }, why);
    const taskIds = [...m.assigned];
    m.assigned.clear();
    const b = this.blocks.get(m.blockId);
    if (b) b.managers = Math.max(0, b.managers - 1);
    void this.loseTasks(b, m, taskIds, why);
  }

  /**
   * A manager is gone with `taskIds` on it. Waits briefly for its job's final state, so the tasks
   * fail with a reason naming the job and how it ended (or go back to the queue, when retries on
   * block loss are configured); a job still running without its manager is cancelled.
   */
  private async loseTasks(
    b: BlockRecord | undefined,
    m: M,
    taskIds: readonly string[],
    why: string,
  ): Promise<void> {
    const provider = this.o.provider.name;
    let detail = `${why} (the manager process or its node may have died)`;
    let reason = "worker_lost";
    if (b && !this.o.stopping() && b.state !== "ended" && !b.cancelRequested) {
      const final = b.jobId ? await this.awaitJobEnd(b.jobId, JOB_END_WAIT_MS) : undefined;
      if (final && isJobEnded(final.state)) {
        detail = `its block ended: ${provider} job ${b.jobId} (block ${b.blockId}) ${final.state}${final.reason ? ` (${final.reason})` : ""}`;
        if (final.state === "timeout") reason = "walltime";
        if (final.state === "out_of_memory") reason = "out_of_memory";
        this.endBlock(b, `block ${b.blockId} (job ${b.jobId}) ended: ${final.reason ?? final.state}`, false);
        this.o.noteError(detail);
      } else {
        detail = `${why}; its ${provider} job ${b.jobId || "(none)"} was ${final?.state ?? "in an unknown state"}, so the endpoint cancelled it`;
        this.o.noteError(detail);
        // Make sure the block is gone; the scaler replaces it if it is still needed.
        this.cancelBlock(b, why);
      }
    }
    this.o.tasksLost(m, taskIds, detail, reason);
  }

  /** Polls the provider until `jobId` has ended or `waitMs` passed; the last state seen. */
  private async awaitJobEnd(jobId: string, waitMs: number): Promise<BlockJobStatus | undefined> {
    const deadline = this.now() + waitMs;
    let last: BlockJobStatus | undefined;
    for (;;) {
      try {
        last = (await this.o.provider.status([jobId])).get(jobId) ?? last;
      } catch (err) {
        this.o.log.debug({ jobId, err: (err as Error).message }, "cannot read a lost block's state");
      }
      if ((last && isJobEnded(last.state)) || this.now() >= deadline || this.o.stopping()) return last;
      await sleep(250);
    }
  }

  // ---------------------------------------------------------------- ending blocks

  private cancelBlock(b: BlockRecord, why: string, failure = true): void {
    if (b.cancelRequested) return;
    b.cancelRequested = true;
    b.state = "cancelling";
    b.reason = why;
    b.sinceMs = this.now();
    // A block still being submitted is cancelled once its job id is known (see launch).
    if (!b.jobId) return;
    void this.o.provider
      .cancel(b.jobId)
      .catch((err: unknown) => {
        const msg = toFabricError(err).message;
        this.o.noteError(`cannot cancel block ${b.blockId} (job ${b.jobId}): ${msg}`);
        this.o.log.warn({ blockId: b.blockId, jobId: b.jobId, err: msg }, "cannot cancel block");
      })
      .finally(() => {
        this.endBlock(b, why, failure);
      });
  }

  private endBlock(b: BlockRecord, reason: string, failure: boolean): void {
    if (!this.blocks.has(b.blockId)) return;
    this.blocks.delete(b.blockId);
    this.o.server.forgetBlock(b.blockId);
    b.state = "ended";
    b.reason = reason;
    b.sinceMs = this.now();
    this.endedBlocks = [
      b,
      ...this.endedBlocks.filter((e) => this.now() - e.sinceMs < ENDED_BLOCK_VISIBLE_MS),
    ].slice(0, 20);
    if (failure && !this.o.stopping()) {
      this.scaler.recordFailure(this.now());
      this.o.noteError(reason);
    }
    this.o.log.info({ blockId: b.blockId, jobId: b.jobId, reason }, "block ended");
  }

  /** Cancels every block (the agent is stopping); resolves once the provider has answered for each. */
  async cancelAll(): Promise<void> {
    await Promise.all(
      [...this.blocks.values()].map(async (b) => {
        b.cancelRequested = true;
        if (b.jobId)
          await this.o.provider
            .cancel(b.jobId)
            .catch((err: unknown) => this.o.log.warn({ err, blockId: b.blockId }, "cannot cancel block"));
      }),
    );
  }

  // ---------------------------------------------------------------- watching jobs

  /** How often the provider is asked for job states: `override`, else 1 s (local) or statusIntervalSeconds. */
  pollIntervalMs(override?: number): number {
    const p = this.o.config.provider;
    return override ?? (p.type === "local" ? 1000 : p.statusIntervalSeconds * 1000);
  }

  /** Asks the provider for job states: notices ended, held, started and never-connecting blocks. */
  async poll(): Promise<void> {
    if (this.polling || this.o.stopping()) return;
    const live = this.liveBlocks().filter((b) => b.jobId);
    if (live.length === 0) return;
    const provider = this.o.provider;
    this.polling = true;
    try {
      const states = await provider.status(live.map((b) => b.jobId));
      const now = this.now();
      const connectTimeoutMs = this.o.config.provider.connectTimeoutSeconds * 1000;
      for (const b of live) {
        const s = states.get(b.jobId);
        if (!s || !this.blocks.has(b.blockId) || b.cancelRequested) continue;
        const job = `${provider.name} job ${b.jobId}`;
        if (isJobEnded(s.state)) {
          if (b.managers > 0) continue; // its managers' connections drop next; loseTasks reports it
          const tail = b.everConnected ? "" : blockLogTail(b.logFile);
          const why = `block ${b.blockId} (${job}) ${b.everConnected ? "ended" : "ended before its manager connected"}: ${s.reason ?? s.state}${tail ? `; its log ends: ${tail}` : ""}`;
          if (!b.everConnected) this.o.log.warn({ blockId: b.blockId, jobId: b.jobId, state: s.state }, why);
          this.endBlock(b, why, !b.everConnected);
          if (!b.everConnected) this.o.noteError(why);
        } else if (s.state === "held" || s.state === "pending") {
          const reason = s.reason ?? "";
          if (b.state === "submitting" || b.state === "pending" || b.state === "held") {
            if (b.state !== s.state) b.sinceMs = now;
            b.state = s.state;
            b.reason = reason;
          }
          if (s.state === "held")
            this.o.noteError(`block ${b.blockId} (${job}) is held and will not start on its own: ${reason}`);
        } else if (s.state === "running") {
          b.startedAtMs ??= Math.min(now, s.startedAtMs ?? now);
          if (b.state === "pending" || b.state === "held" || b.state === "submitting") {
            b.state = "running";
            b.sinceMs = now;
            b.reason = "";
          }
          if (!b.everConnected && now - b.startedAtMs > connectTimeoutMs) {
            const tail = blockLogTail(b.logFile);
            const why = `block ${b.blockId} (${job}) has run for ${Math.round((now - b.startedAtMs) / 1000)} s but no worker manager connected back to ${this.o.managerAddress()}${tail ? `; its log ends: ${tail}` : ""}`;
            this.o.noteError(why);
            this.o.log.warn({ blockId: b.blockId, jobId: b.jobId }, why);
            this.cancelBlock(b, why, true);
          }
        }
      }
    } catch (err) {
      const fe = toFabricError(err);
      this.o.noteError(`${provider.name}: cannot read job states: ${fe.message}`);
      this.o.log.warn({ err: fe.message }, "cannot read block job states");
    } finally {
      this.polling = false;
    }
  }

  // ---------------------------------------------------------------- scaling

  /** Reads how many tasks wait in the queue: often while no worker is up (that is a cold start). */
  private async refreshQueued(now: number): Promise<void> {
    const every = this.workers() === 0 ? SCALE_TICK_MS : 1000;
    if (now - this.lastDemandCheckMs < every) return;
    this.lastDemandCheckMs = now;
    try {
      await this.o.readQueueLength();
    } catch (err) {
      this.o.log.debug({ err: (err as Error).message }, "cannot read the task queue's length");
    }
  }

  /** Scales blocks out and in, drains blocks near their walltime, fails tasks no block can serve. */
  async scale(): Promise<void> {
    if (this.scaling || this.o.stopping()) return;
    this.scaling = true;
    try {
      let now = this.now();
      await this.refreshQueued(now);
      now = this.now();
      const busy = new Set<string>();
      for (const m of this.o.server.managers()) if (m.assigned.size > 0) busy.add(m.blockId);
      const p = this.o.config.provider;
      const walltimeMs = p.type === "local" ? undefined : (parseWalltime(p.walltime) ?? 0) * 1000;
      const drainMs = p.type === "local" ? 0 : p.drainBeforeWalltimeSeconds * 1000;
      for (const b of this.liveBlocks()) {
        if (busy.has(b.blockId)) b.idleSinceMs = undefined;
        else b.idleSinceMs ??= now;
        if (
          walltimeMs &&
          b.startedAtMs !== undefined &&
          !b.draining &&
          now >= b.startedAtMs + walltimeMs - drainMs
        ) {
          b.draining = true;
          b.state = "draining";
          b.sinceMs = now;
          b.reason = `its walltime ends within ${Math.round(drainMs / 1000)} s: no new tasks`;
          this.o.log.info({ blockId: b.blockId, jobId: b.jobId }, "block near its walltime; draining it");
        }
        if (b.draining && !busy.has(b.blockId)) this.cancelBlock(b, "drained before its walltime", false);
      }
      const views: BlockView[] = this.liveBlocks().map((b) => ({
        blockId: b.blockId,
        state: b.draining ? "draining" : b.everConnected ? "connected" : "pending",
        idleSinceMs: b.idleSinceMs,
      }));
      const d = this.scaler.decide(now, this.o.outstanding(), views);
      for (const id of d.cancel) {
        const b = this.blocks.get(id);
        if (b) this.cancelBlock(b, `idle for ${p.idleTimeoutSeconds} s (scaling in to ${d.target})`, false);
      }
      if (d.launch > 0) {
        this.o.log.info(
          { launch: d.launch, target: d.target, outstanding: this.o.outstanding() },
          "scaling out",
        );
        await Promise.all(Array.from({ length: d.launch }, () => this.launch()));
      }
      if (this.scaler.shouldFailWaitingTasks(this.now(), this.o.outstanding(), this.workers())) {
        void this.failWaitingTasks();
      }
    } catch (err) {
      this.o.noteError(`block scaling: ${(err as Error).message}`);
      this.o.log.error({ err }, "block scaling failed");
    } finally {
      this.scaling = false;
    }
  }

  /**
   * No block could start for `failTasksWithoutBlocksAfterSeconds` while tasks waited: fail them
   * (those held here and those in the queue) with the scheduler's reason, rather than let them
   * wait forever.
   */
  private async failWaitingTasks(): Promise<void> {
    if (this.failingWaiting || this.o.stopping()) return;
    this.failingWaiting = true;
    const bound = this.o.config.provider.failTasksWithoutBlocksAfterSeconds;
    const why = `no block could start on this endpoint for ${bound} s: ${this.o.lastError() || "its blocks keep failing"}`;
    this.o.log.warn({ why }, "failing the tasks waiting for blocks");
    try {
      await this.o.failWaitingTasks(why);
    } finally {
      this.failingWaiting = false;
    }
  }

  private async launch(): Promise<void> {
    const { config, provider } = this.o;
    const blockId = `b-${newId().slice(0, 8)}`;
    const secret = randomBytes(24).toString("base64url");
    const logFile = path.join(this.o.blockLogDir, `${blockId}.log`);
    const b: BlockRecord = {
      blockId,
      secret,
      jobId: "",
      state: "submitting",
      sinceMs: this.now(),
      reason: "",
      cancelRequested: false,
      logFile,
      startedAtMs: undefined,
      managers: 0,
      everConnected: false,
      idleSinceMs: this.now(),
      draining: false,
    };
    this.blocks.set(blockId, b);
    this.o.server.expectBlock(blockId, secret);
    const workers = config.provider.workersPerNode;
    try {
      b.jobId = await provider.submitBlock({
        blockId,
        command: [
          process.execPath,
          this.o.managerMain,
          "--agent",
          this.o.managerAddress(),
          "--block",
          blockId,
          "--workers",
          String(workers),
        ],
        env: {
          FABRIC_BLOCK_SECRET: secret,
          FABRIC_SHELL_WALLTIME_S: String(config.shell.defaultWalltimeSeconds),
          FABRIC_MAX_RESULT_BYTES: String(config.limits.maxResultBytes),
          FABRIC_PYTHON: config.python.executable,
          // Where the manager runs functions (bare processes unless a container runtime is set).
          ...(config.container.runtime !== "none"
            ? { FABRIC_CONTAINER: JSON.stringify(config.container) }
            : {}),
        },
        logFile,
      });
      if (b.cancelRequested) {
        // Cancelled (the agent is stopping) while sbatch/qsub was answering.
        b.cancelRequested = false;
        this.cancelBlock(b, b.reason || "cancelled while being submitted", false);
        return;
      }
      if (b.state === "submitting") b.state = "pending";
      b.sinceMs = this.now();
      this.o.log.info({ blockId, jobId: b.jobId, workers }, "block launched");
    } catch (err) {
      const why = `cannot launch block ${blockId}: ${(err as Error).message}`;
      this.o.noteError(why);
      this.o.log.error({ blockId, err: (err as Error).message }, why);
      this.endBlock(b, why, true);
    }
  }
}
