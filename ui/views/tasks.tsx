import { useEffect, useMemo, useState } from "preact/hooks";

import { count, dateTime, duration, shortId, stateLabel } from "../format.js";
import { href, navigate, useNow, usePoll, type Route } from "../hooks.js";
import { endpointName, functionName, useSession } from "../session.js";
import {
  TASK_STATES,
  TERMINAL_STATES,
  type Task,
  type TaskPage,
  type TaskStats,
  type TaskSummary,
} from "../types.js";
import { LoadError, StateBadge, Tile } from "./common.js";
import { ThroughputChart } from "./throughput-chart.js";

/** Tasks in one page of the table. */
const PAGE_SIZE = 50;
/** Calls one page may take to fill (a rare filter answers short pages that still go on). */
const FILL_CALLS = 5;
/** How often the counts, the chart and the newest page are read again. */
const REFRESH_MS = 3000;
/** The chart's span: the last 10 minutes, a bucket a second. */
const SERIES_MS = 600_000;

const WINDOWS = [
  { label: "last 15 min", ms: 900_000 },
  { label: "last hour", ms: 3_600_000 },
  { label: "last 6 h", ms: 6 * 3_600_000 },
  { label: "last 24 h", ms: 24 * 3_600_000 },
] as const;

interface Filters {
  state: string;
  functionId: string;
  endpointId: string;
  /** ms since 1970, as text (empty: none). */
  after: string;
  before: string;
}

function filtersOf(route: Route): Filters {
  const q = route.query;
  return {
    state: q.get("state") ?? "",
    functionId: q.get("functionId") ?? "",
    endpointId: q.get("endpointId") ?? "",
    after: q.get("after") ?? "",
    before: q.get("before") ?? "",
  };
}

/** The user's tasks: live counts per state, the throughput chart, and the paged, filtered table. */
export function TasksView({ route }: { route: Route }) {
  const filters = filtersOf(route);
  const setFilter = (patch: Partial<Filters>) => navigate("/tasks", { ...filters, ...patch });
  return (
    <section>
      <h1>Tasks</h1>
      <StatsPanel
        filters={filters}
        onState={(state) => setFilter({ state: filters.state === state ? "" : state })}
      />
      <FilterBar filters={filters} onChange={setFilter} />
      <TaskTable filters={filters} />
    </section>
  );
}

function StatsPanel({ filters, onState }: { filters: Filters; onState: (state: string) => void }) {
  const { api } = useSession();
  const [windowMs, setWindowMs] = useState<number>(3_600_000);
  const stats = usePoll(
    (signal) => {
      const now = Date.now();
      return api.get<TaskStats>(
        "/v1/tasks/stats",
        {
          createdAfterMs: now - windowMs,
          finishedAfterMs: now - SERIES_MS,
          bucketMs: 1000,
          functionId: filters.functionId,
          endpointId: filters.endpointId,
        },
        signal,
      );
    },
    REFRESH_MS,
    [api, windowMs, filters.functionId, filters.endpointId],
  );
  const s = stats.data;
  return (
    <div class="card" aria-label="task counts">
      <header class="card-head">
        <h2>
          Counts <span class="muted">of tasks created in the</span>{" "}
          <select
            aria-label="window"
            value={windowMs}
            onChange={(e) => setWindowMs(Number((e.target as HTMLSelectElement).value))}
          >
            {WINDOWS.map((w) => (
              <option key={w.ms} value={w.ms}>
                {w.label}
              </option>
            ))}
          </select>
          {(filters.functionId || filters.endpointId) && <span class="muted"> (filtered)</span>}
        </h2>
        {s && (
          <span class="muted" data-testid="stats-total">
            {count(s.total)} tasks
          </span>
        )}
      </header>
      <LoadError error={stats.error} />
      <div class="tiles">
        {TASK_STATES.map((state) => (
          <Tile
            key={state}
            label={stateLabel(state)}
            value={s ? count(s.counts[state] ?? 0) : "…"}
            tone={`state-${state}${filters.state === state ? " selected" : ""}`}
            onClick={() => onState(state)}
            title={`show only ${stateLabel(state)} tasks`}
          />
        ))}
        {s && s.unclassified > 0 && (
          <Tile
            label="unfinished, not looked up"
            value={count(s.unclassified)}
            title="queued or running: more unfinished tasks than one count reads the records of"
          />
        )}
      </div>
      {s && !s.complete && (
        <p class="warn">
          Counted the {count(s.total)} newest tasks, back to {dateTime(s.oldestCreatedAtMs)}: the window holds
          more than one count reads. Choose a shorter window for exact counts.
        </p>
      )}
      <h3>
        Finished per second, last 10 minutes <span class="muted">(of the tasks counted above)</span>
      </h3>
      <ThroughputChart series={s?.series} />
    </div>
  );
}

