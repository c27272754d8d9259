import * as grpc from "@grpc/grpc-js";

import { ErrorInfo } from "../proto/index.js";
import { ERROR_INFO_METADATA_KEY, FabricError, codeFromGrpcStatus, errorFromInfo } from "./errors.js";
import { MAX_TIMER_SEGMENT_MS } from "./timers.js";

/** Largest message a client accepts from or sends to the broker. */
export const CLIENT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Channel credentials: TLS when the address starts with `https://` or `tls://`, else plaintext. */
export function channelFor(address: string): { target: string; credentials: grpc.ChannelCredentials } {
  const m = /^(https|tls):\/\/(.+)$/.exec(address);
  if (m) return { target: m[2]!, credentials: grpc.credentials.createSsl() };
  return { target: address.replace(/^(http|grpc):\/\//, ""), credentials: grpc.credentials.createInsecure() };
}

/** Client options shared by the SDK and the agent. */
export const clientOptions: grpc.ClientOptions = {
  "grpc.max_receive_message_length": CLIENT_MAX_MESSAGE_BYTES,
  "grpc.max_send_message_length": CLIENT_MAX_MESSAGE_BYTES,
  "grpc.keepalive_time_ms": 30_000,
};

/** Call metadata carrying a bearer token. */
export function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token) md.set("authorization", `Bearer ${token}`);
  return md;
}

/** What grpc-js says when the HTTP/2 connection or stream under a call broke. */
const BROKEN_CONNECTION = /RST_STREAM|Session closed|GOAWAY|ECONNRESET|EPIPE|Stream refused/i;

/** Turns a gRPC error into a {@link FabricError}, decoding the ErrorInfo the broker attaches. */
export function fromGrpcError(err: unknown): FabricError {
  if (err instanceof FabricError) return err;
  const e = err as Partial<grpc.ServiceError>;
  const bin = e.metadata?.get(ERROR_INFO_METADATA_KEY)[0];
  if (bin instanceof Buffer) {
    try {
      return errorFromInfo(ErrorInfo.decode(bin));
    } catch {
      // fall through to the status code
    }
  }
  if (typeof e.code === "number") {
    const details = e.details || e.message || "gRPC call failed";
    if (e.code === grpc.status.INTERNAL && BROKEN_CONNECTION.test(details)) {
      // grpc-js reports a connection that broke under a call as INTERNAL; the broker's own
      // INTERNAL errors always carry ErrorInfo. It is a transport failure: safe to retry what is
      // idempotent, as every UNAVAILABLE is.
      return new FabricError("UNAVAILABLE", `the connection to the broker broke: ${details}`, {
        cause: err,
      });
    }
    return new FabricError(codeFromGrpcStatus(e.code), details, { cause: err });
  }
  return new FabricError("UNKNOWN", err instanceof Error ? err.message : String(err), { cause: err });
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (err: grpc.ServiceError | null, response: Res) => void,
) => grpc.ClientUnaryCall;

/**
 * The longest deadline a call is sent with. A grpc-js server arms a plain setTimeout from the
 * call's grpc-timeout header (whole seconds, rounded up, at this size): past 2^31-1 ms it
 * overflows and ends the call at once with DEADLINE_EXCEEDED. 24.8 days is longer than any call.
 */
const MAX_CALL_DEADLINE_MS = Math.floor(MAX_TIMER_SEGMENT_MS / 1000) * 1000;

/** Calls a unary method and returns a promise; errors arrive as {@link FabricError}. */
export function callUnary<Req, Res>(
  method: UnaryMethod<Req, Res>,
  self: grpc.Client,
  request: Req,
  metadata: grpc.Metadata,
  options: { deadlineMs?: number } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const callOptions: Partial<grpc.CallOptions> = {};
    if (options.deadlineMs !== undefined)
      callOptions.deadline = Date.now() + Math.min(options.deadlineMs, MAX_CALL_DEADLINE_MS);
    method.call(self, request, metadata, callOptions, (err, res) => {
      if (err) reject(fromGrpcError(err));
      else resolve(res);
    });
  });
}
