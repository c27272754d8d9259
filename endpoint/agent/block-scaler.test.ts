import { describe, expect, it } from "vitest";

import { BlockScaler } from "./block-scaler.js";
import type { BlockView } from "./block-scaler.js";

const pending = (id: string, idleSinceMs: number | undefined = 0): BlockView => ({
  blockId: id,
  state: "pending",
  idleSinceMs,
});
const connected = (id: string, idleSinceMs: number | undefined): BlockView => ({
  blockId: id,
  state: "connected",
  idleSinceMs,
});

describe("BlockScaler", () => {
  it("launches initBlocks at start, never above maxBlocks", () => {
    expect(new BlockScaler({ initBlocks: 2, maxBlocks: 4 }).decide(0, 0, []).launch).toBe(2);
    expect(new BlockScaler({ initBlocks: 2, maxBlocks: 4 }).decide(0, 0, [pending("a")]).launch).toBe(1);
    expect(new BlockScaler({ initBlocks: 5, maxBlocks: 3 }).decide(0, 0, []).launch).toBe(3);
    expect(new BlockScaler({ initBlocks: 0, maxBlocks: 3 }).decide(0, 0, []).launch).toBe(0);
  });

  it("keeps minBlocks alive and replaces ended ones", () => {
    const s = new BlockScaler({ initBlocks: 1, minBlocks: 1, maxBlocks: 2 });
    expect(s.decide(0, 0, []).launch).toBe(1);
    expect(s.decide(1000, 0, [connected("a", 0)]).launch).toBe(0);
    // "a" ended: the next pass replaces it.
    expect(s.decide(2000, 0, []).launch).toBe(1);
  });

  it("scales out from outstanding tasks: workers per block and parallelism", () => {
    const s = new BlockScaler({ initBlocks: 0, maxBlocks: 10, workersPerBlock: 4 });
    expect(s.decide(0, 0, []).launch).toBe(0);
    expect(s.decide(0, 1, []).launch).toBe(1); // cold start: one task is enough for a block
    expect(s.decide(0, 9, []).launch).toBe(3); // ceil(9 / 4)
    expect(s.decide(0, 9, [pending("a")]).launch).toBe(2);
    expect(s.decide(0, 1000, []).launch).toBe(10); // never above maxBlocks
    const half = new BlockScaler({ initBlocks: 0, maxBlocks: 10, workersPerBlock: 2, parallelism: 0.5 });
    expect(half.decide(0, 8, []).launch).toBe(2); // ceil(8 × 0.5 / 2)
    const none = new BlockScaler({ initBlocks: 0, maxBlocks: 10, parallelism: 0 });
    expect(none.decide(0, 50, []).launch).toBe(1); // still one block while tasks wait
  });

  it("counts draining blocks against maxBlocks but not as capacity", () => {
    const s = new BlockScaler({ initBlocks: 0, maxBlocks: 2, workersPerBlock: 1 });
    const draining: BlockView = { blockId: "d", state: "draining", idleSinceMs: undefined };
    expect(s.decide(0, 5, [draining]).launch).toBe(1);
    expect(s.decide(0, 5, [draining, pending("p")]).launch).toBe(0);
  });

  it("scales in after the idle time, pending blocks first, down to minBlocks (0 allowed)", () => {
    const s = new BlockScaler({ initBlocks: 0, minBlocks: 0, maxBlocks: 4, idleTimeoutMs: 10_000 });
    const blocks = [
      connected("busy", undefined),
      connected("idle-old", 0),
      pending("queued", 5000),
      connected("idle-new", 8000),
    ];
    // Not idle long enough yet.
    expect(s.decide(9_000, 0, blocks).cancel).toEqual([]);
    // At 15 s: "idle-old" (0) and "queued" (5000) have been idle 10 s; the pending one goes first.
    expect(s.decide(15_000, 0, blocks).cancel).toEqual(["queued", "idle-old"]);
    // Demand for one block keeps one: only the excess idle ones go.
    expect(s.decide(30_000, 1, blocks).cancel).toEqual(["queued", "idle-old", "idle-new"].slice(0, 3));
    const keepOne = new BlockScaler({ initBlocks: 1, minBlocks: 1, maxBlocks: 4, idleTimeoutMs: 1000 });
    expect(keepOne.decide(60_000, 0, [connected("a", 0), connected("b", 0)]).cancel).toEqual(["a"]);
  });

  it("backs off exponentially while blocks fail, one at a time, and recovers when one is healthy", () => {
    const s = new BlockScaler({ initBlocks: 3, maxBlocks: 3, minBackoffMs: 1000, maxBackoffMs: 4000 });
    s.recordFailure(0);
    expect(s.decide(999, 0, []).launch).toBe(0);
    expect(s.decide(1000, 0, []).launch).toBe(1);
    s.recordFailure(1000);
    expect(s.nextLaunchAtMs).toBe(3000);
    s.recordFailure(3000);
    expect(s.nextLaunchAtMs).toBe(7000);
    s.recordFailure(7000);
    expect(s.nextLaunchAtMs).toBe(11_000); // capped at maxBackoffMs
    s.recordHealthy();
    expect(s.decide(7001, 3, [connected("a", undefined)]).launch).toBe(2);
  });

  it("says when waiting tasks should fail: tasks waiting, no worker, blocks failing, for the bound", () => {
    const s = new BlockScaler({ initBlocks: 0, maxBlocks: 1, failTasksAfterMs: 5000 });
    // Nothing failed yet: a block may just be queued, tasks wait.
    expect(s.shouldFailWaitingTasks(0, 3, 0)).toBe(false);
    s.recordFailure(1000);
    expect(s.shouldFailWaitingTasks(1000, 3, 0)).toBe(false);
    expect(s.shouldFailWaitingTasks(5999, 3, 0)).toBe(false);
    expect(s.shouldFailWaitingTasks(6000, 3, 0)).toBe(true);
    // A worker appeared, or no tasks: the clock resets.
    expect(s.shouldFailWaitingTasks(7000, 3, 2)).toBe(false);
    expect(s.shouldFailWaitingTasks(8000, 3, 0)).toBe(false);
    expect(s.shouldFailWaitingTasks(13_000, 3, 0)).toBe(true);
    s.recordHealthy();
    expect(s.shouldFailWaitingTasks(20_000, 3, 0)).toBe(false);
  });
});
