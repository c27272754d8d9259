/**
 * The task routes of the HTTP API: submit, get (one or many), cancel. Arguments and results are
 * JSON values in the body (bytes as `{"$bytes": "<base64>"}`, the SDK's convention); the handlers
 * are the ones gRPC's TaskService delegates to (tasks/submit.ts, tasks/book.ts).
 */
import { z } from "zod";

import { FabricError } from "../../common/index.js";
import { Task, TaskState, type TaskSummary, type WatchTasksResponse } from "../../proto/index.js";
import { userOf } from "../rpc/rpc.js";
import type { TaskBook } from "../tasks/book.js";
import type { TaskSubmitter } from "../tasks/submit.js";
import type { TaskLister } from "../tasks/task-index.js";
import type { TaskWatcher } from "../tasks/watch.js";
import type { EventSink, Route } from "./routes.js";

/** The parts the task routes call. */
export interface TaskRouteParts {
  readonly submitter: Pick<TaskSubmitter, "submit">;
  readonly book: Pick<TaskBook, "get" | "cancel">;
  readonly lister: Pick<TaskLister, "list">;
  readonly watcher: Pick<TaskWatcher, "watch">;
}

/** Longest a long-poll waits. */
const MAX_WAIT_MS = 60_000;

/** Most tasks one get or cancel names (a submission's own limit is the broker's `limits`). */
const MAX_IDS = 1000;
/** Most tasks a submission's body may hold; the broker's `limits.maxBatchSize` (10,000 by default) applies below it. */
const MAX_TASKS = 100_000;

const TaskSpecJson = z
  .strictObject({
    functionId: z.string().describe("the function to run"),
    endpointId: z.string().describe("where to run it"),
    args: z.array(z.unknown()).optional().describe("positional arguments (JSON; bytes as {$bytes: base64})"),
    kwargs: z.record(z.string(), z.unknown()).optional().describe("keyword arguments (JSON)"),
    timeoutS: z.number().int().min(0).optional().describe("seconds it may run (0: the function's limit)"),
  })
  .describe("TaskSpec");

const SubmitBody = z
  .strictObject({
    // Bounded (beyond any batch limits.maxBatchSize lets through): zod looks at every item of an
    // unbounded array, and a body of a million bad items would hold the broker for seconds.
    tasks: z.array(TaskSpecJson).min(1).max(MAX_TASKS),
    groupId: z.string().optional().describe("add the tasks to this group of the caller's"),
    idempotencyKey: z
      .string()
      .optional()
      .describe("the same key and count create the same tasks at most once"),
    noGroup: z.boolean().optional().describe("the tasks join no group"),
  })
  .describe("SubmitTasksRequest");

const IdsBody = z
  .strictObject({
    taskIds: z.array(z.string()).min(1).max(MAX_IDS),
    omitResults: z.boolean().optional().describe("leave result payloads out"),
  })
  .describe("TaskIds");

/** A task as the API shows it. */
export const TaskJson = z
  .object({
    id: z.string(),
    owner: z.string(),
    functionId: z.string(),
    endpointId: z.string(),
    groupId: z.string(),
    state: z
      .string()
      .describe(
        "received, waiting_for_endpoint, waiting_for_nodes, running, success, failed, cancelled, expired",
      ),
    history: z.array(
      z.object({ state: z.string(), atMs: z.number(), actor: z.string(), detail: z.string() }),
    ),
    result: z.unknown().optional().describe("the function's return value (state success)"),
    error: z.unknown().optional().describe("{code, message, reason, remote} (failed, cancelled, expired)"),
    createdAtMs: z.number(),
    completedAtMs: z.number(),
    attempts: z.number(),
    output: z.object({ stdout: z.string(), stderr: z.string() }).optional(),
  })
  .describe("Task");

const STATE_NAMES = new Map<number, string>(
  Object.entries(TaskState)
    .filter(([, v]) => typeof v === "number" && v >= 0)
    .map(([k, v]) => [v as number, k.replace(/^TASK_STATE_/, "").toLowerCase()]),
);
/** A state's name in the API: "waiting_for_endpoint", "success". */
export const stateName = (s: TaskState) => STATE_NAMES.get(s) ?? "unspecified";
const STATE_OF = new Map(
  [...STATE_NAMES].filter(([v]) => v !== 0).map(([v, name]) => [name, v as TaskState]),
);
const STATES = [...STATE_OF.keys()].join(", ");

