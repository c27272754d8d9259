import { readFileSync } from "node:fs";

import { expect } from "vitest";

import type { Client, TaskInfo } from "../../sdk/index.js";
export { until } from "../../devkit/index.js";

/**
 * A function that appends its argument to a file on each execution, so duplicate executions show
 * (the file is the ground truth of what ran, independent of what the fabric reports).
 */
export const countingSource = `
async function work(key, logFile, sleepMs) {
  require("node:fs").appendFileSync(logFile, key + " " + Date.now() + "\\n");
  if (sleepMs > 0) await new Promise((r) => setTimeout(r, sleepMs));
  return key;
}`;

/** The lines of a file, or none when it does not exist yet. */
export function lines(file: string): string[] {
  try {
    return readFileSync(file, "utf8").split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

/** When each key was executed (ms since the epoch, one per run), from a counting function's log. */
export function runStarts(file: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of lines(file)) {
    const [key = "", at = "0"] = l.split(" ");
    const list = out.get(key) ?? [];
    list.push(Number(at));
    out.set(key, list);
  }
  return out;
}

/** How many times each key was executed, from a counting function's log. */
export function executions(file: string): Map<string, number> {
  return new Map([...runStarts(file)].map(([key, starts]) => [key, starts.length]));
}

/** What a fault scenario saw, for its assertions and its report. */
export interface Tally {
  /** Results streamed to the user, by task id. */
  readonly seen: Set<string>;
  /** Results streamed more than once (must stay 0). */
  duplicatesSeen: number;
  ok: number;
  /** Each task's returned value (the counting function returns its key). */
  readonly values: Map<string, unknown>;
  /** When each task's outcome was recorded (ms since the epoch). */
  readonly completedAt: Map<string, number>;
}

/**
 * Streams the results of `taskIds` and asserts the core invariant as a user sees it: each task
 * yields exactly one result, it is a success, and its history holds exactly one terminal state.
 */
export async function expectEachOnce(
  client: Client,
  taskIds: readonly string[],
  timeoutMs: number,
): Promise<Tally> {
  const tally: Tally = {
    seen: new Set(),
    duplicatesSeen: 0,
    ok: 0,
    values: new Map(),
    completedAt: new Map(),
  };
  for await (const o of client.results(taskIds, { timeoutMs })) {
    if (tally.seen.has(o.taskId)) tally.duplicatesSeen++;
    tally.seen.add(o.taskId);
    if (o.ok) {
      tally.ok++;
      tally.values.set(o.taskId, o.value);
    } else throw new Error(`task ${o.taskId} failed: ${o.error.code} ${o.error.message}`);
  }
  expect(tally.duplicatesSeen).toBe(0);
  expect(tally.seen.size).toBe(taskIds.length);
  expect(tally.ok).toBe(taskIds.length);
  const infos: TaskInfo[] = [];
  for (let i = 0; i < taskIds.length; i += 5_000)
    infos.push(...(await client.getTasks(taskIds.slice(i, i + 5_000))));
  for (const t of infos) {
    expect(t.state).toBe("success");
    tally.completedAt.set(t.id, t.completedAt?.getTime() ?? 0);
    const terminal = t.history.filter((h) => ["success", "failed", "cancelled", "expired"].includes(h.state));
    expect(terminal).toHaveLength(1);
  }
  return tally;
}

/**
 * Checks that every task's key ran at least once according to the counting function's log and
 * returns how many extra executions there were (at-least-once delivery: allowed, but reported).
 */
export function expectRanAtLeastOnce(tally: Tally, logFile: string): number {
  const ran = executions(logFile);
  let extra = 0;
  for (const value of tally.values.values()) {
    const n = ran.get(String(value)) ?? 0;
    expect(n, `executions of ${String(value)}`).toBeGreaterThanOrEqual(1);
    extra += n - 1;
  }
  return extra;
}

/**
 * Runs that began after the task's outcome was recorded, by the counting function's log: what a
 * user would call a finished task run again (must be 0). A run lost with its agent and run again
 * is not one of them.
 */
export function rerunsOfFinished(tally: Tally, logFile: string): number {
  const starts = runStarts(logFile);
  let n = 0;
  for (const [taskId, value] of tally.values) {
    const done = tally.completedAt.get(taskId) ?? 0;
    if (done > 0) n += (starts.get(String(value)) ?? []).filter((at) => at > done).length;
  }
  return n;
}
