import { count, dateTime, shortId } from "../format.js";
import { href, usePoll } from "../hooks.js";
import { useSession } from "../session.js";
import type { FunctionInfo, TaskStats } from "../types.js";
import { LoadError } from "./common.js";

/** The window of the run counts. */
const WINDOW_MS = 24 * 3_600_000;
const REFRESH_MS = 10_000;

function kindOf(fn: FunctionInfo): string {
  const s = fn.spec;
  if (!s) return "—";
  const kind = s.python ? "python" : s.js ? "javascript" : s.shell ? "shell" : "—";
  return s.containerImage ? `${kind} in ${s.containerImage}` : kind;
}

function sharingOf(fn: FunctionInfo): string {
  if (fn.public) return "public";
  if (fn.sharedWith.length > 0) return `shared with ${fn.sharedWith.join(", ")}`;
  return "private";
}

/** The functions the user may use, with how often each ran and failed in the last 24 hours. */
export function FunctionsView() {
  const { api, me } = useSession();
  const fns = usePoll(
    (signal) => api.get<{ functions: FunctionInfo[] }>("/v1/functions", undefined, signal),
    REFRESH_MS,
    [api],
  );
  const stats = usePoll(
    (signal) => api.get<TaskStats>("/v1/tasks/stats", { createdAfterMs: Date.now() - WINDOW_MS }, signal),
    REFRESH_MS,
    [api],
  );
  const byFn = new Map((stats.data?.functions ?? []).map((f) => [f.functionId, f]));
  const list = [...(fns.data?.functions ?? [])].sort((a, b) => b.createdAtMs - a.createdAtMs);
  return (
    <section>
      <h1>Functions</h1>
      <LoadError error={fns.error ?? stats.error} />
      {stats.data && !stats.data.complete && (
        <p class="warn">
          Your tasks of the last 24 hours are more than one count reads: the runs are counted back to{" "}
          {dateTime(stats.data.oldestCreatedAtMs)}.
        </p>
      )}
      <div class="card">
        <table class="grid functions">
          <thead>
            <tr>
              <th>name</th>
              <th>id</th>
              <th>kind</th>
              <th>owner</th>
              <th>sharing</th>
              <th>registered</th>
              <th title="your tasks of it created in the last 24 hours">runs (24 h)</th>
              <th>succeeded</th>
              <th title="failed or expired">failed</th>
              <th>cancelled</th>
              <th>unfinished</th>
            </tr>
          </thead>
          <tbody>
            {list.map((fn) => {
              const s = byFn.get(fn.id);
              const c = s?.counts ?? {};
              const failed = (c["failed"] ?? 0) + (c["expired"] ?? 0);
              const unfinished =
                (s?.unclassified ?? 0) +
                (c["received"] ?? 0) +
                (c["waiting_for_endpoint"] ?? 0) +
                (c["waiting_for_nodes"] ?? 0) +
                (c["running"] ?? 0);
              return (
                <tr key={fn.id} data-function={fn.name || fn.id}>
                  <td>
                    <a href={href("/tasks", { functionId: fn.id })}>{fn.name || "(unnamed)"}</a>
                  </td>
                  <td class="mono muted" title={fn.id}>
                    {shortId(fn.id)}
                  </td>
                  <td>{kindOf(fn)}</td>
                  <td>{fn.owner === me ? "you" : fn.owner}</td>
                  <td>{sharingOf(fn)}</td>
                  <td>{dateTime(fn.createdAtMs)}</td>
                  <td data-col="runs">{stats.data ? count(s?.total ?? 0) : "…"}</td>
                  <td data-col="succeeded">{stats.data ? count(c["success"] ?? 0) : "…"}</td>
                  <td data-col="failed" class={failed > 0 ? "error-text" : ""}>
                    {stats.data ? count(failed) : "…"}
                  </td>
                  <td data-col="cancelled">{stats.data ? count(c["cancelled"] ?? 0) : "…"}</td>
                  <td data-col="unfinished">{stats.data ? count(unfinished) : "…"}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
        {fns.data && list.length === 0 && <p class="empty">No functions yet.</p>}
      </div>
    </section>
  );
}
