import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";

import {
  ERROR_INFO_METADATA_KEY,
  FabricError,
  errorToInfo,
  grpcStatusOf,
  resourceExhausted,
  toFabricError,
  unauthenticated,
} from "../../common/index.js";
import { ErrorInfo, type WatchTasksResponse } from "../../proto/index.js";
import type { Principal, TokenAuthority } from "../auth/tokens.js";
import { RateLimitedError } from "../auth/rate-limit.js";
import type { RequestGuard } from "./request-shapes.js";
import { checkWire } from "./wire-guard.js";

/**
 * A request as it arrived: its bytes, decoded only by {@link openRequest}, after the caller's
 * token was verified. grpc-js would otherwise decode every message on arrival, so an
 * unauthenticated 50 MB request of tiny entries would become millions of objects before anyone
 * asked who sent it.
 */
export class PendingRequest<T = unknown> {
  constructor(
    readonly bytes: Buffer,
    readonly method: string,
    private readonly guard: RequestGuard,
    private readonly decode: (bytes: Buffer) => T,
  ) {}

  /** Checks size and shape on the wire, then decodes; INVALID_ARGUMENT / RESOURCE_EXHAUSTED if bad. */
  open(): T {
    const { bytes, method, guard } = this;
    if (bytes.length > guard.maxBytes) {
      throw resourceExhausted(
        `a ${method} request is ${bytes.length} bytes; this method accepts at most ${guard.maxBytes}`,
      );
    }
    checkWire(bytes, guard.shape, method);
    try {
      return this.decode(bytes);
    } catch (err) {
      throw new FabricError("INVALID_ARGUMENT", `malformed ${method} request: ${(err as Error).message}`);
    }
  }
}

/** The request of a call wrapped by {@link tolerantService}, decoded (see {@link PendingRequest}). */
export function openRequest<T>(request: T): T {
  if (request instanceof PendingRequest) return request.open() as T;
  return request;
}

/**
 * Copies a generated service definition, replacing each request deserializer with one that keeps
 * the bytes for later (a {@link PendingRequest}), checked against the method's guard when the
 * handler opens it. Every method needs a guard.
 */
export function tolerantService<S extends grpc.ServiceDefinition>(
  service: S,
  guards: Readonly<Record<string, RequestGuard>>,
): S {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, def] of Object.entries(service)) {
    const method = def as grpc.MethodDefinition<unknown, unknown>;
    const methodName = method.path.slice(method.path.lastIndexOf("/") + 1);
    const guard = guards[methodName];
    if (!guard) throw new Error(`no request guard for ${method.path}`);
    const decode = (bytes: Buffer) => method.requestDeserialize(bytes);
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => new PendingRequest(bytes, methodName, guard, decode),
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

/** Longest authorization header looked at (an OIDC access token with many claims fits easily). */
export const MAX_TOKEN_CHARS = 16 * 1024;

/** Context handed to every authenticated handler. */
export interface CallContext {
  readonly principal: Principal;
  readonly log: Logger;
}

/** Reads and verifies the bearer token of a call, then admits it under the caller's rate limit. */
export async function authenticate(auth: TokenAuthority, metadata: grpc.Metadata): Promise<Principal> {
  const values = metadata.get("authorization");
  return authenticateBearer(auth, values.length === 0 ? undefined : String(values[0]));
}

/**
 * Verifies an `Authorization` header's value (`Bearer <token>`), then admits the caller under its
 * rate limit: the check of every transport (gRPC metadata, the HTTP API's header).
 */
export async function authenticateBearer(
  auth: TokenAuthority,
  header: string | undefined,
): Promise<Principal> {
  const principal = await verifyBearer(auth, header);
  auth.rateLimiter?.take(
    principal.kind === "user" ? `user:${principal.userId}` : `endpoint:${principal.endpointId}`,
  );
  return principal;
}

async function verifyBearer(auth: TokenAuthority, header: string | undefined): Promise<Principal> {
  if (header === undefined || header === "") {
    throw unauthenticated("no token: pass `authorization: Bearer <token>` (see `fabric configure`)");
  }
  if (header.length > MAX_TOKEN_CHARS) {
    throw unauthenticated(
      `the token is ${header.length} characters; fabric tokens are well under ${MAX_TOKEN_CHARS}: pass the token \`fabric-broker token\` or your identity provider issued`,
    );
  }
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
      return handler(openRequest(call.request), { principal, log });
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

/** The handler of each unary method of the service `S`, under the method's key in `S`. */
export type UnaryHandlers<S> = {
  [K in keyof S as string extends K ? never : K]: S[K] extends grpc.handleUnaryCall<infer Req, infer Res>
    ? (req: Req, ctx: CallContext) => Promise<Res>
    : never;
};

/**
 * A service whose methods are all unary: each handler wrapped by {@link unary} under its gRPC
 * method name, the key with a capital first letter (`getFunction` fails as "GetFunction").
 */
export function unaryService<S extends grpc.UntypedServiceImplementation>(
  auth: TokenAuthority,
  log: Logger,
  handlers: UnaryHandlers<S>,
): S {
  const service: grpc.UntypedServiceImplementation = {};
  for (const [key, handler] of Object.entries(handlers)) {
    const method = key.charAt(0).toUpperCase() + key.slice(1);
    service[key] = unary(auth, log, method, handler as (req: unknown, ctx: CallContext) => Promise<unknown>);
  }
  return service as S;
}

/**
 * Where a watch sends finished tasks: a WatchTasks call, or one watch of a Session stream. `write`
 * returns false when the writer should wait for "drain"; "cancelled" means nobody listens anymore.
 */
export interface WatchSink {
  readonly cancelled: boolean;
  write(msg: WatchTasksResponse): boolean;
  once(event: "drain", listener: () => void): unknown;
  on(event: "cancelled", listener: () => void): unknown;
  off(event: "cancelled", listener: () => void): unknown;
  /** Told once the watch is accepted (its ids checked and what had finished already sent). */
  ready?(): void;
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
      await handler(openRequest(call.request), call, { principal, log });
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
