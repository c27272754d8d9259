import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";

import * as grpc from "@grpc/grpc-js";

import { ErrorInfo } from "../proto/index.js";
import { ERROR_INFO_METADATA_KEY, FabricError, codeFromGrpcStatus, errorFromInfo } from "./errors.js";
import { MAX_TIMER_SEGMENT_MS } from "./timers.js";

/** Largest message a client accepts from or sends to the broker. */
export const CLIENT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * TLS files a client uses towards the broker (SDK, CLIs, endpoint agent). All optional: without
 * `caFile` the broker's certificate is verified against Node's trusted roots; `certFile` and
 * `keyFile` (together) present a client certificate to a broker that asks for one (mTLS).
 */
export interface ClientTlsFiles {
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
}

const TLS_SCHEME = /^(grpcs|https|tls):\/\/(.+)$/;
const PLAIN_SCHEME = /^(grpc|http):\/\//;

/** Whether a broker address asks for TLS (`grpcs://`, `https://` or `tls://`). */
export function isTlsAddress(address: string): boolean {
  return TLS_SCHEME.test(address);
}

/**
 * The gRPC target and channel credentials for a broker address: TLS when it starts with
 * `grpcs://`, `https://` or `tls://` (verified against `tls.caFile`, else Node's trusted roots;
 * with a client certificate when given), plaintext for `host:port`, `grpc://` or `http://`.
 * TLS files with a plaintext address are INVALID_ARGUMENT: they say TLS was meant, and the call
 * would otherwise go out in clear. An unreadable or non-PEM file is FAILED_PRECONDITION naming it.
 */
export function channelFor(
  address: string,
  tls: ClientTlsFiles = {},
): { target: string; credentials: grpc.ChannelCredentials } {
  const m = TLS_SCHEME.exec(address);
  if (!m) {
    const given = (["caFile", "certFile", "keyFile"] as const).filter((k) => tls[k]);
    if (given.length > 0) {
      throw new FabricError(
        "INVALID_ARGUMENT",
        `TLS files (${given.join(", ")}) are set but the broker address ${address} is plaintext: write it grpcs://HOST:PORT`,
      );
    }
    return { target: address.replace(PLAIN_SCHEME, ""), credentials: grpc.credentials.createInsecure() };
  }
  if (Boolean(tls.certFile) !== Boolean(tls.keyFile)) {
    throw new FabricError("INVALID_ARGUMENT", "a client certificate needs both certFile and keyFile");
  }
  const ca = tls.caFile ? readPem("caFile", tls.caFile, "certificate") : null;
  const key = tls.keyFile ? readPem("keyFile", tls.keyFile, "key") : null;
  const cert = tls.certFile ? readPem("certFile", tls.certFile, "certificate") : null;
  return { target: m[2]!, credentials: grpc.credentials.createSsl(ca, key, cert) };
}

/** Reads a PEM file and checks it holds what it should, so a wrong path fails here, not at connect. */
export function readPem(field: string, file: string, kind: "certificate" | "key"): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(file);
  } catch (err) {
    throw new FabricError("FAILED_PRECONDITION", `${field}: cannot read ${file}: ${(err as Error).message}`);
  }
  try {
    if (kind === "certificate") new X509Certificate(pem);
    else createPrivateKey(pem);
  } catch (err) {
    throw new FabricError(
      "FAILED_PRECONDITION",
      `${field}: ${file} is not a PEM ${kind === "key" ? "private key" : "certificate"}: ${(err as Error).message}`,
    );
  }
  return pem;
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

/** What grpc-js says when the TLS handshake with the broker failed. */
const TLS_FAILURE = /certificate|self[- ]signed|SSL|TLS|wrong version number|handshake/i;

/** What grpc-js says when the HTTP/2 connection or stream under a call broke. */
const BROKEN_CONNECTION = /RST_STREAM|Session closed|GOAWAY|ECONNRESET|EPIPE|Stream refused/i;

/**
 * grpc-js's "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1.
 * Resolution note: " in words: what failed, and what to check.
 */
function connectFailure(details: string): string {
  const last =
    /Last error: (?:Error: )?(.*?)\.?\s*(?:Resolution note:.*)?$/s.exec(details)?.[1]?.trim() ?? details;
  const what = /ECONNREFUSED/.test(last)
    ? "nothing listens there (connection refused)"
    : /ENOTFOUND|EAI_AGAIN|Name resolution failed/.test(last)
      ? "its host name does not resolve"
      : /ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/.test(last)
        ? "no route to it, or a firewall drops the connection"
        : "the connection failed";
  return `${what} (${last}); check that the broker runs and the address you gave (FABRIC_BROKER, or \`fabric configure --broker\`)`;
}

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
    if (e.code === grpc.status.UNAVAILABLE && TLS_FAILURE.test(details)) {
      // Retrying will not help: the CA the client trusts, or the scheme of the address, is wrong.
      return new FabricError(
        "UNAVAILABLE",
        `no TLS connection to the broker (check its address scheme and the CA file you trust): ${details}`,
        { cause: err },
      );
    }
    if (
      e.code === grpc.status.UNAVAILABLE &&
      /No connection established|Name resolution failed|failed to connect|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ETIMEDOUT/i.test(
        details,
      )
    ) {
      return new FabricError("UNAVAILABLE", `cannot reach the broker: ${connectFailure(details)}`, {
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
