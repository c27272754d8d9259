// What the `fabric` CLI prints. Pure functions from SDK values to text, so the output users see is
// unit-tested (cli-format.test.ts) without a broker.
import Table from "cli-table3";

import { FabricError } from "../common/client.js";
import type {
  EndpointInfo,
  EndpointTasks,
  FunctionInfo,
  TaskInfo,
  TaskOutcome,
  TaskSummaryInfo,
} from "./types.js";

// No colours: output is read by people and by scripts alike, and goes to files and CI logs.
const plain = { head: [] as string[], border: [] as string[] };

/** No lines at all: columns two spaces apart (what goes into a pipe or a file). */
const NO_BOX = {
  top: "",
  "top-mid": "",
  "top-left": "",
  "top-right": "",
  bottom: "",
  "bottom-mid": "",
  "bottom-left": "",
  "bottom-right": "",
  left: "",
  "left-mid": "",
  mid: "",
  "mid-mid": "",
  right: "",
  "right-mid": "",
  middle: "  ",
};
const bare = { ...plain, "padding-left": 0, "padding-right": 0 };

let boxes = true;

/**
 * Whether tables are drawn with box lines (on a terminal) or as plain columns (into a pipe or a
 * file, where `grep`, `awk` and `cut` read them). The CLI sets it once per run.
 */
export function drawBoxes(on: boolean): void {
  boxes = on;
}

const unboxed = (text: string) =>
  text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => l.trimEnd())
    .join("\n");

/** A table with a header row. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const t = boxes
    ? new Table({ head: [...head], style: plain })
    : new Table({ head: [...head], style: bare, chars: NO_BOX });
  for (const r of rows) t.push([...r]);
  return boxes ? t.toString() : unboxed(t.toString());
}

/** A two-column table of field names and values. */
export function record(fields: readonly (readonly [string, string])[]): string {
  const t = boxes ? new Table({ style: plain }) : new Table({ style: bare, chars: NO_BOX });
  for (const [k, v] of fields) t.push({ [k]: v });
  return boxes ? t.toString() : unboxed(t.toString());
}

const time = (d: Date | undefined): string => (d && d.getTime() > 0 ? d.toISOString() : "-");

/** Plain data for an error (an Error's own fields are not enumerable, so JSON.stringify loses them). */
export function errorToJson(err: unknown): Record<string, unknown> {
  if (err instanceof FabricError) {
    return {
      code: err.code,
      message: err.message,
      ...(err.reason ? { reason: err.reason } : {}),
      ...(err.remote ? { remote: err.remote } : {}),
      ...(err.shell ? { shell: err.shell } : {}),
    };
  }
  return { code: "INTERNAL", message: err instanceof Error ? err.message : String(err) };
}

/** Machine-readable JSON of any SDK value: dates as ISO strings, errors as `{code, message, ...}`. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (v instanceof Error ? errorToJson(v) : v), 2) ?? "null";
}

/** A task outcome as plain data, for `--json`. */
export function outcomeToJson(o: TaskOutcome): Record<string, unknown> {
  return o.ok
    ? { taskId: o.taskId, state: o.state, ok: true, value: o.value ?? null }
    : { taskId: o.taskId, state: o.state, ok: false, error: errorToJson(o.error) };
}

/** A function's result as printed by `fabric task result` / `fabric run --wait`. */
export function formatValue(value: unknown): string {
  return JSON.stringify(value ?? null, null, 2);
}

function clip(text: string, max = 120): string {
  const oneLine = text.replace(/\s+/g, " ").trim();
  return oneLine.length > max ? `${oneLine.slice(0, max - 1)}…` : oneLine;
}

/** `fabric function list`. */
export function formatFunctions(fns: readonly FunctionInfo[]): string {
  if (fns.length === 0) return "no functions registered";
  return table(
    ["ID", "NAME", "KIND", "IMAGE", "CREATED"],
    fns.map((f) => [f.id, f.name, f.kind, f.containerImage || "(default)", time(f.createdAt)]),
  );
}

/** `fabric function show`. */
export function formatFunction(f: FunctionInfo): string {
  const fields: [string, string][] = [
    ["id", f.id],
    ["name", f.name],
    ["description", f.description || "-"],
    ["kind", f.kind],
    ["image", f.containerImage || "(endpoint default)"],
    ["owner", f.owner],
    ["created", time(f.createdAt)],
  ];
  if (f.kind === "js" || f.kind === "python") {
    fields.push(["entry point", f.entryPoint]);
    if (f.kind === "python") fields.push(["min Python", f.minVersion || "(any)"]);
    return `${record(fields)}\n${f.source.trimEnd()}`;
  }
  fields.push(
    ["command", f.command],
    ["walltime", f.walltimeSeconds > 0 ? `${f.walltimeSeconds} s` : "(endpoint default)"],
  );
  return record(fields);
}

/** `fabric endpoint list`. */
export function formatEndpoints(eps: readonly EndpointInfo[]): string {
  if (eps.length === 0) return "no endpoints registered";
  return table(
    ["ID", "NAME", "CONNECTION", "QUEUED", "RUNNING", "WORKERS (IDLE)", "LAST HEARTBEAT"],
    eps.map((e) => {
      const last = e.status.last;
      return [
        e.id,
        e.name,
        e.status.connection,
        String(e.status.queuedTasks),
        last ? String(last.runningTasks) : "-",
        last ? `${last.workers} (${last.idleWorkers})` : "-",
        time(last?.at),
      ];
    }),
  );
}