/** Repeated (`?state=a&state=b`) or comma-separated (`?state=a,b`) values, as one list. */
const listParam = z
  .union([z.string(), z.array(z.string())])
  .optional()
  .transform((v) =>
    (v === undefined ? [] : Array.isArray(v) ? v : [v]).flatMap((x) => x.split(",")).filter((x) => x !== ""),
  );
export const msParam = z
  .string()
  .regex(/^\d{1,15}$/, "must be a time in ms since 1970")
  .transform(Number)
  .optional();

const ListQuery = z
  .strictObject({
    state: listParam.describe(`only tasks in these states (repeat or comma-separate): ${STATES}`),
    functionId: z.string().optional().describe("only this function's tasks"),
    endpointId: z.string().optional().describe("only tasks on this endpoint"),
    groupId: z.string().optional().describe("only this group's tasks"),
    createdAfterMs: msParam.describe("created at or after (ms since 1970)"),
    createdBeforeMs: msParam.describe("created before (ms since 1970)"),
    limit: z
      .string()
      .regex(/^\d{1,4}$/, "must be a number from 1 to 1000")
      .transform(Number)
      .refine((n) => n >= 1 && n <= 1000, "must be from 1 to 1000")
      .optional()
      .describe("most tasks in the page (default 100)"),
    cursor: z.string().optional().describe("the nextCursor of the page before (same filters)"),
  })
  .describe("ListTasksQuery");

const TaskSummaryJson = z
  .object({
    id: z.string(),
    functionId: z.string(),
    endpointId: z.string(),
    groupId: z.string(),
    state: z.string(),
    createdAtMs: z.number(),
    completedAtMs: z.number(),
  })
  .describe("TaskSummary");

const WatchBody = z
  .strictObject({
    taskIds: z.array(z.string()).max(MAX_IDS).optional().describe("the tasks to watch"),
    groupId: z.string().optional().describe("or a group's tasks"),
  })
  .describe("WatchTasks");

const WatchQuery = z
  .strictObject({
    taskId: listParam.describe("the tasks to watch (repeat or comma-separate)"),
    groupId: z.string().optional().describe("or a group's tasks"),
  })
  .describe("WatchTasksQuery");

const WaitBody = z
  .strictObject({
    taskIds: z.array(z.string()).max(MAX_IDS).optional().describe("the tasks to wait for"),
    groupId: z.string().optional().describe("or a group's tasks"),
    timeoutMs: z
      .number()
      .int()
      .min(0)
      .max(MAX_WAIT_MS)
      .optional()
      .describe(`longest to wait (default 30000, at most ${MAX_WAIT_MS})`),
    all: z.boolean().optional().describe("answer once all have finished, not the first"),
  })
  .describe("WaitTasks");

function summaryToJson(t: TaskSummary): z.infer<typeof TaskSummaryJson> {
  return {
    id: t.id,
    functionId: t.functionId,
    endpointId: t.endpointId,
    groupId: t.groupId,
    state: stateName(t.state),
    createdAtMs: t.createdAtMs,
    completedAtMs: t.completedAtMs,
  };
}

function stateOf(name: string): TaskState {
  const s = STATE_OF.get(name.trim().toLowerCase().replace(/-/g, "_"));
  if (s === undefined)
    throw new FabricError("INVALID_ARGUMENT", `state ${JSON.stringify(name)} is not one of ${STATES}`);
  return s;
}

/** The tasks of a WatchTasks message, as JSON. */
function watchedTasks(msg: WatchTasksResponse): Record<string, unknown>[] {
  return (msg.task ? [msg.task] : msg.tasks).map(taskToJson);
}

/**
 * A watch's sink that sends each finished task as a `task` event (the Server-Sent Events form).
 */
function eventWatchSink(sink: EventSink): {
  sink: Parameters<TaskWatcher["watch"]>[1];
  sent: () => number;
} {
  let count = 0;
  const cancelListeners = new Set<() => void>();
  sink.onClose(() => {
    for (const l of cancelListeners) l();
  });
  return {
    sent: () => count,
    sink: {
      get cancelled() {
        return sink.closed;
      },
      write: (msg) => {
        let ok = true;
        for (const t of watchedTasks(msg)) {
          count++;
          ok = sink.send("task", t) && ok;
        }
        return ok;
      },
      once: (_e, l) => sink.once("drain", l),
      on: (_e, l) => cancelListeners.add(l),
      off: (_e, l) => cancelListeners.delete(l),
      ready: () => sink.ready(),
    },
  };
}

