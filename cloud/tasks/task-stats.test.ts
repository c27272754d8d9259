import { randomUUID } from "node:crypto";

import pino from "pino";
import { describe, expect, it } from "vitest";

import { Task, TaskState, type TaskIndexEntry } from "../../proto/index.js";
import type { IndexIo } from "../state/store.js";
import { TaskIndex } from "./task-index.js";
import { TaskStatsCounter, type TaskStatsRequest } from "./task-stats.js";

/** An index bucket in memory, with the KV's compare-and-set answers. */
function memoryIo(): IndexIo & { reads: number } {
  const m = new Map<string, { bytes: Uint8Array; revision: number }>();
  let seq = 0;
  const io = {
    reads: 0,
    read: async (key: string) => {
      io.reads++;
      return m.get(key) ?? null;
    },
    write: async (key: string, bytes: Uint8Array, revision: number) => {
      if (m.get(key)?.revision !== revision) throw new Error("wrong last sequence");
      m.set(key, { bytes, revision: ++seq });
      return seq;
    },
    create: async (key: string, bytes: Uint8Array) => {
      if (m.has(key)) throw new Error("key exists");
      m.set(key, { bytes, revision: ++seq });
      return seq;
    },
    put: async (key: string, bytes: Uint8Array) => {
      m.set(key, { bytes, revision: ++seq });
      return seq;
    },
  };
  return io;
}

const OWNER = "alice";
const [FN_A, FN_B, EP, EP2] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];

/** An index of tasks created one a second until a minute ago, and the records of those not marked. */
async function fixture(tasks: { state: TaskState; marked: boolean; fn?: string; ep?: string }[]) {
  const io = memoryIo();
  const index = new TaskIndex(io, pino({ level: "silent" }), 7 * 86_400_000);
  const records = new Map<string, Task>();
  const start = Date.now() - 60_000 - tasks.length * 1000;
  const entries: TaskIndexEntry[] = tasks.map((t, i) => {
    const createdAtMs = start + i * 1000;
    const terminal = t.state >= TaskState.TASK_STATE_SUCCESS;
    const completedAtMs = terminal ? Date.now() - 30_000 + (i % 3) * 1000 : 0;
    const e: TaskIndexEntry = {
      id: randomUUID(),
      functionId: t.fn ?? FN_A,
      endpointId: t.ep ?? EP,
      groupId: "",
      createdAtMs,
      state: t.marked ? t.state : TaskState.TASK_STATE_UNSPECIFIED,
      completedAtMs: t.marked ? completedAtMs : 0,
    };
    records.set(
      e.id,
      Task.decode(
        Task.encode({
          ...Task.decode(new Uint8Array()),
          id: e.id,
          owner: OWNER,
          functionId: e.functionId,
          endpointId: e.endpointId,
          createdAtMs,
          state: t.state,
          completedAtMs,
        }).finish(),
      ),
    );
    return e;
  });
  await index.append(OWNER, entries);
  let recordReads = 0;
  const read = async (ids: readonly string[]) => {
    recordReads += ids.length;
    return ids.map((id) => records.get(id) ?? null);
  };
  return { index, io, entries, read, recordReads: () => recordReads, start };
}

const request = (over: Partial<TaskStatsRequest> = {}): TaskStatsRequest => ({
  createdAfterMs: Date.now() - 86_400_000,
  createdBeforeMs: 0,
  functionId: "",
  endpointId: "",
  groupId: "",
  finishedAfterMs: 0,
  bucketMs: 1000,
  ...over,
});

const S = TaskState;

