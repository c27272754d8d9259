import { FabricError, isTerminal } from "../../common/index.js";
import { TaskState, type Task, type TaskIndexEntry } from "../../proto/index.js";
import { check, idSchema } from "../rpc/validate.js";
import type { ReadTasks, TaskIndex } from "./task-index.js";

/** Most index pages one call reads (131,072 tasks): then it answers what it counted, marked incomplete. */
export const STATS_SCAN_PAGES = 2048;
/** Most task records one call reads, to tell the states of tasks the index does not know finished. */
export const STATS_RECORD_READS = 500;
/** Most buckets in the series of finished tasks. */
export const STATS_MAX_BUCKETS = 3600;
/** The shortest bucket of the series. */
export const STATS_MIN_BUCKET_MS = 1000;

/** What to count: the caller's tasks created in a window, optionally of one function, endpoint or group. */
export interface TaskStatsRequest {
  /** Created at or after (ms since 1970); required, so every call is bounded in time. */
  readonly createdAfterMs: number;
  /** Created before (ms since 1970); 0: up to now. */
  readonly createdBeforeMs: number;
  readonly functionId: string;
  readonly endpointId: string;
  readonly groupId: string;
  /** The series of finished tasks starts here (ms since 1970); 0: no series. */
  readonly finishedAfterMs: number;
  /** The width of each bucket of the series (ms). */
  readonly bucketMs: number;
}

/** Counts of tasks by state. */
export type StateCounts = Map<TaskState, number>;

/** The counts of one function's tasks. */
export interface FunctionStats {
  readonly functionId: string;
  readonly total: number;
  readonly counts: StateCounts;
  /** Its unfinished tasks whose state was not read (over {@link STATS_RECORD_READS}). */
  readonly unclassified: number;
}

/** What a count found. */
export interface TaskStats {
  /** When it was counted (ms since 1970). */
  readonly atMs: number;
  /** Tasks counted (those in the window that a listing would show). */
  readonly total: number;
  /** By state. Terminal states come from the index; the others from the records read. */
  readonly counts: StateCounts;
  /** Tasks not finished as far as the index knows, whose record was not read: queued or running. */
  readonly unclassified: number;
  /** The same, per function, most tasks first. */
  readonly functions: readonly FunctionStats[];
  /** Tasks that finished, per bucket from `fromMs` (of the tasks counted). */
  readonly series: {
    readonly fromMs: number;
    readonly bucketMs: number;
    readonly finished: readonly number[];
    readonly failed: readonly number[];
  };
  /** Whether every task in the window was counted (false: the scan stopped at its bound). */
  readonly complete: boolean;
  /** The oldest creation time the count reached (ms since 1970; 0 when it found none). */
  readonly oldestCreatedAtMs: number;
  readonly pagesRead: number;
  readonly recordsRead: number;
}

/** Counts being made: per state, in an array indexed by the state's number (no Map per task). */
interface Tally {
  total: number;
  counts: number[];
  unclassified: number;
}

const STATE_SLOTS = Math.max(...Object.values(TaskState).filter((v) => typeof v === "number")) + 1;
const newTally = (): Tally => ({ total: 0, counts: new Array<number>(STATE_SLOTS).fill(0), unclassified: 0 });
const countOne = (t: Tally, state: TaskState) => {
  t.total++;
  t.counts[state] = (t.counts[state] ?? 0) + 1;
};
const countsOf = (t: Tally): StateCounts =>
  new Map(t.counts.flatMap((n, state) => (n > 0 ? [[state as TaskState, n] as const] : [])));

/**
 * Counts of the caller's tasks by state, per function, and the tasks finished per second, from
 * the owner's task index (tasks/task-index.ts), newest first, over a window of creation times.
 * Bounded: at most {@link STATS_SCAN_PAGES} index pages and {@link STATS_RECORD_READS} task
 * records per call, whatever the owner has retained; what was not reached is said (`complete`,
 * `unclassified`), never guessed. Finished tasks are counted from the index alone; of the
 * others, the oldest are read (they are the likeliest to be running or finished unmarked), and a
 * finished one found that way is marked in the index, as a listing does.
 */
export class TaskStatsCounter {
  private readonly scanPages: number;
  private readonly recordReads: number;

  constructor(
    private readonly index: Pick<TaskIndex, "pages" | "finished">,
    private readonly readTasks: ReadTasks,
    /** The bounds of one call. @default {@link STATS_SCAN_PAGES} pages, {@link STATS_RECORD_READS} records */
    bounds: { readonly scanPages?: number; readonly recordReads?: number } = {},
  ) {
    this.scanPages = bounds.scanPages ?? STATS_SCAN_PAGES;
    this.recordReads = bounds.recordReads ?? STATS_RECORD_READS;
  }

