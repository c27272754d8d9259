import { isTerminal } from "../../common/index.js";
import { TaskState, type ErrorInfo, type Task } from "../../proto/index.js";

/**
 * A task record as its owner sees it once its retention has passed: `expired`, with no result or
 * output (its payloads are gone), an error saying so, and the expiry in its history. A record
 * within its retention is returned as it is. Retention counts from the record's last change, as
 * the bucket's own age limit does.
 */
export function expiredView(task: Task, retentionMs: number, nowMs = Date.now()): Task {
  const last = Math.max(task.createdAtMs, task.completedAtMs, task.history.at(-1)?.atMs ?? 0);
  const expiresAtMs = last + retentionMs;
  if (nowMs <= expiresAtMs || task.state === TaskState.TASK_STATE_EXPIRED) return task;
  const seconds = Math.round(retentionMs / 1000);
  const finished = isTerminal(task.state);
  const error: ErrorInfo = {
    code: finished ? "DATA_LOSS" : "DEADLINE_EXCEEDED",
    message: finished
      ? `the task ended ${taskStateLabel(task.state)} and was kept for ${seconds} s (the broker's resultRetentionSeconds); its result and output are gone`
      : `the task did not finish within ${seconds} s of its last change (the broker's resultRetentionSeconds) and expired; submit it again`,
    reason: "expired",
    remote: undefined,
    shell: undefined,
  };
  return {
    ...task,
    state: TaskState.TASK_STATE_EXPIRED,
    history: [
      ...task.history,
      { state: TaskState.TASK_STATE_EXPIRED, atMs: expiresAtMs, actor: "broker", detail: "retention" },
    ],
    result: undefined,
    output: undefined,
    error,
    completedAtMs: task.completedAtMs || expiresAtMs,
  };
}

function taskStateLabel(state: TaskState): string {
  return state === TaskState.TASK_STATE_SUCCESS
    ? "in success"
    : state === TaskState.TASK_STATE_CANCELLED
      ? "cancelled"
      : "failed";
}
