import { createHash } from "node:crypto";

import type { Logger } from "pino";

import { FabricError, isTerminal } from "../../common/index.js";
import {
  TaskIndexPage,
  TaskState,
  type ListTasksRequest,
  type ListTasksResponse,
  type Task,
  type TaskIndexEntry,
  type TaskSummary,
} from "../../proto/index.js";
import { check, idSchema } from "../rpc/validate.js";
import { isWrongRevision, mapLimit } from "../state/records.js";
import type { IndexIo } from "../state/store.js";

const KNOWN_STATES = new Set<number>(Object.values(TaskState).filter((v) => typeof v === "number" && v > 0));

/** Entries in one page of an owner's index. Small pages keep each append's write small. */
export const INDEX_PAGE_ENTRIES = 64;
/** Most pages one ListTasks call reads; then it answers what it found and where to go on. */
const SCAN_PAGES = 512;
/** Most task records (of tasks the index does not know finished) one ListTasks call reads. */
const SCAN_RECORDS = 2_000;
/** Pages read ahead while scanning. */
const PREFETCH = 16;
/** Most tasks in one page of a listing, and the default. */
export const MAX_LIST_LIMIT = 1000;
const DEFAULT_LIST_LIMIT = 100;
/** Finished tasks are marked in the index in batches, this long after the first of a batch. */
const MARK_DELAY_MS = 100;
/** How far apart in time an entry and the first of its page may be (clocks, racing submissions). */
const MARK_SKEW_MS = 2_000;
/** Most pages a search for a finished task's page reads (beyond: a listing repairs the mark). */
const MARK_SCAN_PAGES = 64;
/** Owners whose head page this broker keeps (the page it appends to). */
const MAX_HEADS = 10_000;
/** Tasks whose page this broker remembers (to mark them finished without a search). */
const MAX_PAGE_HINTS = 200_000;
/** Settled pages (full, every entry marked finished) whose entries this broker keeps, for scans. */
const MAX_SETTLED_PAGES = 2048;

interface Page {
  readonly no: number;
  /** 0 when the page does not exist yet. */
  readonly revision: number;
  readonly entries: TaskIndexEntry[];
}

interface Finished {
  readonly id: string;
  readonly createdAtMs: number;
  readonly state: TaskState;
  readonly completedAtMs: number;
}

interface Lane {
  appends: TaskIndexEntry[];
  waiters: { resolve: () => void; reject: (err: unknown) => void }[];
  marks: Finished[];
  markTimer: NodeJS.Timeout | undefined;
  busy: boolean;
}

/** What a listing needs of the task records: each task by id (null when absent). */
export type ReadTasks = (ids: readonly string[]) => Promise<(Task | null)[]>;

/**
 * Each owner's tasks, newest first, without scanning the task records: an index in its own KV
 * bucket. An owner's index is a chain of pages (`<owner key>.<n>`, n from 0, each up to
 * {@link INDEX_PAGE_ENTRIES} entries in the order added) and a hint of the newest page number
 * (`<owner key>.head`; readers look one past it). A submission appends its tasks' entries to the
 * newest page with compare-and-set (a full page starts the next, create-only), in one write per
 * owner and round trip however many calls arrive meanwhile. When a task finishes, its entry is
 * marked with the terminal state (in batches, after the fact); an entry not marked is checked
 * against the task's record when listed, so a lost mark costs a read, never a wrong answer.
 *
 * An entry counts only if the task's record exists with the same owner and creation time: the
 * entries of a submission that failed before its records were written, or of a retried call whose
 * tasks existed already, are skipped.
 */
export class TaskIndex {
  private readonly lanes = new Map<string, Lane>();
  /** The newest page of an owner, as this broker last wrote or read it. */
  private readonly heads = new Map<string, Page>();
  /** The page each task was added to, for tasks this broker indexed. */
  private readonly pageOf = new TwoGenerations<number>(MAX_PAGE_HINTS / 2);
  /** Entries of settled pages by page key: such a page never changes again (it only expires). */
  private readonly settled = new SettledPages(MAX_SETTLED_PAGES);

  constructor(
    private readonly io: IndexIo,
    private readonly log: Logger,
    /** How long finished tasks are kept: older entries are not listed. */
    private readonly retentionMs: number,
  ) {}

  /** The key prefix of an owner's index. */
  static ownerKey(owner: string): string {
    return createHash("sha256").update(owner).digest("base64url").slice(0, 22);
  }

