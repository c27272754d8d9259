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

/** The user-facing name of a state: "received", "waiting-for-endpoint", ..., "success". */
export function stateName(state: TaskState): string {
  switch (state) {
    case TaskState.TASK_STATE_RECEIVED:
      return "received";
    case TaskState.TASK_STATE_WAITING_FOR_ENDPOINT:
      return "waiting-for-endpoint";
    case TaskState.TASK_STATE_WAITING_FOR_NODES:
      return "waiting-for-nodes";
    case TaskState.TASK_STATE_RUNNING:
      return "running";
    case TaskState.TASK_STATE_SUCCESS:
      return "success";
    case TaskState.TASK_STATE_FAILED:
      return "failed";
    case TaskState.TASK_STATE_CANCELLED:
      return "cancelled";
    case TaskState.TASK_STATE_EXPIRED:
      return "expired";
    default:
      return "unknown";
  }
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
