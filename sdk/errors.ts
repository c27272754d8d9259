import {
  FabricError,
  type ErrorCode,
  type RemoteExceptionInfo,
  type ShellOutcome,
} from "../common/client.js";
import type { TaskStateName } from "./types.js";

/**
 * The task has not finished yet, so it has no result to give. Code FAILED_PRECONDITION; `state`
 * says where it is. Retrying later may help, or use `waitForResult`, which waits without polling.
 */
export class TaskPendingError extends FabricError {
  override readonly name: string = "TaskPendingError";
  /** The task asked about. */
  readonly taskId: string;
  /** Its current, non-terminal state. */
  readonly state: TaskStateName;

  constructor(taskId: string, state: TaskStateName) {
    super("FAILED_PRECONDITION", `task ${taskId} has not finished yet (state: ${state})`);
    this.taskId = taskId;
    this.state = state;
  }
}

/**
 * The task ended without a result: it failed, was cancelled or expired. `code`, `reason`, and for a
 * failed function `remote` (the exception it threw) or `shell` (exit code, stdout, stderr) say why.
 */
export class TaskFailedError extends FabricError {
  override readonly name: string = "TaskFailedError";
  /** The task that failed. */
  readonly taskId: string;
  /** Its terminal state: "failed", "cancelled" or "expired". */
  readonly state: TaskStateName;
  /** What the task printed before it failed (see {@link TaskInfo.output}). */
  readonly output: { readonly stdout: string; readonly stderr: string } | undefined;

  constructor(
    taskId: string,
    state: TaskStateName,
    code: ErrorCode,
    message: string,
    details: {
      reason?: string;
      remote?: RemoteExceptionInfo;
      shell?: ShellOutcome;
      output?: { readonly stdout: string; readonly stderr: string };
    } = {},
  ) {
    const { output, ...rest } = details;
    super(code, message, rest);
    this.taskId = taskId;
    this.state = state;
    this.output = output;
  }
}

/**
 * A batch submission that failed part-way: the chunks before the failing one were accepted and
 * their tasks will run. `groupId` and `taskIds` name them; `code` and `cause` are the failure.
 */
export class BatchSubmitError extends FabricError {
  override readonly name: string = "BatchSubmitError";
  /** The group the accepted tasks belong to ("" if none was accepted). */
  readonly groupId: string;
  /** The tasks accepted before the failure. */
  readonly taskIds: readonly string[];

  constructor(cause: FabricError, groupId: string, taskIds: readonly string[], total: number) {
    super(
      cause.code,
      `submitted ${taskIds.length} of ${total} tasks${groupId ? ` (group ${groupId})` : ""}, then: ${cause.message}`,
      { cause },
    );
    this.groupId = groupId;
    this.taskIds = taskIds;
  }
}
