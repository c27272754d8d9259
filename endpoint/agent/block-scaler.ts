/** Options of a {@link BlockScaler}. */
export interface BlockScalerOptions {
  /** Blocks launched at start, whatever the demand. */
  readonly initBlocks: number;
  /** Fewest blocks kept while idle. @default 0 */
  readonly minBlocks?: number;
  /** Never more than this many at once (draining ones included). */
  readonly maxBlocks: number;
  /** Workers one block brings (workers per node × nodes per block). @default 1 */
  readonly workersPerBlock?: number;
  /** Share of outstanding tasks to provision workers for (0..1). @default 1 */
  readonly parallelism?: number;
  /** A block idle this long may be cancelled when above the target. @default 120000 */
  readonly idleTimeoutMs?: number;
  /** Waiting tasks fail after this long while no block can start. @default 300000 */
  readonly failTasksAfterMs?: number;
  /** First wait after a block failed. @default 1000 */
  readonly minBackoffMs?: number;
  /** Longest wait between launches while blocks keep failing. @default 60000 */
  readonly maxBackoffMs?: number;
}

/** What the scaler needs to know about one live block. */
export interface BlockView {
  readonly blockId: string;
  /** `pending`: submitted, no manager yet; `connected`: managers serving; `draining`: near its walltime. */
  readonly state: "pending" | "connected" | "draining";
  /** Since when it has had no task (undefined: busy). A pending block is idle since it was submitted. */
  readonly idleSinceMs: number | undefined;
}

/** What to do now. */
export interface ScalingDecision {
  /** Blocks to submit. */
  readonly launch: number;
  /** Blocks to cancel (idle beyond the target). */
  readonly cancel: readonly string[];
  /** Blocks the demand asks for (within min and max). */
  readonly target: number;
}

/**
 * Decides how many blocks to launch and which to cancel. Pure (time is passed in), so tests need
 * no clock. The policy, after Parsl's: launch `initBlocks` at start; then provision enough blocks
 * for `outstanding × parallelism` workers, between `minBlocks` and `maxBlocks` (at least one while
 * tasks wait, unless maxBlocks says otherwise); cancel blocks idle for `idleTimeoutMs` while
 * above that target, pending ones first; never exceed `maxBlocks`. While blocks keep failing,
 * launch one at a time with exponential backoff, so a broken environment does not turn into a
 * flood of jobs; and when tasks wait with no worker and failing blocks for `failTasksAfterMs`,
 * say so, so the agent can fail them with the scheduler's reason instead of letting them wait
 * forever.
 */
export class BlockScaler {
  private failures = 0;
  private notBeforeMs = 0;
  private initDone = false;
  private starvedSinceMs: number | undefined;
  private readonly o: Required<BlockScalerOptions>;

  constructor(opts: BlockScalerOptions) {
    this.o = {
      minBlocks: 0,
      workersPerBlock: 1,
      parallelism: 1,
      idleTimeoutMs: 120_000,
      failTasksAfterMs: 300_000,
      minBackoffMs: 1000,
      maxBackoffMs: 60_000,
      ...opts,
    };
  }

  /** Blocks wanted for `outstanding` tasks (between minBlocks and maxBlocks). */
  targetFor(outstanding: number): number {
    const { minBlocks, maxBlocks, workersPerBlock, parallelism } = this.o;
    let want = Math.ceil((Math.max(0, outstanding) * parallelism) / Math.max(1, workersPerBlock));
    if (outstanding > 0) want = Math.max(want, 1);
    if (!this.initDone) want = Math.max(want, this.o.initBlocks);
    return Math.max(0, Math.min(maxBlocks, Math.max(minBlocks, want)));
  }

  /** The decision for now, given the outstanding tasks (held + queued) and the live blocks. */
  decide(nowMs: number, outstanding: number, blocks: readonly BlockView[]): ScalingDecision {
    const target = this.targetFor(outstanding);
    const active = blocks.filter((b) => b.state !== "draining");
    let launch = 0;
    const room = this.o.maxBlocks - blocks.length;
    if (active.length < target && room > 0 && nowMs >= this.notBeforeMs) {
      launch = Math.min(target - active.length, room, this.failures > 0 ? 1 : Infinity);
    }
    const cancel: string[] = [];
    if (active.length > target) {
      const idle = active
        .filter((b) => b.idleSinceMs !== undefined && nowMs - b.idleSinceMs >= this.o.idleTimeoutMs)
        .sort((a, b) => {
          if ((a.state === "pending") !== (b.state === "pending")) return a.state === "pending" ? -1 : 1;
          return (a.idleSinceMs ?? 0) - (b.idleSinceMs ?? 0);
        });
      for (const b of idle.slice(0, active.length - target)) cancel.push(b.blockId);
    }
    // initBlocks holds until that many were launched (a backed-off start still gets them).
    if (blocks.length + launch >= Math.min(this.o.initBlocks, this.o.maxBlocks)) this.initDone = true;
    return { launch, cancel, target };
  }

  /** A block ended without being asked to, or never came up, or could not be submitted. */
  recordFailure(nowMs: number): void {
    this.failures += 1;
    const delay = Math.min(this.o.maxBackoffMs, this.o.minBackoffMs * 2 ** (this.failures - 1));
    this.notBeforeMs = nowMs + delay;
  }

  /** A block's manager connected: the environment works, so launches need not wait. */
  recordHealthy(): void {
    this.failures = 0;
    this.notBeforeMs = 0;
    this.starvedSinceMs = undefined;
  }

  /** Blocks that failed in a row since the last healthy one. */
  get consecutiveFailures(): number {
    return this.failures;
  }

  /** When the next launch is allowed (0 = now). */
  get nextLaunchAtMs(): number {
    return this.notBeforeMs;
  }

  /**
   * Whether tasks have waited too long for a block that cannot start: true once tasks have been
   * outstanding with no connected worker while blocks keep failing, for `failTasksAfterMs`.
   */
  shouldFailWaitingTasks(nowMs: number, outstanding: number, connectedWorkers: number): boolean {
    if (outstanding === 0 || connectedWorkers > 0 || this.failures === 0) {
      this.starvedSinceMs = undefined;
      return false;
    }
    this.starvedSinceMs ??= nowMs;
    return nowMs - this.starvedSinceMs >= this.o.failTasksAfterMs;
  }
}
