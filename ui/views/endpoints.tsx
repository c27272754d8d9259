import { useState } from "preact/hooks";

import { ApiError } from "../api.js";
import { ago, count, dateTime, shortId } from "../format.js";
import { href, useNow, usePoll } from "../hooks.js";
import { functionName, useSession } from "../session.js";
import type { EndpointTasks, EndpointWithStatus } from "../types.js";
import { LoadError, StateBadge, Tile } from "./common.js";

/** How often the endpoints' status is read again. */
const REFRESH_MS = 3000;

/** Every endpoint the user may use: connection, heartbeat, blocks, workers, queue, last error; live. */
export function EndpointsView() {
  const { api } = useSession();
  const list = usePoll(
    (signal) => api.get<{ endpoints: EndpointWithStatus[] }>("/v1/endpoints", undefined, signal),
    REFRESH_MS,
    [api],
  );
  const endpoints = list.data?.endpoints ?? [];
  return (
    <section>
      <h1>Endpoints</h1>
      <LoadError error={list.error} />
      {list.data && endpoints.length === 0 && (
        <p class="empty">
          No endpoints yet. Register one with <code>fabric endpoint configure NAME</code> and start it with{" "}
          <code>fabric-endpoint start NAME</code>.
        </p>
      )}
      {endpoints.map((e) => (
        <EndpointCard key={e.endpoint.id} item={e} />
      ))}
    </section>
  );
}

function EndpointCard({ item }: { item: EndpointWithStatus }) {
  const { api, me, directory } = useSession();
  const now = useNow();
  const { endpoint, status } = item;
  const last = status.last ?? {};
  // Only the owner sees the tasks on an endpoint. The token's user names the owner in most
  // set-ups (not always with OIDC): the broker's answer decides, asked again now and then.
  const [refused, setRefused] = useState(false);
  const tasks = usePoll(
    async (signal) => {
      try {
        const t = await api.get<EndpointTasks>(`/v1/endpoints/${endpoint.id}/tasks`, { limit: 10 }, signal);
        setRefused(false);
        return t;
      } catch (err) {
        if (err instanceof ApiError && (err.status === 403 || err.status === 404)) {
          setRefused(true);
          return undefined;
        }
        throw err;
      }
    },
    refused ? 60_000 : REFRESH_MS,
    [api, endpoint.id],
  );
  const owned = tasks.data !== undefined;
  const blocks = last.blocks ?? [];
  const online = status.connection === "online";
  return (
    <article class="card endpoint" data-endpoint={endpoint.name} aria-label={`endpoint ${endpoint.name}`}>
      <header class="card-head">
        <h2>
          {endpoint.name || shortId(endpoint.id)} <span class="muted mono">{endpoint.id}</span>
        </h2>
        <span class={`badge conn-${status.connection}`} data-testid="connection">
          {status.connection}
        </span>
      </header>
      <p class="meta">
        {online || last.atMs ? (
          <>
            last heartbeat <b title={dateTime(last.atMs ?? 0)}>{ago(last.atMs ?? 0, now)}</b>
          </>
        ) : (
          <>never connected</>
        )}
        {last.hostname && <> · on {last.hostname}</>}
        {last.provider && <> · provider {last.provider}</>}
        {last.agentVersion && <> · agent {last.agentVersion}</>}
        {last.startedAtMs ? <> · up since {dateTime(last.startedAtMs)}</> : null}
        {endpoint.owner !== me && <> · owned by {endpoint.owner}</>}
      </p>
      <div class="tiles">
        <Tile label="managers" value={last.managers ?? 0} />
        <Tile label="workers" value={last.workers ?? 0} title="the workers its managers may run at once" />
        <Tile
          label="workers busy"
          value={last.runningTasks ?? 0}
          tone={(last.runningTasks ?? 0) > 0 ? "busy" : ""}
          title="tasks running on workers now"
        />
        <Tile
          label="workers idle"
          value={last.idleWorkers ?? 0}
          title="started workers waiting for a task (warm workers of each kind: may be more than the workers a block runs at once)"
        />
        <Tile
          label="taken, not done"
          value={last.outstandingTasks ?? 0}
          title="tasks the agent holds: running or about to"
        />
        <Tile
          label="queued"
          value={count(status.queuedTasks)}
          title="tasks queued that the endpoint has not taken yet"
        />
      </div>
      {last.lastError && (
        <p class="error" data-testid="last-error">
          last error: {last.lastError}
        </p>
      )}
      {last.python && (last.python.version || last.python.problem) && (
        <p class="meta">
          Python {last.python.version ? `${last.python.version} (${last.python.executable ?? ""})` : ""}
          {last.python.problem && <span class="error-text"> {last.python.problem}</span>}
        </p>
      )}
      <h3>Blocks</h3>
      {blocks.length === 0 ? (
        <p class="empty">no blocks</p>
      ) : (
        <table class="grid">
          <thead>
            <tr>
              <th>block</th>
              <th>scheduler job</th>
              <th>state</th>
              <th>since</th>
              <th>reason</th>
            </tr>
          </thead>
          <tbody>
            {blocks.map((b) => (
              <tr key={b.blockId}>
                <td class="mono">{b.blockId}</td>
                <td class="mono">{b.jobId || "—"}</td>
                <td>
                  <span class={`badge block-${(b.state ?? "").toLowerCase()}`}>{b.state || "unknown"}</span>
                </td>
                <td title={dateTime(b.sinceMs ?? 0)}>{ago(b.sinceMs ?? 0, now)}</td>
                <td>{b.reason}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {owned && (
        <>
          <h3>
            Unfinished tasks on it{" "}
            {tasks.data && (
              <span class="muted">
                ({count(tasks.data.queuedCount)} queued, {count(tasks.data.takenCount)} taken; anyone's)
              </span>
            )}
          </h3>
          <LoadError error={tasks.error} />
          {tasks.data && tasks.data.tasks.length === 0 && <p class="empty">none</p>}
          {tasks.data && tasks.data.tasks.length > 0 && (
            <table class="grid">
              <thead>
                <tr>
                  <th>task</th>
                  <th>owner</th>
                  <th>function</th>
                  <th>state</th>
                  <th>created</th>
                </tr>
              </thead>
              <tbody>
                {tasks.data.tasks.map((t) => (
                  <tr key={t.id}>
                    <td class="mono">
                      {t.owner === me ? <a href={href(`/tasks/${t.id}`)}>{shortId(t.id)}</a> : shortId(t.id)}
                    </td>
                    <td>{t.owner}</td>
                    <td>{functionName(directory, t.functionId)}</td>
                    <td>
                      <StateBadge state={t.state} />
                    </td>
                    <td title={dateTime(t.createdAtMs)}>{ago(t.createdAtMs, now)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </article>
  );
}
