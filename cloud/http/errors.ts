/**
 * Errors of the HTTP API: every failure answers JSON `{code, message, details}` with the HTTP
 * status of its code, the same codes the gRPC API uses. Pure.
 */
import type { ErrorCode, FabricError } from "../../common/index.js";

/** The HTTP status of each error code. */
export const HTTP_STATUS_OF: Readonly<Record<ErrorCode, number>> = {
  CANCELLED: 499,
  UNKNOWN: 500,
  INVALID_ARGUMENT: 400,
  DEADLINE_EXCEEDED: 504,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  PERMISSION_DENIED: 403,
  RESOURCE_EXHAUSTED: 429,
  FAILED_PRECONDITION: 412,
  ABORTED: 409,
  OUT_OF_RANGE: 400,
  UNIMPLEMENTED: 501,
  INTERNAL: 500,
  UNAVAILABLE: 503,
  DATA_LOSS: 500,
  UNAUTHENTICATED: 401,
  FUNCTION_FAILED: 422,
};

/** The body of an error answer. */
export interface HttpErrorBody {
  readonly code: ErrorCode;
  readonly message: string;
  readonly details: { readonly reason?: string };
}

/** The status and body a FabricError answers with. */
export function httpErrorOf(err: FabricError): { status: number; body: HttpErrorBody } {
  return {
    status: HTTP_STATUS_OF[err.code],
    body: { code: err.code, message: err.message, details: err.reason ? { reason: err.reason } : {} },
  };
}