  /**
   * Adds tasks to their owner's index (resolves once stored). Concurrent calls for one owner are
   * written together.
   */
  append(owner: string, entries: TaskIndexEntry[]): Promise<void> {
    if (entries.length === 0) return Promise.resolve();
    const lane = this.lane(owner);
    lane.appends.push(...entries);
    const done = new Promise<void>((resolve, reject) => lane.waiters.push({ resolve, reject }));
    this.kick(owner, lane);
    return done;
  }

  /** Marks a task finished in its owner's index (best effort: listing checks unmarked entries). */
  finished(task: Task): void {
    if (!isTerminal(task.state)) return;
    const lane = this.lane(task.owner);
    lane.marks.push({
      id: task.id,
      createdAtMs: task.createdAtMs,
      state: task.state,
      completedAtMs: task.completedAtMs,
    });
    if (lane.marks.length >= INDEX_PAGE_ENTRIES * 4) {
      clearTimeout(lane.markTimer);
      lane.markTimer = undefined;
      this.kick(task.owner, lane);
    } else if (!lane.markTimer) {
      lane.markTimer = setTimeout(() => {
        lane.markTimer = undefined;
        this.kick(task.owner, lane);
      }, MARK_DELAY_MS);
      lane.markTimer.unref();
    }
  }

  private lane(owner: string): Lane {
    let lane = this.lanes.get(owner);
    if (!lane) {
      lane = { appends: [], waiters: [], marks: [], markTimer: undefined, busy: false };
      this.lanes.set(owner, lane);
    }
    return lane;
  }

  /** Runs the owner's writes one after another (appends first: they hold up submissions). */
  private kick(owner: string, lane: Lane): void {
    if (lane.busy) return;
    lane.busy = true;
    void (async () => {
      const key = TaskIndex.ownerKey(owner);
      try {
        for (;;) {
          if (lane.appends.length > 0) {
            const entries = lane.appends;
            const waiters = lane.waiters;
            lane.appends = [];
            lane.waiters = [];
            try {
              await this.write(key, entries);
              for (const w of waiters) w.resolve();
            } catch (err) {
              const fe = new FabricError(
                "UNAVAILABLE",
                `the task index is unavailable: ${(err as Error).message}; try again`,
                { cause: err },
              );
              for (const w of waiters) w.reject(fe);
            }
            continue;
          }
          if (lane.marks.length > 0 && !lane.markTimer) {
            const marks = lane.marks;
            lane.marks = [];
            await this.mark(key, marks).catch((err: unknown) =>
              this.log.warn({ err, tasks: marks.length }, "cannot mark finished tasks in the index"),
            );
            continue;
          }
          break;
        }
      } finally {
        lane.busy = false;
        if (lane.appends.length === 0 && lane.marks.length === 0 && !lane.markTimer) this.lanes.delete(owner);
      }
    })();
  }

  private pageKey(key: string, no: number): string {
    return `${key}.${no}`;
  }

  private async readPage(key: string, no: number): Promise<Page | null> {
    if (no < 0) return null;
    const raw = await this.io.read(this.pageKey(key, no));
    if (!raw) return null;
    try {
      return { no, revision: raw.revision, entries: TaskIndexPage.decode(raw.bytes).entries };
    } catch (err) {
      throw new FabricError(
        "DATA_LOSS",
        `task index page ${this.pageKey(key, no)} cannot be decoded: ${(err as Error).message}`,
      );
    }
  }

  /** The owner's newest page: from the head hint, then forward while a newer page exists. */
  private async newestPage(key: string): Promise<Page> {
    const raw = await this.io.read(`${key}.head`);
    let no = raw ? Number(Buffer.from(raw.bytes).toString("utf8")) : 0;
    if (!Number.isSafeInteger(no) || no < 0) no = 0;
    let page = await this.readPage(key, no);
    for (;;) {
      const next = await this.readPage(key, no + 1);
      if (!next) break;
      page = next;
      no++;
    }
    return page ?? { no, revision: 0, entries: [] };
  }

  private remember(key: string, page: Page): void {
    this.heads.delete(key);
    if (this.heads.size >= MAX_HEADS) {
      const oldest = this.heads.keys().next();
      if (!oldest.done) this.heads.delete(oldest.value);
    }
    this.heads.set(key, page);
  }

  private hint(id: string, no: number): void {
    this.pageOf.set(id, no);
  }

