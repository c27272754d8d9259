/** Deepest queue per worker at its manager when tasks are very short. */
export const MAX_WORKER_QUEUE_DEPTH = 32;
/** Most tasks held ready beyond the workers when tasks are very short. */
export const MAX_PREFETCH = 1024;
/** A worker's queue at its manager holds about this much work (ms). */
const QUEUED_WORK_MS = 20;
/** The agent holds about this much work ready beyond its workers (ms of all workers' time). */
const PREFETCHED_WORK_MS = 100;
/** Until outcomes tell otherwise, tasks are assumed this long (ms): the cautious sizes. */
const ASSUMED_TASK_MS = 1_000;
/** Weight of each new run time in the running mean. A long task moves it at once; short ones slowly. */
const WEIGHT = 0.05;

/**
 * Sizes the agent's queues from how long tasks run, unless the endpoint's config fixes them.
 *
 * Short tasks need deep queues: with one task queued per worker, every task costs a message to
 * the manager, a pull from NATS and an event-loop turn on each hop, and the fabric runs a few
 * thousand no-op tasks per second instead of several times that. Long tasks need shallow ones: a
 * task queued behind a long one at a busy manager waits while another manager may be idle, and
 * tasks pulled into an agent that cannot start them soon are not pulled by anyone else.
 * So the depths follow a running mean of task run times, starting from the cautious sizes. It
 * falls over many short tasks and rises at once when a task is seen running long.
 */
export class QueueSizer {
  private meanTaskMs = ASSUMED_TASK_MS;

  constructor(
    private readonly fixed: {
      readonly prefetch?: number | undefined;
      readonly workerQueueDepth?: number | undefined;
    },
  ) {}

  /** Records how long one task ran (ms). */
  observe(runMs: number): void {
    if (!(runMs >= 0)) return;
    this.meanTaskMs += WEIGHT * (runMs - this.meanTaskMs);
  }

  /**
   * Records that a task has been running `ms` and still is: the mean is at least that at once, so
   * that tasks which never finish soon are not queued deep behind each other.
   */
  observeRunning(ms: number): void {
    if (ms > this.meanTaskMs) this.meanTaskMs = ms;
  }

  /** The running mean of task run times (ms). */
  get taskMs(): number {
    return this.meanTaskMs;
  }

  /** Tasks each worker may hold at once: one running, the rest queued at its manager. */
  workerQueueDepth(): number {
    if (this.fixed.workerQueueDepth !== undefined) return this.fixed.workerQueueDepth;
    const depth = Math.floor(QUEUED_WORK_MS / Math.max(this.meanTaskMs, 0.5));
    return Math.min(MAX_WORKER_QUEUE_DEPTH, Math.max(2, depth));
  }

  /** Tasks the agent holds ready beyond what its `workers` hold. */
  prefetch(workers: number): number {
    if (this.fixed.prefetch !== undefined) return this.fixed.prefetch;
    const base = Math.max(16, 2 * workers);
    const byTime = Math.ceil((workers * PREFETCHED_WORK_MS) / Math.max(this.meanTaskMs, 0.1));
    return Math.min(Math.max(base, MAX_PREFETCH), Math.max(base, byTime));
  }
}
