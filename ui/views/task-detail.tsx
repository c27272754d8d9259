import { useEffect, useRef, useState } from "preact/hooks";

import { ApiError } from "../api.js";
import { clockMs, dateTime, duration, truncate } from "../format.js";
import { href, navigate, usePoll } from "../hooks.js";
import { endpointName, functionName, useSession } from "../session.js";
import { TERMINAL_STATES, type Task } from "../types.js";
import { LoadError, Pre, StateBadge } from "./common.js";

/** How often an unfinished task is read again (its finish comes over the stream at once). */
const REFRESH_MS = 2000;
/** Characters of a result shown on the page; the download has all of it. */
const RESULT_SHOWN = 4000;

/** One task: its state history, result or error with the remote traceback, output; cancel, submit again. */
export function TaskDetailView({ taskId }: { taskId: string }) {
  const { api } = useSession();
  const [finished, setFinished] = useState<Task | undefined>(undefined);
  const wasDone = useRef(false);
  const polled = usePoll(
    (signal) => api.get<{ task: Task }>(`/v1/tasks/${encodeURIComponent(taskId)}`, undefined, signal),
    // A finished task changes no more: read again only now and then.
    wasDone.current ? 30_000 : REFRESH_MS,
    [api, taskId],
  );
  const task = finished?.id === taskId ? finished : polled.data?.task;
  const done = task ? TERMINAL_STATES.has(task.state) : false;
  wasDone.current = done;
  useFinish(taskId, task !== undefined && !done, setFinished);
  if (!task) {
    return (
      <section>
        <h1>Task {taskId}</h1>
        <LoadError error={polled.error} />
        {!polled.error && <p class="muted">loading…</p>}
      </section>
    );
  }
  return (
    <section>
      <p>
        <a href={href("/tasks")}>← all tasks</a>
      </p>
      <h1>
        Task <span class="mono">{task.id}</span> <StateBadge state={task.state} />
      </h1>
      <LoadError error={polled.error} />
      <Summary task={task} />
      <Actions task={task} onChange={(t) => setFinished(t)} refresh={polled.refresh} />
      <Timeline task={task} />
      {task.error && <ErrorPanel task={task} />}
      {task.result !== undefined && <ResultPanel task={task} />}
      <OutputPanel task={task} />
      <div class="card">
        <h2>Arguments</h2>
        <p class="muted">
          The broker does not keep a task's arguments in its record, so the API cannot show them (or run the
          task again with them).
        </p>
      </div>
    </section>
  );
}

/** Watches an unfinished task over the stream; its finished record comes as soon as it is written. */
function useFinish(taskId: string, open: boolean, onTask: (t: Task) => void) {
  const { api } = useSession();
  useEffect(() => {
    if (!open) return;
    const ctl = new AbortController();
    api
      .stream(
        "/v1/tasks/watch",
        { taskIds: [taskId] },
        (e) => {
          if (e.event === "task") onTask(JSON.parse(e.data) as Task);
        },
        ctl.signal,
      )
      .catch(() => undefined); // The poll goes on.
    return () => ctl.abort();
  }, [api, taskId, open]);
}

function Summary({ task }: { task: Task }) {
  const { directory } = useSession();
  const done = TERMINAL_STATES.has(task.state);
  return (
    <dl class="card facts">
      <dt>function</dt>
      <dd>
        <a href={href("/tasks", { functionId: task.functionId })}>
          {functionName(directory, task.functionId)}
        </a>{" "}
        <span class="mono muted">{task.functionId}</span>
      </dd>
      <dt>endpoint</dt>
      <dd>
        {endpointName(directory, task.endpointId)} <span class="mono muted">{task.endpointId}</span>
      </dd>
      {task.groupId && (
        <>
          <dt>group</dt>
          <dd class="mono">{task.groupId}</dd>
        </>
      )}
      <dt>created</dt>
      <dd>{dateTime(task.createdAtMs)}</dd>
      <dt>finished</dt>
      <dd>
        {done && task.completedAtMs
          ? `${dateTime(task.completedAtMs)} (took ${duration(task.completedAtMs - task.createdAtMs)})`
          : "not yet"}
      </dd>
      <dt>attempts</dt>
      <dd>{task.attempts}</dd>
    </dl>
  );
}