  /** Appends entries to the owner's newest page(s), compare-and-set, starting pages as they fill. */
  private async write(key: string, entries: readonly TaskIndexEntry[]): Promise<void> {
    let page = this.heads.get(key) ?? (await this.newestPage(key));
    const startNo = page.no;
    let done = 0;
    let conflicts = 0;
    while (done < entries.length) {
      const room = INDEX_PAGE_ENTRIES - page.entries.length;
      const no = room > 0 ? page.no : page.no + 1;
      const base = room > 0 ? page.entries : [];
      const take = entries.slice(done, done + (room > 0 ? room : INDEX_PAGE_ENTRIES));
      const all = base.concat(take);
      const bytes = TaskIndexPage.encode({ entries: all }).finish();
      try {
        const revision =
          room > 0 && page.revision > 0
            ? await this.io.write(this.pageKey(key, no), bytes, page.revision)
            : await this.io.create(this.pageKey(key, no), bytes);
        page = { no, revision, entries: all };
        for (const e of take) this.hint(e.id, no);
        done += take.length;
      } catch (err) {
        if (!isWrongRevision(err)) {
          this.heads.delete(key);
          throw err;
        }
        // Another broker wrote the page meanwhile: start again from what is there now.
        if (++conflicts > 200)
          throw new FabricError("ABORTED", "too many concurrent changes to the task index");
        page = (await this.readPage(key, no)) ?? (await this.newestPage(key));
      }
    }
    this.remember(key, page);
    if (page.no > startNo) {
      await this.io.put(`${key}.head`, Buffer.from(String(page.no))).catch((err: unknown) => {
        // Only a hint: readers look past it.
        this.log.debug({ err }, "cannot move the task index's head hint");
      });
    }
  }

