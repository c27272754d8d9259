import { Bus, canTransition, isTerminal } from "../../common/index.js";
import { TaskState, type ErrorInfo, type Task, type TaskUpdate } from "../../proto/index.js";

/**
 * Applies an agent's update to a task record. Pure. Returns the new record, or null when the
 * update must be ignored: it comes from another endpoint than the task's (forged or misrouted),
 * or the task already moved past it (a duplicate delivery, a late result after cancellation).
 * This is where "at most one visible result per task" is decided.
 */
export function applyTaskUpdate(task: Task, update: TaskUpdate, endpointId: string): Task | null {
  if (task.endpointId !== endpointId) return null;
  if (!canTransition(task.state, update.state)) return null;
  const history = [...task.history];
  // The agent folded the task's start into its outcome: record both.
  if (
    update.startedAtMs > 0 &&
    canTransition(task.state, TaskState.TASK_STATE_RUNNING) &&
    isTerminal(update.state)
  ) {
    history.push({
      state: TaskState.TASK_STATE_RUNNING,
      atMs: update.startedAtMs,
      actor: update.startedBy,
      detail: "",
    });
  }
  history.push({
    state: update.state,
    atMs: update.atMs || Date.now(),
    actor: update.actor,
    detail: update.detail,
  });
  const next: Task = {
    ...task,
    state: update.state,
    history,
    attempts: Math.max(task.attempts, update.attempt),
  };
  if (isTerminal(update.state)) {
    next.completedAtMs = update.atMs || Date.now();
    next.output = update.output;
    const ref = update.result?.objectRef;
    if (update.state === TaskState.TASK_STATE_SUCCESS && ref && ref !== Bus.resultObject(task.id)) {
      // A large result lives in the endpoint's bucket under the task's own name, never another
      // object (a forged reference would make the broker hand out some other task's payload).
      next.state = TaskState.TASK_STATE_FAILED;
      history[history.length - 1] = { ...history[history.length - 1]!, state: next.state };
      next.error = {
        code: "INTERNAL",
        message: `the endpoint sent a result that refers to object "${ref}"; a task's result object must be "${Bus.resultObject(task.id)}"`,
        reason: "",
        remote: undefined,
        shell: undefined,
      };
    } else if (update.state === TaskState.TASK_STATE_SUCCESS) {
      next.result = update.result ?? { json: new TextEncoder().encode("null"), objectRef: "", size: 4 };
      next.error = undefined;
    } else {
      next.error = update.error ?? {
        code: "UNKNOWN",
        message: "the task failed without a reason",
        reason: "",
        remote: undefined,
        shell: undefined,
      };
    }
  }
  return next;
}

/** A failure decided by the broker (not by an agent), or null if the task already finished. */
export function failTask(task: Task, error: ErrorInfo, actor: string, atMs = Date.now()): Task | null {
  if (isTerminal(task.state)) return null;
  return {
    ...task,
    state: TaskState.TASK_STATE_FAILED,
    history: [...task.history, { state: TaskState.TASK_STATE_FAILED, atMs, actor, detail: error.reason }],
    completedAtMs: atMs,
    error,
  };
}

/** A user's cancellation, or null if the task already finished. */
export function cancelTask(task: Task, actor: string, atMs = Date.now()): Task | null {
  if (isTerminal(task.state)) return null;
  return {
    ...task,
    state: TaskState.TASK_STATE_CANCELLED,
    history: [
      ...task.history,
      { state: TaskState.TASK_STATE_CANCELLED, atMs, actor, detail: "cancelled by its owner" },
    ],
    completedAtMs: atMs,
    error: {
      code: "CANCELLED",
      message: "the task was cancelled by its owner",
      reason: "cancelled",
      remote: undefined,
      shell: undefined,
    },
  };
}