/** A task record as JSON: states by name, the result as the JSON value it is. */
export function taskToJson(task: Task): Record<string, unknown> {
  const json = Task.toJSON(task) as Record<string, unknown>;
  delete json["result"];
  let result: unknown;
  if (task.result && task.result.json.length > 0) {
    try {
      result = JSON.parse(Buffer.from(task.result.json).toString("utf8"));
    } catch {
      throw new FabricError("DATA_LOSS", `task ${task.id}'s recorded result is not JSON`);
    }
  }
  return {
    ...json,
    id: task.id,
    owner: task.owner,
    functionId: task.functionId,
    endpointId: task.endpointId,
    groupId: task.groupId,
    state: stateName(task.state),
    history: task.history.map((h) => ({
      state: stateName(h.state),
      atMs: h.atMs,
      actor: h.actor,
      detail: h.detail,
    })),
    createdAtMs: task.createdAtMs,
    completedAtMs: task.completedAtMs,
    attempts: task.attempts,
    ...(result !== undefined ? { result } : {}),
  };
}

const json = (value: unknown) => Buffer.from(JSON.stringify(value));

/** The routes of tasks. */
export function taskRoutes(parts: TaskRouteParts): Route[] {
  const { submitter, book, lister, watcher } = parts;
  return [
    {
      method: "POST",
      path: "/v1/tasks",
      operationId: "submitTasks",
      summary: "Submit tasks (one or many); answers their ids, in order, and their group",
      tag: "tasks",
      body: SubmitBody,
      response: z.object({ groupId: z.string(), taskIds: z.array(z.string()) }),
      handler: async ({ body }, ctx) => {
        const b = body as z.infer<typeof SubmitBody>;
        const res = await submitter.submit(
          {
            tasks: b.tasks.map((t) => ({
              functionId: t.functionId,
              endpointId: t.endpointId,
              argsJson: t.args === undefined ? new Uint8Array() : json(t.args),
              kwargsJson: t.kwargs === undefined ? new Uint8Array() : json(t.kwargs),
              ...(t.timeoutS !== undefined ? { timeoutS: t.timeoutS } : {}),
            })),
            groupId: b.groupId ?? "",
            ...(b.idempotencyKey !== undefined ? { idempotencyKey: b.idempotencyKey } : {}),
            ...(b.noGroup !== undefined ? { noGroup: b.noGroup } : {}),
          },
          userOf(ctx),
        );
        return { groupId: res.groupId, taskIds: res.taskIds };
      },
    },
    {
      method: "GET",
      path: "/v1/tasks/{taskId}",
      operationId: "getTask",
      summary:
        "One task: its state, history, result or error, and output (404 when unknown or not the caller's)",
      tag: "tasks",
      response: z.object({ task: TaskJson }),
      handler: async ({ params }, ctx) => {
        const res = await book.get({ taskIds: [params["taskId"]!], omitResults: false }, userOf(ctx));
        const task = res.tasks[0];
        if (!task) throw new FabricError("NOT_FOUND", `task ${params["taskId"]} not found`);
        return { task: taskToJson(task) };
      },
    },
    {
      method: "POST",
      path: "/v1/tasks/get",
      operationId: "getTasks",
      summary: `Many tasks at once (at most ${MAX_IDS}), in the order asked`,
      tag: "tasks",
      body: IdsBody,
      response: z.object({ tasks: z.array(TaskJson) }),
      handler: async ({ body }, ctx) => {
        const b = body as z.infer<typeof IdsBody>;
        const res = await book.get({ taskIds: b.taskIds, omitResults: b.omitResults ?? false }, userOf(ctx));
        return { tasks: res.tasks.map(taskToJson) };
      },
    },
    {
      method: "GET",
      path: "/v1/tasks",
      operationId: "listTasks",
      summary:
        "The caller's tasks, newest first, filtered and paged: follow nextCursor (empty when no more match; a page may be short and still have one)",
      tag: "tasks",
      query: ListQuery,
      response: z.object({ tasks: z.array(TaskSummaryJson), nextCursor: z.string() }),
      handler: async ({ query }, ctx) => {
        const q = query as z.infer<typeof ListQuery>;
        const res = await lister.list(
          {
            states: q.state.map(stateOf),
            functionId: q.functionId ?? "",
            endpointId: q.endpointId ?? "",
            groupId: q.groupId ?? "",
            createdAfterMs: q.createdAfterMs ?? 0,
            createdBeforeMs: q.createdBeforeMs ?? 0,
            limit: q.limit ?? 0,
            cursor: q.cursor ?? "",
          },
          userOf(ctx),
        );
        return { tasks: res.tasks.map(summaryToJson), nextCursor: res.nextCursor };
      },
    },
    {
      method: "POST",
      path: "/v1/tasks/watch",
      operationId: "watchTasks",
      summary:
        "Server-Sent Events: each named task (or the group's) as a `task` event once it has finished (at once if it has), then `done` with {count}",
      tag: "tasks",
      body: WatchBody,
      response: TaskJson,
      events: async ({ body }, ctx, sink) => {
        const b = body as z.infer<typeof WatchBody>;
        const { sink: watchSink, sent } = eventWatchSink(sink);
        await watcher.watch({ taskIds: b.taskIds ?? [], groupId: b.groupId ?? "" }, watchSink, userOf(ctx));
        if (!sink.closed) sink.send("done", { count: sent() });
      },
    },
    {
      method: "GET",
      path: "/v1/tasks/watch",
      operationId: "watchTasksQuery",
      summary: "POST /v1/tasks/watch with the tasks in the query (?taskId=a&taskId=b, or ?groupId=)",
      tag: "tasks",
      query: WatchQuery,
      response: TaskJson,
      events: async ({ query }, ctx, sink) => {
        const q = query as z.infer<typeof WatchQuery>;
        if (q.taskId.length > MAX_IDS)
          throw new FabricError("INVALID_ARGUMENT", `watch at most ${MAX_IDS} tasks per call`);
        const { sink: watchSink, sent } = eventWatchSink(sink);
        await watcher.watch({ taskIds: q.taskId, groupId: q.groupId ?? "" }, watchSink, userOf(ctx));
        if (!sink.closed) sink.send("done", { count: sent() });
      },
    },
    {
      method: "POST",
      path: "/v1/tasks/wait",
      operationId: "waitTasks",
      summary:
        "Long-poll: answers as soon as one of the tasks has finished (all of them with all: true), or at the timeout, with the finished ones and the ids still pending",
      tag: "tasks",
      body: WaitBody,
      response: z.object({ tasks: z.array(TaskJson), pendingIds: z.array(z.string()) }),
      handler: async ({ body, signal }, ctx) => {
        const b = body as z.infer<typeof WaitBody>;
        const finished: Record<string, unknown>[] = [];
        let cancelled = false;
        const listeners = new Set<() => void>();
        const cancel = () => {
          if (cancelled) return;
          cancelled = true;
          for (const l of listeners) l();
        };
        const timer = setTimeout(cancel, b.timeoutMs ?? 30_000);
        // A client that went away is not waited for.
        signal?.addEventListener("abort", cancel, { once: true });
        try {
          await watcher.watch(
            { taskIds: b.taskIds ?? [], groupId: b.groupId ?? "" },
            {
              get cancelled() {
                return cancelled;
              },
              write: (msg) => {
                finished.push(...watchedTasks(msg));
                if (!b.all) cancel();
                return true;
              },
              once: (_e, l) => queueMicrotask(l),
              on: (_e, l) => listeners.add(l),
              off: (_e, l) => listeners.delete(l),
            },
            userOf(ctx),
          );
        } finally {
          clearTimeout(timer);
        }
        const done = new Set(finished.map((t) => t["id"] as string));
        const asked = b.taskIds ?? [];
        return { tasks: finished, pendingIds: [...new Set(asked)].filter((id) => !done.has(id)) };
      },
    },
    {
      method: "POST",
      path: "/v1/tasks/cancel",
      operationId: "cancelTasks",
      summary: "Cancel tasks; answers each as it now is (a finished task stays as it was)",
      tag: "tasks",
      body: IdsBody,
      response: z.object({ tasks: z.array(TaskJson) }),
      handler: async ({ body }, ctx) => {
        const b = body as z.infer<typeof IdsBody>;
        const res = await book.cancel({ taskIds: b.taskIds }, userOf(ctx));
        return { tasks: res.tasks.map(taskToJson) };
      },
    },
  ];
}