  /**
   * Finds the page a task was added to by its creation time (`read` caches the pages one batch of
   * marks reads: tasks that finish together were mostly created together).
   */
  private async findPage(
    f: Finished,
    newest: number,
    read: (no: number) => Promise<Page | null>,
  ): Promise<number | undefined> {
    // Pages are in the order their entries were added, which is creation order give or take the
    // brokers' clocks and submissions racing each other: a binary search for the first page that
    // starts within MARK_SKEW_MS before the task's creation, then a bounded scan forward.
    const from = f.createdAtMs - MARK_SKEW_MS;
    let lo = 0;
    let hi = newest;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const page = await read(mid);
      // A missing page has expired: the oldest go first.
      if (!page || (page.entries[0]?.createdAtMs ?? 0) < from) lo = mid + 1;
      else hi = mid;
    }
    for (
      let no = Math.max(0, lo - 1), scanned = 0;
      no <= newest && scanned < MARK_SCAN_PAGES;
      no++, scanned++
    ) {
      const page = await read(no);
      if (!page) continue;
      if (page.entries.some((e) => e.id === f.id)) return no;
      if ((page.entries[0]?.createdAtMs ?? 0) > f.createdAtMs + MARK_SKEW_MS) break;
    }
    return undefined;
  }

  /** Writes the terminal states of finished tasks into their entries. */
  private async mark(key: string, marks: readonly Finished[]): Promise<void> {
    let newest: number | undefined;
    const seen = new Map<number, Promise<Page | null>>();
    const read = (no: number): Promise<Page | null> => {
      let p = seen.get(no);
      if (!p) seen.set(no, (p = this.readPage(key, no)));
      return p;
    };
    const byPage = new Map<number, Map<string, Finished>>();
    for (const f of marks) {
      let no = this.pageOf.get(f.id);
      if (no === undefined) {
        newest ??= (this.heads.get(key) ?? (await this.newestPage(key))).no;
        no = await this.findPage(f, newest, read);
      }
      if (no === undefined) continue;
      let m = byPage.get(no);
      if (!m) byPage.set(no, (m = new Map<string, Finished>()));
      m.set(f.id, f);
    }
    for (const [no, fins] of byPage) {
      for (let attempt = 0; attempt < 20; attempt++) {
        const head = this.heads.get(key);
        const page = head?.no === no ? head : attempt === 0 ? await read(no) : await this.readPage(key, no);
        if (!page) break;
        let changed = false;
        const entries = page.entries.map((e) => {
          const f = fins.get(e.id);
          if (!f || e.state !== TaskState.TASK_STATE_UNSPECIFIED || f.createdAtMs !== e.createdAtMs) return e;
          changed = true;
          return { ...e, state: f.state, completedAtMs: f.completedAtMs };
        });
        if (!changed) break;
        try {
          const revision = await this.io.write(
            this.pageKey(key, no),
            TaskIndexPage.encode({ entries }).finish(),
            page.revision,
          );
          if (head?.no === no) this.remember(key, { no, revision, entries });
          for (const id of fins.keys()) this.pageOf.delete(id);
          break;
        } catch (err) {
          if (head?.no === no) this.heads.delete(key);
          if (!isWrongRevision(err)) throw err;
        }
      }
    }
  }

  /**
   * A page of the owner's tasks, newest first, filtered. Entries the index knows finished are
   * answered from the index alone; the others from the task's record (read in parallel).
   */
  async list(owner: string, req: ListTasksRequest, readTasks: ReadTasks): Promise<ListTasksResponse> {
    const limit = req.limit === 0 ? DEFAULT_LIST_LIMIT : req.limit;
    if (limit > MAX_LIST_LIMIT)
      throw new FabricError(
        "INVALID_ARGUMENT",
        `limit ${limit} is over ${MAX_LIST_LIMIT}; page with the cursor`,
      );
    if (req.functionId) check(idSchema("function"), req.functionId, "functionId");
    if (req.endpointId) check(idSchema("endpoint"), req.endpointId, "endpointId");
    if (req.groupId) check(idSchema("group"), req.groupId, "groupId");
    for (const s of req.states) {
      if (!KNOWN_STATES.has(s)) throw new FabricError("INVALID_ARGUMENT", `states: ${s} is not a task state`);
    }
    if (req.createdAfterMs < 0 || req.createdBeforeMs < 0)
      throw new FabricError(
        "INVALID_ARGUMENT",
        "createdAfterMs and createdBeforeMs are times (ms since 1970)",
      );
    const key = TaskIndex.ownerKey(owner);
    const states = new Set(req.states);
    const after = req.createdAfterMs;
    const before = req.createdBeforeMs;
    const keptSince = Date.now() - this.retentionMs;

    let no: number;
    let from: number;
    const pages = new Map<number, Promise<Page | null>>();
    const fetchPage = (n: number): Promise<Page | null> => {
      let p = pages.get(n);
      if (!p) pages.set(n, (p = this.readPage(key, n)));
      return p;
    };
    if (req.cursor) {
      [no, from] = parseCursor(req.cursor);
    } else {
      const newest = await this.newestPage(key);
      pages.set(newest.no, Promise.resolve(newest));
      no = newest.no;
      from = newest.entries.length;
      if (before > 0 && newest.entries[0] && newest.entries[0].createdAtMs >= before)
        no = await lastPageBefore(before, newest.no, fetchPage);
      if (no !== newest.no) from = Number.MAX_SAFE_INTEGER;
    }

    const tasks: TaskSummary[] = [];
    let pagesRead = 0;
    let recordsRead = 0;
    let missing = 0;
    const seen = new Set<string>();
    while (no >= 0) {
      // Read ahead, more the longer the scan goes (a first page is mostly one or two pages).
      const ahead = Math.min(PREFETCH, 1 + 2 * pagesRead);
      for (let n = no - 1; n >= Math.max(0, no - ahead); n--) void fetchPage(n).catch(() => null);
      const page = await fetchPage(no);
      pages.delete(no);
      pagesRead++;
      if (!page) {
        // Expired: pages go oldest first, roughly (a page written to later lives longer).
        if (++missing >= 3) return { tasks, nextCursor: "" };
        no--;
        from = Number.MAX_SAFE_INTEGER;
        continue;
      }
      missing = 0;
      const entries = page.entries;
      let j = Math.min(from, entries.length);
      // The page's newest entry is older than `after`: so is everything before it.
      if (after > 0 && entries.length > 0 && entries[entries.length - 1]!.createdAtMs < after)
        return { tasks, nextCursor: "" };
      while (j > 0) {
        // The next candidates, newest first, enough to fill the page if all are kept.
        const batch: TaskIndexEntry[] = [];
        while (j > 0 && batch.length < limit - tasks.length) {
          const e = entries[--j]!;
          if (after > 0 && e.createdAtMs < after) continue;
          if (before > 0 && e.createdAtMs >= before) continue;
          if (req.functionId && e.functionId !== req.functionId) continue;
          if (req.endpointId && e.endpointId !== req.endpointId) continue;
          if (req.groupId && e.groupId !== req.groupId) continue;
          if (e.state !== TaskState.TASK_STATE_UNSPECIFIED) {
            if (!retained(e, keptSince)) continue;
            if (states.size > 0 && !states.has(e.state)) continue;
          }
          batch.push(e);
        }
        const open = batch.filter((e) => e.state === TaskState.TASK_STATE_UNSPECIFIED);
        recordsRead += open.length;
        const records = open.length > 0 ? await readTasks(open.map((e) => e.id)) : [];
        const recordOf = new Map<string, Task>();
        records.forEach((t, i) => {
          const e = open[i]!;
          // The entry of a submission that never wrote the record, or a retry's second entry.
          if (!t || t.owner !== owner || t.createdAtMs !== e.createdAtMs) return;
          recordOf.set(e.id, t);
          if (isTerminal(t.state)) {
            // A mark that was lost (or not written yet): write it now.
            this.hint(t.id, no);
            this.finished(t);
          }
        });
        for (const e of batch) {
          // A retried submission may have indexed a task twice.
          if (seen.has(e.id)) continue;
          let summary: TaskSummary;
          if (e.state === TaskState.TASK_STATE_UNSPECIFIED) {
            const t = recordOf.get(e.id);
            if (!t) continue;
            if (states.size > 0 && !states.has(t.state)) continue;
            summary = { ...summaryOf(e), state: t.state, completedAtMs: t.completedAtMs };
          } else {
            summary = summaryOf(e);
          }
          seen.add(e.id);
          tasks.push(summary);
        }
        if (tasks.length >= limit) {
          return { tasks, nextCursor: j > 0 || no > 0 ? cursorOf(no, j) : "" };
        }
        if (recordsRead >= SCAN_RECORDS) return { tasks, nextCursor: j > 0 || no > 0 ? cursorOf(no, j) : "" };
      }
      no--;
      from = Number.MAX_SAFE_INTEGER;
      if (pagesRead >= SCAN_PAGES && no >= 0) return { tasks, nextCursor: cursorOf(no, from) };
    }
    return { tasks, nextCursor: "" };
  }

  /**
   * The owner's index, page by page, newest page first (each page's entries in the order added,
   * oldest first), without the entries a listing no longer shows; from the newest page created
   * before `createdBeforeMs` (0: the newest), with the creation time of each page's newest entry
   * (of all its entries: those left out too). Ends at the oldest page or where pages have expired.
   * Reads ahead; the caller bounds the scan by stopping (tasks/task-stats.ts). A settled page
   * (full, and every task in it finished: no write changes it again) is read once and then kept,
   * so a scan repeated every few seconds reads only the pages that can still change.
   */
  async *pages(
    owner: string,
    createdBeforeMs = 0,
  ): AsyncGenerator<{ readonly entries: readonly TaskIndexEntry[]; readonly newestCreatedAtMs: number }> {
    const key = TaskIndex.ownerKey(owner);
    const keptSince = Date.now() - this.retentionMs;
    type Read = { readonly revision: number; readonly entries: TaskIndexEntry[] };
    const pages = new Map<number, Promise<Read | null>>();
    const fetchPage = (n: number): Promise<Read | null> => {
      let p = pages.get(n);
      if (!p) {
        const kept = this.settled.get(this.pageKey(key, n));
        p = kept ? Promise.resolve({ no: n, revision: 0, entries: kept }) : this.readPage(key, n);
        pages.set(n, p);
      }
      return p;
    };
    const newest = await this.newestPage(key);
    pages.set(newest.no, Promise.resolve(newest));
    let no = newest.no;
    if (createdBeforeMs > 0 && newest.entries[0] && newest.entries[0].createdAtMs >= createdBeforeMs)
      no = await lastPageBefore(createdBeforeMs, newest.no, fetchPage);
    let read = 0;
    let missing = 0;
    for (; no >= 0; no--) {
      const ahead = Math.min(PREFETCH, 1 + 2 * read);
      for (let n = no - 1; n >= Math.max(0, no - ahead); n--) void fetchPage(n).catch(() => null);
      const page = await fetchPage(no);
      pages.delete(no);
      read++;
      if (page && page.revision > 0 && isSettled(page.entries))
        this.settled.keep(this.pageKey(key, no), page.entries);
      if (!page) {
        if (++missing >= 3) return;
        continue;
      }
      missing = 0;
      yield {
        entries: page.entries.filter((e) => retained(e, keptSince)),
        newestCreatedAtMs: page.entries[page.entries.length - 1]?.createdAtMs ?? 0,
      };
    }
  }
}