const toLocalInput = (ms: string) => {
  if (!ms) return "";
  const d = new Date(Number(ms));
  const off = d.getTimezoneOffset() * 60_000;
  return new Date(d.getTime() - off).toISOString().slice(0, 16);
};
const fromLocalInput = (v: string) => (v ? String(new Date(v).getTime()) : "");

function FilterBar({ filters, onChange }: { filters: Filters; onChange: (patch: Partial<Filters>) => void }) {
  const { directory } = useSession();
  const any = Object.values(filters).some((v) => v !== "");
  return (
    <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="filters">
      <label>
        state{" "}
        <select
          name="state"
          value={filters.state}
          onChange={(e) => onChange({ state: (e.target as HTMLSelectElement).value })}
        >
          <option value="">any</option>
          {TASK_STATES.map((s) => (
            <option key={s} value={s}>
              {stateLabel(s)}
            </option>
          ))}
        </select>
      </label>
      <label>
        function{" "}
        <select
          name="functionId"
          value={filters.functionId}
          onChange={(e) => onChange({ functionId: (e.target as HTMLSelectElement).value })}
        >
          <option value="">any</option>
          {[...directory.functions.values()].map((f) => (
            <option key={f.id} value={f.id}>
              {f.name || shortId(f.id)}
            </option>
          ))}
        </select>
      </label>
      <label>
        endpoint{" "}
        <select
          name="endpointId"
          value={filters.endpointId}
          onChange={(e) => onChange({ endpointId: (e.target as HTMLSelectElement).value })}
        >
          <option value="">any</option>
          {[...directory.endpoints.values()].map((e) => (
            <option key={e.endpoint.id} value={e.endpoint.id}>
              {e.endpoint.name || shortId(e.endpoint.id)}
            </option>
          ))}
        </select>
      </label>
      <label>
        created after{" "}
        <input
          type="datetime-local"
          name="after"
          value={toLocalInput(filters.after)}
          onChange={(e) => onChange({ after: fromLocalInput((e.target as HTMLInputElement).value) })}
        />
      </label>
      <label>
        before{" "}
        <input
          type="datetime-local"
          name="before"
          value={toLocalInput(filters.before)}
          onChange={(e) => onChange({ before: fromLocalInput((e.target as HTMLInputElement).value) })}
        />
      </label>
      {any && (
        <button type="button" class="link" onClick={() => navigate("/tasks")}>
          clear filters
        </button>
      )}
    </form>
  );
}

/** One page of the listing, filled by following short pages a few times. */
async function loadPage(
  api: ReturnType<typeof useSession>["api"],
  filters: Filters,
  cursor: string,
  signal: AbortSignal,
): Promise<TaskPage> {
  const tasks: TaskSummary[] = [];
  let next = cursor;
  for (let call = 0; call < FILL_CALLS; call++) {
    const page = await api.get<TaskPage>(
      "/v1/tasks",
      {
        state: filters.state,
        functionId: filters.functionId,
        endpointId: filters.endpointId,
        createdAfterMs: filters.after,
        createdBeforeMs: filters.before,
        limit: PAGE_SIZE - tasks.length,
        cursor: next,
      },
      signal,
    );
    tasks.push(...page.tasks);
    next = page.nextCursor;
    if (!next || tasks.length >= PAGE_SIZE) break;
  }
  return { tasks, nextCursor: next };
}