/** `fabric endpoint status`. */
export function formatEndpoint(e: EndpointInfo): string {
  const last = e.status.last;
  const fields: [string, string][] = [
    ["id", e.id],
    ["name", e.name],
    ["description", e.description || "-"],
    ["connection", e.status.connection],
    ["queued tasks", String(e.status.queuedTasks)],
    ["created", time(e.createdAt)],
  ];
  if (last) {
    fields.push(
      ["last heartbeat", time(last.at)],
      ["agent state", last.state],
      ["host", last.hostname],
      ["agent version", last.agentVersion],
      ["provider", last.provider],
      ["started", time(last.startedAt)],
      ["outstanding tasks", String(last.outstandingTasks)],
      ["running tasks", String(last.runningTasks)],
      ["managers", String(last.managers)],
      ["workers (idle)", `${last.workers} (${last.idleWorkers})`],
    );
    if (last.python) {
      const p = last.python;
      fields.push([
        "python",
        p.version ? `${p.version} (${p.implementation}, ${p.executable})` : `none: ${p.problem}`,
      ]);
      if (p.version) fields.push(["python modules", `${p.modules.length} importable (--json lists them)`]);
    }
    if (last.lastError) fields.push(["last error", last.lastError]);
  }
  const out = [record(fields)];
  if (last && last.blocks.length > 0) {
    out.push(
      table(
        ["BLOCK", "JOB", "STATE", "SINCE", "REASON"],
        last.blocks.map((b) => [b.blockId, b.jobId || "-", b.state, time(b.since), b.reason || "-"]),
      ),
    );
  }
  return out.join("\n");
}

/** `fabric task status`: the task's fields, then its history. */
export function formatTaskStatus(t: TaskInfo): string {
  const fields: [string, string][] = [
    ["id", t.id],
    ["state", t.state],
    ["function", t.functionId],
    ["endpoint", t.endpointId],
    ["group", t.groupId || "-"],
    ["attempts", String(t.attempts)],
    ["created", time(t.createdAt)],
    ["completed", time(t.completedAt)],
  ];
  const e = t.error;
  if (e) {
    fields.push(["error", `${e.code}: ${e.message}`]);
    if (e.reason) fields.push(["reason", e.reason]);
    if (e.remote) fields.push(["exception", `${e.remote.type}: ${e.remote.message}`]);
    if (e.shell) {
      fields.push(["exit code", String(e.shell.exitCode) + (e.shell.signal ? ` (${e.shell.signal})` : "")]);
      if (e.shell.stdout) fields.push(["stdout", clip(e.shell.stdout, 400)]);
      if (e.shell.stderr) fields.push(["stderr", clip(e.shell.stderr, 400)]);
    }
  }
  const history = table(
    ["STATE", "AT", "ACTOR", "DETAIL"],
    t.history.map((h) => [h.state, time(h.at), h.actor, h.detail || ""]),
  );
  const more = detailSections(e?.remote?.stack ?? "", t.output);
  return `${record(fields)}\n${history}${more ? `\n${more}` : ""}`;
}

/** Most lines of a traceback or of a task's output shown by the CLI (`--json` has them whole). */
const SECTION_LINES = 40;

/** The last lines of `text`, indented, under `title`; "" when there is none. */
function section(title: string, text: string): string {
  const lines = text.replace(/\s+$/, "").split("\n");
  if (lines.length === 1 && lines[0] === "") return "";
  const shown = lines.slice(-SECTION_LINES);
  const cut = lines.length - shown.length;
  return [
    `${title}:`,
    ...(cut > 0 ? [`  [… ${cut} lines before …]`] : []),
    ...shown.map((l) => `  ${l}`),
  ].join("\n");
}

/** A failed task's traceback and what it printed, as the CLI shows them under its status or error. */
export function detailSections(
  traceback: string,
  output: { readonly stdout: string; readonly stderr: string } | undefined,
): string {
  return [
    section("traceback", traceback),
    section("stdout", output?.stdout ?? ""),
    section("stderr", output?.stderr ?? ""),
  ]
    .filter((x) => x !== "")
    .join("\n");
}

/** `fabric endpoint tasks`: the counts, then the tasks. */
export function formatEndpointTasks(e: EndpointTasks): string {
  const head = `${e.queued} queued, ${e.taken} taken by the agent`;
  if (e.tasks.length === 0) return head;
  return `${head}\n${table(
    ["ID", "OWNER", "STATE", "FUNCTION", "CREATED"],
    e.tasks.map((t) => [t.id, t.owner, t.state, t.functionId, t.createdAt.toISOString()]),
  )}`;
}

/** `fabric task list`: a table, newest first, and how to go on when there is more. */
export function formatTaskList(tasks: readonly TaskSummaryInfo[], cursor: string | undefined): string {
  const when = (d: Date | undefined) =>
    d
      ? d
          .toISOString()
          .replace("T", " ")
          .replace(/\.\d+Z$/, "Z")
      : "";
  const lines = [
    tasks.length === 0
      ? "no tasks match"
      : table(
          ["ID", "STATE", "FUNCTION", "ENDPOINT", "CREATED", "COMPLETED"],
          tasks.map((t) => [
            t.id,
            t.state,
            t.functionId,
            t.endpointId,
            when(t.createdAt),
            when(t.completedAt),
          ]),
        ),
  ];
  if (cursor) lines.push(`more: fabric task list --cursor ${cursor} (with the same filters)`);
  return lines.join("\n");
}

/** `fabric task cancel`: each task and its state afterwards. */
export function formatTaskStates(tasks: readonly TaskInfo[]): string {
  return table(
    ["ID", "STATE"],
    tasks.map((t) => [t.id, t.state]),
  );
}

/** `fabric task watch`: one line per finished task. */
export function formatOutcomeLine(o: TaskOutcome): string {
  const detail = o.ok ? clip(JSON.stringify(o.value ?? null)) : clip(`${o.error.code}: ${o.error.message}`);
  return `${o.taskId}  ${o.state}  ${detail}`;
}