/**
 * Whether no write changes a page again: it is full (appends go to the next) and every entry is
 * marked finished (marks change only unmarked entries).
 */
function isSettled(entries: readonly TaskIndexEntry[]): boolean {
  return (
    entries.length >= INDEX_PAGE_ENTRIES && entries.every((e) => e.state !== TaskState.TASK_STATE_UNSPECIFIED)
  );
}

/**
 * The entries of settled pages, by page key, the most recently used kept (read only, once kept).
 * The strings entries share (function, endpoint and group ids) are kept once per page.
 */
class SettledPages {
  private readonly pages = new Map<string, TaskIndexEntry[]>();
  constructor(private readonly max: number) {}
  get(key: string): TaskIndexEntry[] | undefined {
    const entries = this.pages.get(key);
    if (entries) {
      this.pages.delete(key);
      this.pages.set(key, entries);
    }
    return entries;
  }
  keep(key: string, entries: TaskIndexEntry[]): void {
    if (this.pages.has(key)) return;
    if (this.pages.size >= this.max) {
      const oldest = this.pages.keys().next();
      if (!oldest.done) this.pages.delete(oldest.value);
    }
    // In place (the entries were decoded for this scan alone): objects of the decoder's own shape.
    const shared = new Map<string, string>();
    const one = (s: string) => {
      const kept = shared.get(s);
      if (kept !== undefined) return kept;
      shared.set(s, s);
      return s;
    };
    for (const e of entries) {
      e.functionId = one(e.functionId);
      e.endpointId = one(e.endpointId);
      e.groupId = one(e.groupId);
    }
    this.pages.set(key, entries);
  }
}