function Actions({
  task,
  onChange,
  refresh,
}: {
  task: Task;
  onChange: (t: Task) => void;
  refresh: () => void;
}) {
  const { api } = useSession();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error | undefined>(undefined);
  const [again, setAgain] = useState(false);
  const done = TERMINAL_STATES.has(task.state);
  const cancel = async () => {
    if (!confirm(`Cancel task ${task.id}?`)) return;
    setBusy(true);
    setError(undefined);
    try {
      const res = await api.post<{ tasks: Task[] }>("/v1/tasks/cancel", { taskIds: [task.id] });
      const t = res.tasks[0];
      if (t) onChange(t);
      refresh();
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="actions">
      {!done && (
        <button type="button" class="danger" disabled={busy} onClick={() => void cancel()}>
          Cancel task
        </button>
      )}
      <button type="button" onClick={() => setAgain(!again)} aria-expanded={again}>
        Submit again…
      </button>
      <LoadError error={error} />
      {again && <SubmitAgain task={task} />}
    </div>
  );
}

/**
 * The same function on the same endpoint, with arguments the user types: the API does not give
 * back a task's own arguments, so "the same arguments" cannot be filled in.
 */
function SubmitAgain({ task }: { task: Task }) {
  const { api, directory } = useSession();
  const [args, setArgs] = useState("[]");
  const [kwargs, setKwargs] = useState("{}");
  const [error, setError] = useState<string | undefined>(undefined);
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    let a: unknown;
    let k: unknown;
    try {
      a = JSON.parse(args);
      k = JSON.parse(kwargs);
    } catch (err) {
      setError(`not JSON: ${(err as Error).message}`);
      return;
    }
    if (!Array.isArray(a)) return setError("arguments must be a JSON array");
    if (typeof k !== "object" || k === null || Array.isArray(k))
      return setError("keyword arguments must be a JSON object");
    try {
      const res = await api.post<{ taskIds: string[] }>("/v1/tasks", {
        tasks: [{ functionId: task.functionId, endpointId: task.endpointId, args: a, kwargs: k }],
        noGroup: true,
      });
      const id = res.taskIds[0];
      if (id) navigate(`/tasks/${id}`);
    } catch (err) {
      setError(err instanceof ApiError ? `${err.code}: ${err.message}` : String(err));
    }
  };
  return (
    <form class="card again" onSubmit={(e) => void submit(e)}>
      <p class="muted">
        The broker keeps no copy of this task's arguments: type the ones to run{" "}
        {functionName(directory, task.functionId)} with on the same endpoint.
      </p>
      <label>
        arguments (JSON array)
        <textarea
          name="args"
          rows={2}
          value={args}
          onInput={(e) => setArgs((e.target as HTMLTextAreaElement).value)}
        />
      </label>
      <label>
        keyword arguments (JSON object)
        <textarea
          name="kwargs"
          rows={2}
          value={kwargs}
          onInput={(e) => setKwargs((e.target as HTMLTextAreaElement).value)}
        />
      </label>
      {error && <p class="error">{error}</p>}
      <button type="submit">Submit</button>
    </form>
  );
}

function Timeline({ task }: { task: Task }) {
  const start = task.history[0]?.atMs ?? task.createdAtMs;
  return (
    <div class="card">
      <h2>History</h2>
      <ol class="timeline" aria-label="history">
        {task.history.map((h, i) => (
          <li key={i} class={`step state-${h.state}`}>
            <span class="dot" />
            <StateBadge state={h.state} />
            <time title={dateTime(h.atMs)}>{clockMs(h.atMs)}</time>
            <span class="muted">+{duration(h.atMs - start)}</span>
            <span class="actor mono">{h.actor}</span>
            {h.detail && <span class="detail">{h.detail}</span>}
          </li>
        ))}
      </ol>
    </div>
  );
}

function ErrorPanel({ task }: { task: Task }) {
  const e = task.error ?? {};
  return (
    <div class="card error-card" aria-label="error">
      <h2>Error</h2>
      <p>
        <b>{e.code}</b>
        {e.reason && <span class="muted"> ({e.reason})</span>}: {e.message}
      </p>
      {e.remote && (
        <>
          <h3>
            Remote traceback{" "}
            <span class="muted">
              {e.remote.type}
              {e.remote.message ? `: ${e.remote.message}` : ""}
            </span>
          </h3>
          <Pre
            label="traceback"
            text={e.remote.stack || `${e.remote.type ?? ""}: ${e.remote.message ?? ""}`}
          />
        </>
      )}
      {e.shell && (
        <>
          <h3>
            Command exited with{" "}
            {e.shell.signal ? `signal ${e.shell.signal}` : `status ${e.shell.exitCode ?? 0}`}
          </h3>
          {e.shell.stderr && <Pre label="command stderr" text={e.shell.stderr} />}
          {e.shell.stdout && <Pre label="command stdout" text={e.shell.stdout} />}
        </>
      )}
    </div>
  );
}

function ResultPanel({ task }: { task: Task }) {
  const text = JSON.stringify(task.result, null, 2) ?? "";
  const shown = truncate(text, RESULT_SHOWN);
  const download = () => {
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `result-${task.id}.json`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  };
  return (
    <div class="card" aria-label="result">
      <header class="card-head">
        <h2>Result</h2>
        <button type="button" onClick={download}>
          Download ({text.length.toLocaleString("en-US")} characters)
        </button>
      </header>
      <Pre label="result" text={shown.text} />
      {shown.cut > 0 && (
        <p class="muted">… {shown.cut.toLocaleString("en-US")} more characters in the download</p>
      )}
    </div>
  );
}

function OutputPanel({ task }: { task: Task }) {
  const out = task.output?.stdout ?? "";
  const err = task.output?.stderr ?? "";
  return (
    <div class="card">
      <h2>Output</h2>
      {!out && !err && <p class="empty">The task wrote nothing to stdout or stderr.</p>}
      {out && (
        <>
          <h3>stdout</h3>
          <Pre label="stdout" text={out} />
        </>
      )}
      {err && (
        <>
          <h3>stderr</h3>
          <Pre label="stderr" text={err} />
        </>
      )}
    </div>
  );
}
