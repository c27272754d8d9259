/** Options of a {@link BlockScaler}. */
export interface BlockScalerOptions {
  /** Blocks to keep alive. */
  readonly initBlocks: number;
  /** Never more than this many at once. */
  readonly maxBlocks: number;
  /** First wait after a block failed. @default 1000 */
  readonly minBackoffMs?: number;
  /** Longest wait between launches while blocks keep failing. @default 60000 */
  readonly maxBackoffMs?: number;
}

/**
 * Decides how many blocks to launch. Pure (time is passed in), so elastic policies and batch
 * schedulers can build on it and tests need no clock. Today's policy: keep `initBlocks` alive
 * (never above `maxBlocks`), replacing ended ones, and back off exponentially while blocks keep
 * failing, so a broken worker environment does not turn into a fork storm or a flood of jobs.
 */
export class BlockScaler {
  private failures = 0;
  private notBeforeMs = 0;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(private readonly opts: BlockScalerOptions) {
    this.minBackoffMs = opts.minBackoffMs ?? 1000;
    this.maxBackoffMs = opts.maxBackoffMs ?? 60_000;
  }

  /** How many blocks should exist. */
  get target(): number {
    return Math.max(0, Math.min(this.opts.initBlocks, this.opts.maxBlocks));
  }

  /** Number of blocks to launch now, given how many are pending or running. */
  blocksToLaunch(activeBlocks: number, nowMs: number): number {
    const need = Math.min(this.target, this.opts.maxBlocks) - activeBlocks;
    if (need <= 0 || nowMs < this.notBeforeMs) return 0;
    // While failing, try one block at a time.
    return this.failures > 0 ? 1 : need;
  }

  /** A block ended without being asked to, or never came up. */
  recordFailure(nowMs: number): void {
    this.failures += 1;
    const delay = Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** (this.failures - 1));
    this.notBeforeMs = nowMs + delay;
  }

  /** A block's manager connected: the environment works, so launches need not wait. */
  recordHealthy(): void {
    this.failures = 0;
    this.notBeforeMs = 0;
  }

  /** When the next launch is allowed (0 = now). */
  get nextLaunchAtMs(): number {
    return this.notBeforeMs;
  }
}
