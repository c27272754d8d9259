import { describe, expect, it } from "vitest";

import { RateLimitedError, RateLimiter } from "./rate-limit.js";

describe("RateLimiter", () => {
  it("admits a burst, then refills at the rate, per caller", () => {
    let now = 1_000_000;
    const rl = new RateLimiter(10, 3, () => now);
    for (let i = 0; i < 3; i++) rl.take("a");
    let err: unknown;
    try {
      rl.take("a");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).code).toBe("RESOURCE_EXHAUSTED");
    expect((err as RateLimitedError).retryAfterMs).toBeCloseTo(100, 5);
    rl.take("b"); // another caller is unaffected
    now += 100;
    rl.take("a");
    expect(() => rl.take("a")).toThrow(RateLimitedError);
  });

  it("a rate of 0 disables the limit", () => {
    const rl = new RateLimiter(0, 1);
    for (let i = 0; i < 100; i++) rl.take("a");
  });
});