/** Whether a listing still shows an entry: not one the index knows finished before `keptSince`. */
function retained(e: TaskIndexEntry, keptSince: number): boolean {
  return !(
    e.state !== TaskState.TASK_STATE_UNSPECIFIED &&
    e.completedAtMs > 0 &&
    e.completedAtMs < keptSince
  );
}

/** The newest page whose first entry was created before `before` (a binary search). */
async function lastPageBefore(
  before: number,
  newest: number,
  fetchPage: (n: number) => Promise<{ readonly entries: readonly TaskIndexEntry[] } | null>,
): Promise<number> {
  let lo = 0;
  let hi = newest;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    const page = await fetchPage(mid);
    // A missing page has expired: the oldest go first.
    if (page && (page.entries[0]?.createdAtMs ?? 0) >= before) hi = mid - 1;
    else lo = mid;
  }
  return lo;
}

function summaryOf(e: TaskIndexEntry): TaskSummary {
  return {
    id: e.id,
    functionId: e.functionId,
    endpointId: e.endpointId,
    groupId: e.groupId,
    state: e.state,
    createdAtMs: e.createdAtMs,
    completedAtMs: e.completedAtMs,
  };
}

function cursorOf(no: number, from: number): string {
  return Buffer.from(`${no}.${from === Number.MAX_SAFE_INTEGER ? "" : from}`).toString("base64url");
}

function parseCursor(cursor: string): [number, number] {
  const m = /^(\d{1,15})\.(\d{0,15})$/.exec(Buffer.from(cursor, "base64url").toString("utf8"));
  if (!m)
    throw new FabricError("INVALID_ARGUMENT", "cursor is not one this API gave (pass a page's nextCursor)");
  return [Number(m[1]), m[2] ? Number(m[2]) : Number.MAX_SAFE_INTEGER];
}

/** ListTasks: the caller's index, with the records read through the task store. */
export class TaskLister {
  constructor(
    private readonly index: TaskIndex,
    private readonly read: (taskId: string) => Promise<Task | null>,
  ) {}

  list(req: ListTasksRequest, owner: string): Promise<ListTasksResponse> {
    return this.index.list(owner, req, (ids) => mapLimit(ids, 64, (id) => this.read(id)));
  }
}

/**
 * A bounded map that forgets in bulk: entries go to the young generation; when it is full, it
 * becomes the old one (the old one is dropped). O(1) per call, where evicting one oldest entry at
 * a time from a Map costs a scan over the holes it leaves.
 */
class TwoGenerations<V> {
  private young = new Map<string, V>();
  private old = new Map<string, V>();
  constructor(private readonly generation: number) {}
  get(key: string): V | undefined {
    return this.young.get(key) ?? this.old.get(key);
  }
  set(key: string, value: V): void {
    if (this.young.size >= this.generation) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, value);
  }
  delete(key: string): void {
    this.young.delete(key);
    this.old.delete(key);
  }
}