function TaskTable({ filters }: { filters: Filters }) {
  const { api, directory } = useSession();
  const now = useNow();
  const key = JSON.stringify(filters);
  // The cursors of the pages shown so far: the first page's is "".
  const [paging, setPaging] = useState({ key, cursors: [""] });
  const cursors = paging.key === key ? paging.cursors : [""];
  const setCursors = (c: string[]) => setPaging({ key, cursors: c });
  const cursor = cursors[cursors.length - 1] ?? "";
  const first = cursors.length === 1;
  const page = usePoll((signal) => loadPage(api, filters, cursor, signal), first ? REFRESH_MS : 3_600_000, [
    api,
    key,
    cursor,
  ]);
  const rows = page.data?.tasks ?? [];
  const finished = useWatch(rows);
  return (
    <div class="card" aria-label="task list">
      <LoadError error={page.error} />
      <table class="grid tasks">
        <thead>
          <tr>
            <th>created</th>
            <th>task</th>
            <th>function</th>
            <th>endpoint</th>
            <th>state</th>
            <th>took</th>
            <th>group</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => {
            const t = finished.get(r.id) ?? r;
            const done = TERMINAL_STATES.has(t.state);
            return (
              <tr key={r.id} data-task={r.id} data-state={t.state}>
                <td title={dateTime(r.createdAtMs)}>{dateTime(r.createdAtMs)}</td>
                <td class="mono">
                  <a href={href(`/tasks/${r.id}`)}>{shortId(r.id)}</a>
                </td>
                <td>{functionName(directory, r.functionId)}</td>
                <td>{endpointName(directory, r.endpointId)}</td>
                <td>
                  <StateBadge state={t.state} />
                </td>
                <td>
                  {done && t.completedAtMs
                    ? duration(t.completedAtMs - r.createdAtMs)
                    : `${duration(now - r.createdAtMs)} so far`}
                </td>
                <td class="mono muted">{r.groupId ? shortId(r.groupId) : ""}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {page.data && rows.length === 0 && <p class="empty">No tasks match.</p>}
      <nav class="pager" aria-label="pages">
        <button type="button" disabled={first} onClick={() => setCursors(cursors.slice(0, -1))}>
          ← newer
        </button>
        <span class="muted">
          page {cursors.length}
          {first ? " (live)" : ""}
        </span>
        <button
          type="button"
          disabled={!page.data?.nextCursor}
          onClick={() => page.data?.nextCursor && setCursors([...cursors, page.data.nextCursor])}
        >
          older →
        </button>
      </nav>
    </div>
  );
}

/**
 * The tasks of a page that have not finished, watched over the API's stream (`POST
 * /v1/tasks/watch`, read with fetch): each one as it finishes.
 */
function useWatch(rows: readonly TaskSummary[]): Map<string, { state: string; completedAtMs: number }> {
  const { api } = useSession();
  const [finished, setFinished] = useState(new Map<string, { state: string; completedAtMs: number }>());
  const open = useMemo(
    () =>
      rows
        .filter((r) => !TERMINAL_STATES.has(r.state))
        .map((r) => r.id)
        .sort(),
    [rows],
  );
  const openKey = open.join(",");
  useEffect(() => {
    if (open.length === 0) return;
    const ctl = new AbortController();
    api
      .stream(
        "/v1/tasks/watch",
        { taskIds: open },
        (e) => {
          if (e.event !== "task") return;
          const t = JSON.parse(e.data) as Task;
          setFinished((m) => new Map(m).set(t.id, { state: t.state, completedAtMs: t.completedAtMs }));
        },
        ctl.signal,
      )
      .catch(() => undefined); // A lost stream: the next refresh shows the states anyway.
    return () => ctl.abort();
    // The ids, not the array: a refresh with the same open tasks keeps the stream.
  }, [api, openKey]);
  return finished;
}
