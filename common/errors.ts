import type { ErrorInfo } from "../proto/messages.js";

/**
 * The closed set of error codes, aligned with gRPC status names. Every error the system raises,
 * whether in broker validation or in a function on a compute node, carries one of them.
 */
export const ErrorCode = {
  CANCELLED: "CANCELLED",
  UNKNOWN: "UNKNOWN",
  INVALID_ARGUMENT: "INVALID_ARGUMENT",
  DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
  NOT_FOUND: "NOT_FOUND",
  ALREADY_EXISTS: "ALREADY_EXISTS",
  PERMISSION_DENIED: "PERMISSION_DENIED",
  RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
  FAILED_PRECONDITION: "FAILED_PRECONDITION",
  ABORTED: "ABORTED",
  OUT_OF_RANGE: "OUT_OF_RANGE",
  UNIMPLEMENTED: "UNIMPLEMENTED",
  INTERNAL: "INTERNAL",
  UNAVAILABLE: "UNAVAILABLE",
  DATA_LOSS: "DATA_LOSS",
  UNAUTHENTICATED: "UNAUTHENTICATED",
  /**
   * The task's own code failed: the function raised, a command exited non-zero, Python's
   * `sys.exit`. Only a task outcome carries it (its `reason` says which), never a failed call.
   */
  FUNCTION_FAILED: "FUNCTION_FAILED",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** gRPC numeric status for each code. */
export const grpcStatusOf: Readonly<Record<ErrorCode, number>> = {
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
  // Not a call's status: should one ever travel as one, it is gRPC's UNKNOWN.
  FUNCTION_FAILED: 2,
};

const codeOfGrpcStatus = new Map<number, ErrorCode>(
  Object.entries(grpcStatusOf)
    .filter(([code]) => code !== "FUNCTION_FAILED")
    .map(([code, n]) => [n, code as ErrorCode]),
);

/** Why a task failed: a closed set, shown to users and recorded in the task's history. */
export const FailureReason = {
  FUNCTION_ERROR: "function_error",
  SHELL_EXIT_NONZERO: "shell_exit_nonzero",
  WALLTIME: "walltime",
  TIMEOUT: "timeout",
  WORKER_LOST: "worker_lost",
  OUT_OF_MEMORY: "out_of_memory",
  CANCELLED: "cancelled",
  RESULT_TOO_LARGE: "result_too_large",
  INVALID_TASK: "invalid_task",
  NO_CAPACITY: "no_capacity",
  ENDPOINT_DELETED: "endpoint_deleted",
  EXPIRED: "expired",
} as const;
export type FailureReason = (typeof FailureReason)[keyof typeof FailureReason];

/** The exception a function raised on the compute side. */
export interface RemoteExceptionInfo {
  readonly type: string;
  readonly message: string;
  readonly stack: string;
}

/** The outcome of a shell function. */
export interface ShellOutcome {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly signal?: string;
}

/**
 * Codes that mean "not now" rather than "no": the broker, or the connection or stream to it, was
 * away, restarting or overloaded, so the same idempotent call may succeed later. grpc-js reports
 * a server going away under a call as CANCELLED, INTERNAL or UNKNOWN as well as UNAVAILABLE.
 * Every other code (NOT_FOUND, INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, ...) is the
 * answer. RESOURCE_EXHAUSTED is retryable only as a rate limit: a payload over a limit stays so.
 */
const retryableCodes: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "UNAVAILABLE",
  "DEADLINE_EXCEEDED",
  "ABORTED",
  "CANCELLED",
  "INTERNAL",
  "UNKNOWN",
]);

/** Whether trying the same (idempotent) call again later may succeed: the one rule, for every caller. */
export function isRetryable(err: { readonly code: ErrorCode; readonly reason?: string }): boolean {
  return retryableCodes.has(err.code) || (err.code === "RESOURCE_EXHAUSTED" && err.reason === "rate_limited");
}

