import { describe, expect, it } from "vitest";

import { BlockScaler } from "./block-scaler.js";

describe("BlockScaler", () => {
  it("launches up to initBlocks, never above maxBlocks", () => {
    expect(new BlockScaler({ initBlocks: 2, maxBlocks: 4 }).blocksToLaunch(0, 0)).toBe(2);
    expect(new BlockScaler({ initBlocks: 2, maxBlocks: 4 }).blocksToLaunch(1, 0)).toBe(1);
    expect(new BlockScaler({ initBlocks: 2, maxBlocks: 4 }).blocksToLaunch(3, 0)).toBe(0);
    expect(new BlockScaler({ initBlocks: 5, maxBlocks: 3 }).blocksToLaunch(0, 0)).toBe(3);
    expect(new BlockScaler({ initBlocks: 0, maxBlocks: 3 }).blocksToLaunch(0, 0)).toBe(0);
  });

  it("backs off exponentially while blocks fail, one at a time, and recovers when one is healthy", () => {
    const s = new BlockScaler({ initBlocks: 3, maxBlocks: 3, minBackoffMs: 1000, maxBackoffMs: 4000 });
    s.recordFailure(0);
    expect(s.blocksToLaunch(0, 999)).toBe(0);
    expect(s.blocksToLaunch(0, 1000)).toBe(1);
    s.recordFailure(1000);
    expect(s.nextLaunchAtMs).toBe(3000);
    s.recordFailure(3000);
    expect(s.nextLaunchAtMs).toBe(7000);
    s.recordFailure(7000);
    expect(s.nextLaunchAtMs).toBe(11_000); // capped at maxBackoffMs
    s.recordHealthy();
    expect(s.blocksToLaunch(1, 7001)).toBe(2);
  });
});
