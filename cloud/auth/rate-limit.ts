import { FabricError } from "../../common/index.js";

/** RESOURCE_EXHAUSTED because a caller exceeded its call rate; `retryAfterMs` says when to try again. */
export class RateLimitedError extends FabricError {
  constructor(readonly retryAfterMs: number) {
    super(
      "RESOURCE_EXHAUSTED",
      `too many calls: this caller's rate limit is exceeded; retry after ${Math.ceil(retryAfterMs)} ms`,
      { reason: "rate_limited" },
    );
  }
}

/**
 * A token bucket per caller: `ratePerSecond` calls per second on average, bursts up to `burst`.
 * Buckets of idle callers are forgotten (they would be full anyway), so memory stays bounded by
 * the callers active in the last few seconds.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();
  private lastSweepMs = Date.now();

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one call from `caller`'s bucket, or throws {@link RateLimitedError}. A rate of 0 admits all. */
  take(caller: string): void {
    if (this.ratePerSecond <= 0) return;
    const now = this.now();
    this.sweep(now);
    const b = this.buckets.get(caller) ?? { tokens: this.burst, atMs: now };
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.atMs) / 1000) * this.ratePerSecond);
    b.atMs = now;
    this.buckets.set(caller, b);
    if (b.tokens < 1) throw new RateLimitedError(((1 - b.tokens) / this.ratePerSecond) * 1000);
    b.tokens -= 1;
  }

  private sweep(now: number): void {
    if (now - this.lastSweepMs < 10_000) return;
    this.lastSweepMs = now;
    const fullAfterMs = (this.burst / this.ratePerSecond) * 1000;
    for (const [k, b] of this.buckets) if (now - b.atMs > fullAfterMs) this.buckets.delete(k);
  }
}
