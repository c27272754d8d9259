/**
 * The outcomes a manager reports for tasks its workers could not finish: cancelled, never
 * started, stopped at their timeout, or lost with their worker. Pure: every time is an argument.
 */
import { errorToInfo, FabricError } from "../../common/lean.js";
import type { WorkOutcome } from "../../proto/index.js";
import type { WorkerExit } from "../runtime/launcher.js";

/** When a failed task ran and on which worker ("" when it never reached one). */
export interface OutcomeTimes {
  readonly startedAtMs: number;
  readonly finishedAtMs: number;
  readonly workerId: string;
}

/** A task that ended without a result, for the reason `error` says. */
export function failedOutcome(taskId: string, error: FabricError, times: OutcomeTimes): WorkOutcome {
  return {
    taskId,
    ok: false,
    resultJson: Buffer.alloc(0),
    error: errorToInfo(error),
    startedAtMs: times.startedAtMs,
    finishedAtMs: times.finishedAtMs,
    workerId: times.workerId,
    output: undefined,
  };
}

/** A task that ended at `atMs` before it ran (cancelled while queued, or its worker could not start). */
export function unstartedOutcome(
  taskId: string,
  error: FabricError,
  workerId: string,
  atMs: number,
): WorkOutcome {
  return failedOutcome(taskId, error, { startedAtMs: atMs, finishedAtMs: atMs, workerId });
}

/** A task cancelled by its owner before a worker started it. */
export function cancelledOutcome(taskId: string, atMs: number): WorkOutcome {
  return unstartedOutcome(taskId, cancelledError(), "", atMs);
}

/** Why a task its owner cancelled ended. */
export function cancelledError(): FabricError {
  return new FabricError("CANCELLED", "the task was cancelled by its owner", { reason: "cancelled" });
}

/** Why a task that outran its timeout ended. */
export function timeoutError(timeoutS: number): FabricError {
  return new FabricError(
    "DEADLINE_EXCEEDED",
    `the task ran longer than its ${timeoutS} s timeout and was stopped`,
    { reason: "timeout" },
  );
}

/**
 * Why a task ended when its worker did: out of memory (RESOURCE_EXHAUSTED) when the memory limit
 * killed it, else `worker_lost` (UNAVAILABLE, which a retry policy may run again).
 * @param noun what the worker is, for people ("worker process", "worker container")
 */
export function workerLostError(noun: string, workerId: string, exit: WorkerExit): FabricError {
  return exit.outOfMemory
    ? new FabricError(
        "RESOURCE_EXHAUSTED",
        `the task ran out of memory: the ${noun} ${workerId} ${exit.description}${lastOutputNote(exit)}`,
        { reason: "out_of_memory" },
      )
    : new FabricError(
        "UNAVAILABLE",
        `the ${noun} ${workerId} ${exit.description} while running the task${lastOutputNote(exit)}`,
        { reason: "worker_lost" },
      );
}

/** Most characters of a worker's last output quoted in a message. */
const LAST_OUTPUT_CHARS = 1500;

/** "; its last output: …" when the launcher kept what the worker last wrote, else "". */
export function lastOutputNote(exit: WorkerExit): string {
  // A fatal signal's report ends with the list of every extension module loaded: noise that
  // would push the report itself out of the quote.
  // (Its end, "… (total: N)", is all that may be left of that line in a tail.)
  const tail = exit.lastOutput?.replace(/^(?:Extension modules: )?[^\n]*\(total: \d+\)$/m, "").trim();
  return tail ? `; its last output: ${tail.slice(-LAST_OUTPUT_CHARS)}` : "";
}
