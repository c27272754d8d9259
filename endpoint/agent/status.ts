/**
 * The endpoint's status as users see it (`fabric endpoint status`): published to the broker's
 * status bucket at every heartbeat, soon after managers come or go, and as "offline" on stop.
 */
import type { Logger } from "../../common/index.js";
import { EndpointStatus } from "../../proto/index.js";
import type { BlockStatus, PythonInfo } from "../../proto/index.js";

/** Delay of a status published because managers came or went (several in a row make one). */
const STATUS_SOON_MS = 100;

/** What the status counts, read when it is published. */
export interface StatusCounts {
  /** Tasks the agent holds. */
  readonly held: number;
  /** Tasks waiting in the endpoint's queue (as last read). */
  readonly queued: number;
  /** Tasks a manager said are running. */
  readonly running: number;
}

/** Options and sources of a {@link StatusReporter}. */
export interface StatusReporterOptions {
  readonly endpointId: string;
  readonly hostname: string;
  readonly agentVersion: string;
  /** Name of the execution provider ("local", "slurm", "pbs"). */
  readonly provider: string;
  readonly heartbeatIntervalS: number;
  readonly startedAtMs: number;
  readonly log: Logger;
  /** Whether the NATS link is open. */
  canPublish(): boolean;
  /** Publishes an encoded EndpointStatus, signed. */
  publish(bytes: Uint8Array): Promise<void>;
  /** Refreshes {@link StatusCounts.queued}; rejects when the server will not say. */
  readQueueLength(): Promise<void>;
  stopping(): boolean;
  counts(): StatusCounts;
  /** Each connected manager's workers, and how many tasks the agent has handed it and not had back. */
  managers(): Iterable<{ readonly workers: number; readonly assigned: number }>;
  blocks(): BlockStatus[];
  /** The endpoint's most recent trouble ("" when none). */
  lastError(): string;
  /** The Python interpreter of the workers, once known. */
  python(): PythonInfo | undefined;
}

/** Builds and publishes the endpoint's status. */
export class StatusReporter {
  private soonTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: StatusReporterOptions) {}

  /** Publishes the status shortly (coalesced): workers came or went, which users watch for. */
  soon(): void {
    if (this.soonTimer) return;
    this.soonTimer = setTimeout(() => {
      this.soonTimer = undefined;
      if (!this.o.stopping()) void this.publish("online");
    }, STATUS_SOON_MS);
  }

  /** Cancels a status announced by {@link soon}. */
  stop(): void {
    clearTimeout(this.soonTimer);
  }

  /** Publishes the status now; a failure is logged, never thrown. */
  async publish(state: "online" | "offline"): Promise<void> {
    if (!this.o.canPublish()) return;
    if (state === "online") {
      try {
        await this.o.readQueueLength();
      } catch {
        // Keep the last known figure: status must not fail because consumer info is refused.
      }
      // A heartbeat that was waiting on consumer info while the agent stopped must not land
      // after the "offline" status and make a stopped endpoint look online.
      if (this.o.stopping()) return;
    }
    try {
      await this.o.publish(EndpointStatus.encode(this.build(state, Date.now())).finish());
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, state }, "cannot publish endpoint status");
    }
  }

  /** The status as of `atMs`. */
  build(state: "online" | "offline", atMs: number): EndpointStatus {
    const counts = this.o.counts();
    let managers = 0;
    let workers = 0;
    let idleWorkers = 0;
    for (const m of this.o.managers()) {
      managers++;
      workers += m.workers;
      // Idle workers, not free room: a manager also queues tasks beyond its workers.
      idleWorkers += Math.max(0, m.workers - m.assigned);
    }
    return {
      endpointId: this.o.endpointId,
      atMs,
      state,
      hostname: this.o.hostname,
      agentVersion: this.o.agentVersion,
      outstandingTasks: counts.held + counts.queued,
      runningTasks: counts.running,
      managers,
      workers,
      idleWorkers,
      blocks: this.o.blocks(),
      provider: this.o.provider,
      lastError: this.o.lastError(),
      heartbeatIntervalS: this.o.heartbeatIntervalS,
      startedAtMs: this.o.startedAtMs,
      python: this.o.python(),
    };
  }
}
