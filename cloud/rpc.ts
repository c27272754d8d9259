import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";

import {
  ERROR_INFO_METADATA_KEY,
  FabricError,
  errorToInfo,
  grpcStatusOf,
  toFabricError,
  unauthenticated,
} from "../common/errors.js";
import { ErrorInfo } from "../proto/index.js";
import type { Principal, TokenAuthority } from "./auth.js";
import { RateLimitedError } from "./rate-limit.js";

/** A request that could not be decoded; handlers answer it with INVALID_ARGUMENT. */
export class MalformedRequest {
  constructor(readonly reason: string) {}
}

/**
 * Copies a generated service definition, replacing each request deserializer with one that turns
 * undecodable bytes into a {@link MalformedRequest} instead of grpc-js's opaque INTERNAL error.
 */
export function tolerantService<S extends grpc.ServiceDefinition>(service: S): S {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, def] of Object.entries(service)) {
    const method = def as grpc.MethodDefinition<unknown, unknown>;
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes);
        } catch (err) {
          return new MalformedRequest((err as Error).message);
        }
      },
    };
  }
  return out as S;
}

/** Turns a {@link FabricError} into a gRPC error whose metadata carries the full ErrorInfo. */
export function toServiceError(err: FabricError): Partial<grpc.ServiceError> {
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_INFO_METADATA_KEY, Buffer.from(ErrorInfo.encode(errorToInfo(err)).finish()));
  if (err instanceof RateLimitedError) metadata.set("retry-after-ms", String(Math.ceil(err.retryAfterMs)));
  return { code: grpcStatusOf[err.code], details: err.message, metadata };
}

/** Context handed to every authenticated handler. */
export interface CallContext {
  readonly principal: Principal;
  readonly log: Logger;
}

/** Reads and verifies the bearer token of a call, then admits it under the caller's rate limit. */
export async function authenticate(auth: TokenAuthority, metadata: grpc.Metadata): Promise<Principal> {
  const principal = await verifyBearer(auth, metadata);
  auth.rateLimiter?.take(
    principal.kind === "user" ? `user:${principal.userId}` : `endpoint:${principal.endpointId}`,
  );
  return principal;
}

async function verifyBearer(auth: TokenAuthority, metadata: grpc.Metadata): Promise<Principal> {
  const values = metadata.get("authorization");
  if (values.length === 0) {
    throw unauthenticated("no token: pass `authorization: Bearer <token>` (see `fabric configure`)");
  }
  const header = String(values[0]);
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  if (!m) throw unauthenticated("the authorization header must be `Bearer <token>`");
  return auth.verify(m[1]!);
}

/** Logs a failed call: server faults as errors, the caller's mistakes at debug level. */
export function logFailure(log: Logger, method: string, err: FabricError): void {
  if (err.code === "INTERNAL" || err.code === "UNKNOWN" || err.code === "DATA_LOSS") {
    log.error({ err, method }, "call failed");
  } else {
    log.debug({ method, code: err.code, msg: err.message }, "call rejected");
  }
}

/** Wraps a unary handler: decode check, authentication, error mapping. Never throws into grpc-js. */
export function unary<Req, Res>(
  auth: TokenAuthority,
  log: Logger,
  method: string,
  handler: (req: Req, ctx: CallContext) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const run = async (): Promise<Res> => {
      const principal = await authenticate(auth, call.metadata);
      if (call.request instanceof MalformedRequest) {
        throw new FabricError("INVALID_ARGUMENT", `malformed ${method} request: ${call.request.reason}`);
      }
      return handler(call.request, { principal, log });
    };
    run().then(
      (res) => callback(null, res),
      (err: unknown) => {
        const fe = toFabricError(err);
        logFailure(log, method, fe);
        callback(toServiceError(fe));
      },
    );
  };
}

/** Wraps a server-streaming handler the same way. */
export function serverStream<Req, Res>(
  auth: TokenAuthority,
  log: Logger,
  method: string,
  handler: (req: Req, call: grpc.ServerWritableStream<Req, Res>, ctx: CallContext) => Promise<void>,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    const run = async (): Promise<void> => {
      const principal = await authenticate(auth, call.metadata);
      if (call.request instanceof MalformedRequest) {
        throw new FabricError("INVALID_ARGUMENT", `malformed ${method} request: ${call.request.reason}`);
      }
      await handler(call.request, call, { principal, log });
    };
    run().then(
      () => call.end(),
      (err: unknown) => {
        const fe = toFabricError(err);
        logFailure(log, method, fe);
        if (!call.cancelled) call.emit("error", toServiceError(fe));
      },
    );
  };
}

/** The calling user (endpoint credentials act for their owner where an owner is needed). */
export function userOf(ctx: CallContext): string {
  if (ctx.principal.kind === "user") return ctx.principal.userId;
  throw new FabricError("PERMISSION_DENIED", "endpoint credentials cannot make user calls; use a user token");
}
