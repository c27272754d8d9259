import { TaskState } from "../proto/messages.js";

export { TaskState };

const terminal: ReadonlySet<TaskState> = new Set<TaskState>([
  TaskState.TASK_STATE_SUCCESS,
  TaskState.TASK_STATE_FAILED,
  TaskState.TASK_STATE_CANCELLED,
  TaskState.TASK_STATE_EXPIRED,
]);

/** Whether a task in this state will never change again. */
export function isTerminal(state: TaskState): boolean {
  return terminal.has(state);
}

const names: Partial<Record<TaskState, string>> = {
  [TaskState.TASK_STATE_RECEIVED]: "received",
  [TaskState.TASK_STATE_WAITING_FOR_ENDPOINT]: "waiting-for-endpoint",
  [TaskState.TASK_STATE_WAITING_FOR_NODES]: "waiting-for-nodes",
  [TaskState.TASK_STATE_RUNNING]: "running",
  [TaskState.TASK_STATE_SUCCESS]: "success",
  [TaskState.TASK_STATE_FAILED]: "failed",
  [TaskState.TASK_STATE_CANCELLED]: "cancelled",
  [TaskState.TASK_STATE_EXPIRED]: "expired",
};

/** The user-facing name of a state: "received", "waiting-for-endpoint", ..., "success". */
export function stateName(state: TaskState): string {
  return names[state] ?? "unknown";
}

/** Order of non-terminal states; a task never moves backwards. */
const rank: Partial<Record<TaskState, number>> = {
  [TaskState.TASK_STATE_RECEIVED]: 1,
  [TaskState.TASK_STATE_WAITING_FOR_ENDPOINT]: 2,
  [TaskState.TASK_STATE_WAITING_FOR_NODES]: 3,
  [TaskState.TASK_STATE_RUNNING]: 4,
};

/**
 * Whether a task in `from` may move to `to`. Terminal states are final; non-terminal states only
 * move forward, except RUNNING → RUNNING (a retry attempt) which is allowed.
 */
export function canTransition(from: TaskState, to: TaskState): boolean {
  if (isTerminal(from)) return false;
  if (isTerminal(to)) return true;
  if (from === TaskState.TASK_STATE_RUNNING && to === TaskState.TASK_STATE_RUNNING) return true;
  return (rank[to] ?? 0) > (rank[from] ?? 0);
}