describe("TaskStatsCounter", () => {
  it("counts by state from the index's marks and the records of the unfinished, per function, with the finished per second", async () => {
    const f = await fixture([
      ...Array.from({ length: 100 }, () => ({ state: S.TASK_STATE_SUCCESS, marked: true })),
      ...Array.from({ length: 7 }, () => ({ state: S.TASK_STATE_FAILED, marked: true, fn: FN_B })),
      { state: S.TASK_STATE_CANCELLED, marked: true },
      ...Array.from({ length: 3 }, () => ({ state: S.TASK_STATE_RUNNING, marked: false })),
      ...Array.from({ length: 4 }, () => ({
        state: S.TASK_STATE_WAITING_FOR_ENDPOINT,
        marked: false,
        fn: FN_B,
      })),
      // Finished, but its mark was lost: read from its record, and marked now.
      { state: S.TASK_STATE_FAILED, marked: false },
    ]);
    const counter = new TaskStatsCounter(f.index, f.read);
    const stats = await counter.count(request({ finishedAfterMs: Date.now() - 60_000 }), OWNER);
    expect(stats.total).toBe(116);
    expect(Object.fromEntries(stats.counts)).toEqual({
      [S.TASK_STATE_SUCCESS]: 100,
      [S.TASK_STATE_FAILED]: 8,
      [S.TASK_STATE_CANCELLED]: 1,
      [S.TASK_STATE_RUNNING]: 3,
      [S.TASK_STATE_WAITING_FOR_ENDPOINT]: 4,
    });
    expect(stats.unclassified).toBe(0);
    expect(stats.complete).toBe(true);
    expect(f.recordReads()).toBe(8);
    expect(stats.functions.map((x) => [x.functionId, x.total])).toEqual([
      [FN_A, 105],
      [FN_B, 11],
    ]);
    expect(stats.functions[1]!.counts.get(S.TASK_STATE_FAILED)).toBe(7);
    // Finished 30, 29 and 28 s ago: three buckets of the 60, all 109 finished tasks in them.
    // 60 buckets, or 61 when the count began a moment after the request was made.
    expect(stats.series.finished.length).toBeGreaterThanOrEqual(60);
    expect(stats.series.finished.length).toBeLessThanOrEqual(61);
    expect(stats.series.finished.reduce((a, b) => a + b, 0)).toBe(109);
    expect(stats.series.failed.reduce((a, b) => a + b, 0)).toBe(8);
    expect(stats.series.finished.filter((n) => n > 0)).toHaveLength(3);
    expect(stats.oldestCreatedAtMs).toBe(f.start);
    // The lost mark is written back: the next count needs no record of it.
    await new Promise((r) => setTimeout(r, 300));
    const again = await counter.count(request(), OWNER);
    expect(again.counts.get(S.TASK_STATE_FAILED)).toBe(8);
    expect(f.recordReads()).toBe(8 + 7);
  });

  it("counts only the window, the function and the endpoint asked for", async () => {
    const f = await fixture([
      ...Array.from({ length: 150 }, (_, i) => ({
        state: S.TASK_STATE_SUCCESS,
        marked: true,
        fn: i % 2 ? FN_B : FN_A,
        ep: i % 3 ? EP : EP2,
      })),
    ]);
    const counter = new TaskStatsCounter(f.index, f.read);
    const at = (i: number) => f.entries[i]!.createdAtMs;
    const win = await counter.count(request({ createdAfterMs: at(20), createdBeforeMs: at(90) }), OWNER);
    expect(win.total).toBe(70);
    expect(win.oldestCreatedAtMs).toBe(at(20));
    const fnB = await counter.count(request({ functionId: FN_B }), OWNER);
    expect(fnB.total).toBe(75);
    const ep2 = await counter.count(request({ endpointId: EP2 }), OWNER);
    expect(ep2.total).toBe(50);
    expect(await counter.count(request(), "bob")).toMatchObject({ total: 0, complete: true });
    // A window whose start is after the index's newest page reads that page and stops.
    const reads = f.io.reads;
    const none = await counter.count(request({ createdAfterMs: Date.now() - 1000 }), OWNER);
    expect(none).toMatchObject({ total: 0, complete: true });
    expect(f.io.reads - reads).toBeLessThanOrEqual(4);
  });

  it("stops at its bounds and says what it did not reach", async () => {
    const f = await fixture([
      ...Array.from({ length: 64 * 6 }, () => ({ state: S.TASK_STATE_SUCCESS, marked: true })),
      ...Array.from({ length: 30 }, () => ({ state: S.TASK_STATE_RUNNING, marked: false })),
    ]);
    const counter = new TaskStatsCounter(f.index, f.read, { scanPages: 3, recordReads: 10 });
    const stats = await counter.count(request(), OWNER);
    expect(stats.complete).toBe(false);
    expect(stats.pagesRead).toBe(3);
    // The newest page holds the 30 running tasks; two full pages of finished ones before it.
    expect(stats.total).toBe(30 + 64 * 2);
    expect(stats.counts.get(S.TASK_STATE_RUNNING)).toBe(10);
    expect(stats.unclassified).toBe(20);
    expect(stats.recordsRead).toBe(10);
    expect(f.recordReads()).toBe(10);
    const all = await new TaskStatsCounter(f.index, f.read).count(request(), OWNER);
    expect(all).toMatchObject({ complete: true, total: 64 * 6 + 30, unclassified: 0 });
  });

  it("reads a settled page once: a repeated count reads only the pages that can still change", async () => {
    // Pages 0-2 full and finished (settled); page 3 full with one task running; page 4 the newest.
    const f = await fixture([
      ...Array.from({ length: 64 * 3 + 63 }, () => ({ state: S.TASK_STATE_SUCCESS, marked: true })),
      { state: S.TASK_STATE_RUNNING, marked: false },
      ...Array.from({ length: 10 }, () => ({ state: S.TASK_STATE_RUNNING, marked: false })),
    ]);
    const counter = new TaskStatsCounter(f.index, f.read);
    const first = await counter.count(request(), OWNER);
    expect(first.counts.get(S.TASK_STATE_RUNNING)).toBe(11);
    const reads = f.io.reads;
    const second = await counter.count(request(), OWNER);
    expect(second.total).toBe(first.total);
    // The head hint, the newest page and the one after it (absent), and page 3: not pages 0-2.
    expect(f.io.reads - reads).toBe(4);
    // Page 3's running task finishes: its mark is seen, as page 3 is read again.
    const running = f.entries[64 * 3 + 63]!;
    f.index.finished(
      Task.decode(
        Task.encode({
          ...Task.decode(new Uint8Array()),
          id: running.id,
          owner: OWNER,
          createdAtMs: running.createdAtMs,
          state: S.TASK_STATE_SUCCESS,
          completedAtMs: Date.now(),
        }).finish(),
      ),
    );
    await new Promise((r) => setTimeout(r, 300));
    const third = await counter.count(request(), OWNER);
    expect(third.counts.get(S.TASK_STATE_SUCCESS)).toBe(64 * 3 + 64);
  });

  it("refuses a count without a window and a series of too many buckets", async () => {
    const f = await fixture([]);
    const counter = new TaskStatsCounter(f.index, f.read);
    await expect(counter.count(request({ createdAfterMs: 0 }), OWNER)).rejects.toThrow(
      /createdAfterMs is required/,
    );
    await expect(
      counter.count(request({ finishedAfterMs: Date.now() - 7_200_000, bucketMs: 1000 }), OWNER),
    ).rejects.toThrow(/over 3600 buckets/);
    await expect(
      counter.count(request({ finishedAfterMs: Date.now() - 1000, bucketMs: 10 }), OWNER),
    ).rejects.toThrow(/bucketMs must be at least 1000/);
    await expect(counter.count(request({ functionId: "nope" }), OWNER)).rejects.toThrow(/function id/);
  });
});
