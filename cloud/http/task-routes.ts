/**
 * The task routes of the HTTP API: submit, get (one or many), cancel. Arguments and results are
 * JSON values in the body (bytes as `{"$bytes": "<base64>"}`, the SDK's convention); the handlers
 * are the ones gRPC's TaskService delegates to (tasks/submit.ts, tasks/book.ts).
 */
import { z } from "zod";

import { FabricError } from "../../common/index.js";
import { Task, TaskState } from "../../proto/index.js";
import { userOf } from "../rpc/rpc.js";
import type { TaskBook } from "../tasks/book.js";
import type { TaskSubmitter } from "../tasks/submit.js";
import type { Route } from "./routes.js";

/** The parts the task routes call. */
export interface TaskRouteParts {
  readonly submitter: Pick<TaskSubmitter, "submit">;
  readonly book: Pick<TaskBook, "get" | "cancel">;
}

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
  Object.entries(TaskState).map(([k, v]) => [v, k.replace(/^TASK_STATE_/, "").toLowerCase()]),
);
const stateName = (s: TaskState) => STATE_NAMES.get(s) ?? "unspecified";

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
  const { submitter, book } = parts;
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
