/**
 * The route of task statistics: counts of the caller's tasks by state and function, and the tasks
 * finished per bucket of time, over a window of creation times (tasks/task-stats.ts; bounded
 * whatever the caller has retained). For dashboards: one call, never a walk over every task.
 */
import { z } from "zod";

import { TaskState } from "../../proto/index.js";
import { userOf } from "../rpc/rpc.js";
import type { StateCounts, TaskStatsCounter } from "../tasks/task-stats.js";
import type { Route } from "./routes.js";
import { msParam, stateName } from "./task-routes.js";

/** The window when the query names none: the last hour. */
const DEFAULT_WINDOW_MS = 3_600_000;

const StatsQuery = z
  .strictObject({
    createdAfterMs: msParam.describe("tasks created at or after (ms since 1970; default: an hour ago)"),
    createdBeforeMs: msParam.describe("tasks created before (ms since 1970; default: now)"),
    functionId: z.string().optional().describe("only this function's tasks"),
    endpointId: z.string().optional().describe("only tasks on this endpoint"),
    groupId: z.string().optional().describe("only this group's tasks"),
    finishedAfterMs: msParam.describe(
      "the series of finished tasks starts here (ms since 1970; default: no series)",
    ),
    bucketMs: z
      .string()
      .regex(/^\d{1,10}$/, "must be a number of ms")
      .transform(Number)
      .optional()
      .describe("the width of each bucket of the series (ms, at least 1000; default 1000)"),
  })
  .describe("TaskStatsQuery");

/** Every state by name, with its count (0 included). */
const CountsJson = z.record(z.string(), z.number()).describe("tasks by state name");

const StatsJson = z
  .object({
    atMs: z.number().describe("when it was counted"),
    total: z.number().describe("tasks counted"),
    counts: CountsJson,
    unclassified: z
      .number()
      .describe(
        "unfinished tasks (queued or running) whose state was not read: over the bound of records read",
      ),
    functions: z.array(
      z.object({
        functionId: z.string(),
        total: z.number(),
        counts: CountsJson,
        unclassified: z.number(),
      }),
    ),
    series: z.object({
      fromMs: z.number(),
      bucketMs: z.number(),
      finished: z.array(z.number()).describe("tasks that finished in each bucket, oldest bucket first"),
      failed: z.array(z.number()).describe("of which failed"),
    }),
    complete: z
      .boolean()
      .describe("every task in the window was counted (false: the scan stopped at its bound)"),
    oldestCreatedAtMs: z.number().describe("the oldest creation time counted (0: none)"),
    pagesRead: z.number(),
    recordsRead: z.number(),
  })
  .describe("TaskStats");

const STATES = Object.values(TaskState).filter(
  (v): v is TaskState => typeof v === "number" && v !== TaskState.TASK_STATE_UNSPECIFIED && v >= 0,
);

function countsJson(counts: StateCounts): Record<string, number> {
  return Object.fromEntries(STATES.map((s) => [stateName(s), counts.get(s) ?? 0]));
}

/** The route of task statistics. */
export function taskStatsRoutes(counter: Pick<TaskStatsCounter, "count">): Route[] {
  return [
    {
      method: "GET",
      path: "/v1/tasks/stats",
      operationId: "taskStats",
      summary:
        "Counts of the caller's tasks created in a window (by state, and per function) and the tasks finished per bucket of time; bounded: `complete` and `unclassified` say what was not reached",
      tag: "tasks",
      query: StatsQuery,
      response: StatsJson,
      handler: async ({ query }, ctx) => {
        const q = query as z.infer<typeof StatsQuery>;
        const stats = await counter.count(
          {
            createdAfterMs: q.createdAfterMs ?? Date.now() - DEFAULT_WINDOW_MS,
            createdBeforeMs: q.createdBeforeMs ?? 0,
            functionId: q.functionId ?? "",
            endpointId: q.endpointId ?? "",
            groupId: q.groupId ?? "",
            finishedAfterMs: q.finishedAfterMs ?? 0,
            bucketMs: q.bucketMs ?? 1000,
          },
          userOf(ctx),
        );
        return {
          ...stats,
          counts: countsJson(stats.counts),
          functions: stats.functions.map((f) => ({ ...f, counts: countsJson(f.counts) })),
        };
      },
    },
  ];
}