  async count(req: TaskStatsRequest, owner: string): Promise<TaskStats> {
    const now = Date.now();
    validate(req, now);
    const before = req.createdBeforeMs > 0 ? req.createdBeforeMs : Number.MAX_SAFE_INTEGER;
    const fromMs = req.finishedAfterMs;
    const buckets = fromMs > 0 ? Math.max(1, Math.ceil((now - fromMs) / req.bucketMs)) : 0;
    const finished = new Array<number>(buckets).fill(0);
    const failed = new Array<number>(buckets).fill(0);
    const all = newTally();
    const byFunction = new Map<string, Tally>();
    const open: TaskIndexEntry[] = [];
    const seen = new Set<string>();
    let pagesRead = 0;
    let complete = true;
    let oldest = 0;

    const finish = (state: TaskState, completedAtMs: number) => {
      if (buckets === 0 || completedAtMs < fromMs) return;
      const b = Math.floor((completedAtMs - fromMs) / req.bucketMs);
      if (b < 0 || b >= buckets) return;
      finished[b]!++;
      if (state === TaskState.TASK_STATE_FAILED) failed[b]!++;
    };

    for await (const { entries, newestCreatedAtMs } of this.index.pages(owner, req.createdBeforeMs)) {
      // Pages are in creation order: a page whose newest entry is older than the window ends it.
      if (newestCreatedAtMs > 0 && newestCreatedAtMs < req.createdAfterMs) break;
      if (pagesRead >= this.scanPages) {
        complete = false;
        break;
      }
      pagesRead++;
      for (let i = entries.length - 1; i >= 0; i--) {
        const e = entries[i]!;
        if (e.createdAtMs >= before || e.createdAtMs < req.createdAfterMs) continue;
        if (req.functionId && e.functionId !== req.functionId) continue;
        if (req.endpointId && e.endpointId !== req.endpointId) continue;
        if (req.groupId && e.groupId !== req.groupId) continue;
        if (e.state === TaskState.TASK_STATE_UNSPECIFIED) {
          // A retried submission may have indexed a task twice; only one entry matches its record
          // (the same creation time), and only that one is ever marked: marked entries are unique.
          if (seen.has(e.id)) continue;
          seen.add(e.id);
          oldest = e.createdAtMs;
          open.push(e);
          continue;
        }
        oldest = e.createdAtMs;
        countOne(all, e.state);
        countOne(tallyOf(byFunction, e.functionId), e.state);
        finish(e.state, e.completedAtMs);
      }
    }

    // The unfinished, oldest first: read as many as the bound allows.
    const toRead = open.slice(-this.recordReads);
    const records = toRead.length > 0 ? await this.readTasks(toRead.map((e) => e.id)) : [];
    const recordOf = new Map<string, Task>();
    records.forEach((t, i) => {
      const e = toRead[i]!;
      // The entry of a submission that never wrote its records, or a retry's second one.
      if (!t || t.owner !== owner || t.createdAtMs !== e.createdAtMs) return;
      recordOf.set(e.id, t);
      if (isTerminal(t.state)) this.index.finished(t);
    });
    const readIds = new Set(toRead.map((e) => e.id));
    for (const e of open) {
      const fn = tallyOf(byFunction, e.functionId);
      if (!readIds.has(e.id)) {
        all.total++;
        all.unclassified++;
        fn.total++;
        fn.unclassified++;
        continue;
      }
      const t = recordOf.get(e.id);
      if (!t) continue;
      countOne(all, t.state);
      countOne(fn, t.state);
      if (isTerminal(t.state)) finish(t.state, t.completedAtMs);
    }
    for (const [id, t] of byFunction) if (t.total === 0) byFunction.delete(id);

    return {
      atMs: now,
      total: all.total,
      counts: countsOf(all),
      unclassified: all.unclassified,
      functions: [...byFunction]
        .map(([functionId, t]) => ({
          functionId,
          total: t.total,
          counts: countsOf(t),
          unclassified: t.unclassified,
        }))
        .sort((a, b) => b.total - a.total || a.functionId.localeCompare(b.functionId)),
      series: { fromMs, bucketMs: req.bucketMs, finished, failed },
      complete,
      oldestCreatedAtMs: oldest,
      pagesRead,
      recordsRead: toRead.length,
    };
  }
}

function tallyOf(m: Map<string, Tally>, functionId: string): Tally {
  let t = m.get(functionId);
  if (!t) m.set(functionId, (t = newTally()));
  return t;
}

function validate(req: TaskStatsRequest, now: number): void {
  if (!(req.createdAfterMs > 0))
    throw new FabricError(
      "INVALID_ARGUMENT",
      "createdAfterMs is required (ms since 1970): stats cover a window",
    );
  if (req.createdBeforeMs < 0 || (req.createdBeforeMs > 0 && req.createdBeforeMs <= req.createdAfterMs))
    throw new FabricError("INVALID_ARGUMENT", "createdBeforeMs must be after createdAfterMs");
  if (req.functionId) check(idSchema("function"), req.functionId, "functionId");
  if (req.endpointId) check(idSchema("endpoint"), req.endpointId, "endpointId");
  if (req.groupId) check(idSchema("group"), req.groupId, "groupId");
  if (req.finishedAfterMs < 0 || req.finishedAfterMs > now)
    throw new FabricError("INVALID_ARGUMENT", "finishedAfterMs must be a time before now (ms since 1970)");
  if (req.finishedAfterMs > 0) {
    if (!Number.isSafeInteger(req.bucketMs) || req.bucketMs < STATS_MIN_BUCKET_MS)
      throw new FabricError("INVALID_ARGUMENT", `bucketMs must be at least ${STATS_MIN_BUCKET_MS}`);
    if ((now - req.finishedAfterMs) / req.bucketMs > STATS_MAX_BUCKETS)
      throw new FabricError(
        "INVALID_ARGUMENT",
        `the series would have over ${STATS_MAX_BUCKETS} buckets: a later finishedAfterMs or a wider bucketMs`,
      );
  }
}