/**
 * The one error type of the fabric. `code` is from {@link ErrorCode}; `message` says what went wrong
 * and what to do; a failed task also carries its `reason`, and the remote exception or shell outcome.
 */
export class FabricError extends Error {
  override readonly name: string = "FabricError";
  readonly code: ErrorCode;
  readonly reason: string;
  readonly remote: RemoteExceptionInfo | undefined;
  readonly shell: ShellOutcome | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: {
      cause?: unknown;
      reason?: string;
      remote?: RemoteExceptionInfo;
      shell?: ShellOutcome;
    } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.reason = options.reason ?? "";
    this.remote = options.remote;
    this.shell = options.shell;
  }

  /** Whether trying the same call again later may succeed. */
  get retryable(): boolean {
    return isRetryable(this);
  }
}

/** Shorthands for the errors raised most often. */
export const invalidArgument = (message: string) => new FabricError("INVALID_ARGUMENT", message);
export const notFound = (message: string) => new FabricError("NOT_FOUND", message);
export const unauthenticated = (message: string) => new FabricError("UNAUTHENTICATED", message);
export const permissionDenied = (message: string) => new FabricError("PERMISSION_DENIED", message);
export const resourceExhausted = (message: string) => new FabricError("RESOURCE_EXHAUSTED", message);

export function isErrorCode(value: string): value is ErrorCode {
  return Object.hasOwn(ErrorCode, value);
}

/**
 * NATS client errors (by name, so this module needs no NATS import) that mean the bus is briefly
 * out of reach: a server restarting, a cluster electing a leader, a connection being re-made.
 */
const NATS_UNAVAILABLE_ERRORS = new Set([
  "TimeoutError",
  "NoResponders",
  "RequestError",
  "ConnectionError",
  "ClosedConnectionError",
  "DrainingConnectionError",
  "JetStreamNotEnabled",
]);

/**
 * Turns anything thrown into a {@link FabricError}. NATS being briefly out of reach becomes
 * UNAVAILABLE (callers retry that, with the same idempotency key); other unknown errors INTERNAL.
 */
export function toFabricError(err: unknown): FabricError {
  if (err instanceof FabricError) return err;
  if (err instanceof Error && NATS_UNAVAILABLE_ERRORS.has(err.name))
    return new FabricError("UNAVAILABLE", `the message bus is unavailable: ${err.message}`, { cause: err });
  if (err instanceof Error) return new FabricError("INTERNAL", err.message, { cause: err });
  return new FabricError("INTERNAL", String(err));
}

/** The wire form of an error (proto ErrorInfo). */
export function errorToInfo(err: FabricError): ErrorInfo {
  return {
    code: err.code,
    message: err.message,
    reason: err.reason,
    remote: err.remote ? { ...err.remote } : undefined,
    shell: err.shell
      ? {
          exitCode: err.shell.exitCode,
          stdout: err.shell.stdout,
          stderr: err.shell.stderr,
          signal: err.shell.signal ?? "",
        }
      : undefined,
  };
}

/** Rebuilds a {@link FabricError} from its wire form. */
export function errorFromInfo(info: ErrorInfo): FabricError {
  const code = isErrorCode(info.code) ? info.code : "UNKNOWN";
  return new FabricError(code, info.message, {
    reason: info.reason || undefined,
    remote: info.remote
      ? { type: info.remote.type, message: info.remote.message, stack: info.remote.stack }
      : undefined,
    shell: info.shell
      ? {
          exitCode: info.shell.exitCode,
          stdout: info.shell.stdout,
          stderr: info.shell.stderr,
          ...(info.shell.signal ? { signal: info.shell.signal } : {}),
        }
      : undefined,
  });
}

/** Metadata key that carries the encoded ErrorInfo on gRPC errors. */
export const ERROR_INFO_METADATA_KEY = "fabric-error-info-bin";

/** gRPC status number → code (unknown numbers become UNKNOWN). */
export function codeFromGrpcStatus(status: number): ErrorCode {
  return codeOfGrpcStatus.get(status) ?? "UNKNOWN";
}
