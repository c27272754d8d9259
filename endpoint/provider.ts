/**
 * How the agent gets compute. A block is one unit the provider launches: a local process, a
 * Slurm or PBS job. Each block runs one worker manager per node, which connects back to the agent.
 */

/** States a block's job can be in, across schedulers. */
export const BlockJobState = {
  PENDING: "pending",
  RUNNING: "running",
  COMPLETED: "completed",
  FAILED: "failed",
  CANCELLED: "cancelled",
  UNKNOWN: "unknown",
} as const;
export type BlockJobState = (typeof BlockJobState)[keyof typeof BlockJobState];

/** Whether a job in this state is gone for good. */
export function isJobEnded(state: BlockJobState): boolean {
  return state === "completed" || state === "failed" || state === "cancelled";
}

/** What a provider reports about one job. */
export interface BlockJobStatus {
  readonly state: BlockJobState;
  /** Why it ended (exit code, signal, scheduler reason). */
  readonly reason?: string;
}

/** What to run for a block: the manager command line and its environment. */
export interface BlockLaunch {
  readonly blockId: string;
  /** argv of the worker manager, `command[0]` being the executable. */
  readonly command: readonly string[];
  /** Environment added to the manager's (holds the block secret: never put it in argv). */
  readonly env: Readonly<Record<string, string>>;
  /** Where the manager's stdout/stderr go, if the provider can honour it. */
  readonly logFile?: string;
}

/** A way to launch blocks: local processes, Slurm, PBS. */
export interface ExecutionProvider {
  /** Short name shown in status ("local", "slurm", "pbs"). */
  readonly name: string;
  /** Launches a block; resolves with the provider's job id. */
  submitBlock(launch: BlockLaunch): Promise<string>;
  /** Current state of each job; unknown ids map to UNKNOWN. */
  status(jobIds: readonly string[]): Promise<Map<string, BlockJobStatus>>;
  /** Ends a job (and resolves once it is gone, as far as the provider can tell). */
  cancel(jobId: string): Promise<void>;
}
