import { expect } from "vitest";

import { FabricError, fromGrpcError } from "../../common/index.js";
import { TaskFailedError } from "../../sdk/index.js";

/**
 * The {@link TaskFailedError} that `result` (a task's result, as the SDK waits for it) rejects
 * with; the test fails if it resolves instead or rejects with anything else.
 */
export async function failureOf(result: Promise<unknown>): Promise<TaskFailedError> {
  const err = await result.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TaskFailedError);
  return err as TaskFailedError;
}

/** How a call ended, as a caller sees it: "OK", or the code and message of the error it threw. */
export interface CallOutcome {
  readonly code: string;
  readonly message: string;
  /** What it threw, as thrown (a gRPC error, a {@link FabricError}); undefined when it succeeded. */
  readonly err: unknown;
}

/** Awaits a call and says how it ended; a gRPC error is read as the {@link FabricError} it stands for. */
export async function outcomeOf(call: Promise<unknown>): Promise<CallOutcome> {
  try {
    await call;
  } catch (err) {
    const fe = err instanceof FabricError ? err : fromGrpcError(err);
    return { code: fe.code, message: fe.message, err };
  }
  return { code: "OK", message: "", err: undefined };
}

/** The code a call ended with ("OK" when it succeeded). */
export async function codeOf(call: Promise<unknown>): Promise<string> {
  return (await outcomeOf(call)).code;
}
