/**
 * How the agent gets compute. A block is one unit the provider launches: a local process, a
 * Slurm or PBS job. Each block runs one worker manager per node, which connects back to the agent.
 */

/** States a block's job can be in, across schedulers. */
export const BlockJobState = {
  PENDING: "pending",
  /** Pending and held (by the user, an admin or the scheduler): it will not start on its own. */
  HELD: "held",
  RUNNING: "running",
  COMPLETED: "completed",
  FAILED: "failed",
  CANCELLED: "cancelled",
  /** Killed at its walltime. */
  TIMEOUT: "timeout",
  NODE_FAILURE: "node_failure",
  PREEMPTED: "preempted",
  OUT_OF_MEMORY: "out_of_memory",
  /** The scheduler no longer knows the job (purged from its memory, or never known). */
  MISSING: "missing",
  UNKNOWN: "unknown",
} as const;
export type BlockJobState = (typeof BlockJobState)[keyof typeof BlockJobState];

const endedStates: ReadonlySet<BlockJobState> = new Set([
  "completed",
  "failed",
  "cancelled",
  "timeout",
  "node_failure",
  "preempted",
  "out_of_memory",
  "missing",
]);

/** Whether a job in this state is gone for good. */
export function isJobEnded(state: BlockJobState): boolean {
  return endedStates.has(state);
}

/** What a provider reports about one job. */
export interface BlockJobStatus {
  readonly state: BlockJobState;
  /** Why it is in that state (exit code, signal, scheduler reason such as a pending reason). */
  readonly reason?: string;
  /** The scheduler's own name for the state (`CANCELLED`, `F`, ...), for people. */
  readonly native?: string;
  /** When the job started running, if the scheduler says. */
  readonly startedAtMs?: number;
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
  /** Launches a block; resolves with the provider's job id. Rejects with a FabricError saying why not. */
  submitBlock(launch: BlockLaunch): Promise<string>;
  /**
   * Current state of each job; ids the provider does not know map to MISSING (or UNKNOWN when
   * it cannot tell). Rejects (FabricError) when the scheduler cannot be asked at all.
   */
  status(jobIds: readonly string[]): Promise<Map<string, BlockJobStatus>>;
  /** Ends a job (and resolves once it is gone, as far as the provider can tell). */
  cancel(jobId: string): Promise<void>;
}
