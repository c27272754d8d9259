import { describe, expect, it } from "vitest";

import { MAX_PREFETCH, MAX_WORKER_QUEUE_DEPTH, QueueSizer } from "./queue-sizing.js";

describe("QueueSizer", () => {
  it("starts cautious: two tasks per worker, a prefetch of twice the workers (at least 16)", () => {
    const s = new QueueSizer({});
    expect(s.workerQueueDepth()).toBe(2);
    expect(s.prefetch(2)).toBe(16);
    expect(s.prefetch(16)).toBe(32);
  });

  it("deepens the queues as short tasks come back, and shallows them at once for a long one", () => {
    const s = new QueueSizer({});
    for (let i = 0; i < 1000; i++) s.observe(i % 5 === 0 ? 1 : 0); // no-op tasks, ms clock
    expect(s.workerQueueDepth()).toBe(MAX_WORKER_QUEUE_DEPTH);
    expect(s.prefetch(2)).toBe(MAX_PREFETCH);
    // Tasks of ~5 ms: a few queued per worker, a moderate prefetch.
    for (let i = 0; i < 1000; i++) s.observe(5);
    expect(s.workerQueueDepth()).toBe(4);
    expect(s.prefetch(2)).toBeGreaterThanOrEqual(40); // 2 workers × 100 ms / ~5 ms
    expect(s.prefetch(2)).toBeLessThanOrEqual(42);
    // One task of a minute moves the mean past every threshold.
    s.observe(60_000);
    expect(s.workerQueueDepth()).toBe(2);
    expect(s.prefetch(2)).toBe(16);
  });

  it("shallows the queues as soon as a task is seen running long", () => {
    const s = new QueueSizer({});
    for (let i = 0; i < 1000; i++) s.observe(0);
    expect(s.workerQueueDepth()).toBe(MAX_WORKER_QUEUE_DEPTH);
    s.observeRunning(25);
    expect(s.workerQueueDepth()).toBe(2);
    expect(s.prefetch(2)).toBe(16);
    s.observeRunning(3); // never lowers it
    expect(s.taskMs).toBe(25);
  });

  it("keeps what the config fixes, 0 included", () => {
    const s = new QueueSizer({ prefetch: 0, workerQueueDepth: 1 });
    for (let i = 0; i < 1000; i++) s.observe(0);
    expect(s.workerQueueDepth()).toBe(1);
    expect(s.prefetch(8)).toBe(0);
  });

  it("ignores nonsense run times (a clock step backwards)", () => {
    const s = new QueueSizer({});
    s.observe(-5);
    s.observe(Number.NaN);
    expect(s.taskMs).toBe(1000);
  });
});
