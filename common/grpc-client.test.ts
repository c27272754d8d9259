import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";

import { ErrorInfo } from "../proto/index.js";
import { ERROR_INFO_METADATA_KEY } from "./errors.js";
import { channelFor, fromGrpcError } from "./grpc-client.js";

function serviceError(code: grpc.status, details: string, metadata = new grpc.Metadata()): grpc.ServiceError {
  return Object.assign(new Error(`${code} ${details}`), { code, details, metadata });
}

describe("fromGrpcError", () => {
  it("calls a connection that broke under a call UNAVAILABLE (retryable), not INTERNAL", () => {
    const err = fromGrpcError(
      serviceError(
        grpc.status.INTERNAL,
        "Received RST_STREAM with code 2 triggered by internal client error: Session closed with error code 2",
      ),
    );
    expect(err.code).toBe("UNAVAILABLE");
    expect(err.message).toMatch(/connection to the broker broke: Received RST_STREAM/);
  });

  it("says in words why the broker cannot be reached, without grpc-js's raw wording", () => {
    const refused = fromGrpcError(
      serviceError(
        grpc.status.UNAVAILABLE,
        "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ",
      ),
    );
    expect(refused.code).toBe("UNAVAILABLE");
    expect(refused.message).toBe(
      "cannot reach the broker: nothing listens there (connection refused) (connect ECONNREFUSED 127.0.0.1:1); check that the broker runs and the address you gave (FABRIC_BROKER, or `fabric configure --broker`)",
    );
    expect(refused.message).not.toMatch(/Resolution note/);
    const dns = fromGrpcError(
      serviceError(grpc.status.UNAVAILABLE, "Name resolution failed for target dns:x.invalid:1"),
    );
    expect(dns.message).toMatch(/^cannot reach the broker: its host name does not resolve/);
  });

  it("keeps the broker's own INTERNAL errors, and other codes, as they are", () => {
    const md = new grpc.Metadata();
    md.set(
      ERROR_INFO_METADATA_KEY,
      Buffer.from(
        ErrorInfo.encode({
          code: "INTERNAL",
          message: "the broker hit a bug",
          reason: "",
          remote: undefined,
          shell: undefined,
        }).finish(),
      ),
    );
    expect(fromGrpcError(serviceError(grpc.status.INTERNAL, "x", md)).code).toBe("INTERNAL");
    expect(fromGrpcError(serviceError(grpc.status.INTERNAL, "some other failure")).code).toBe("INTERNAL");
    expect(fromGrpcError(serviceError(grpc.status.NOT_FOUND, "task t not found")).code).toBe("NOT_FOUND");
  });
});

describe("channelFor", () => {
  it("speaks TLS for grpcs://, https:// and tls://, plaintext otherwise", () => {
    for (const a of ["grpcs://b:443", "https://b:443", "tls://b:443"]) {
      const { target, credentials } = channelFor(a);
      expect(target).toBe("b:443");
      expect(credentials._isSecure()).toBe(true);
    }
    for (const a of ["b:50051", "grpc://b:50051", "http://b:50051"]) {
      const { target, credentials } = channelFor(a);
      expect(target).toBe("b:50051");
      expect(credentials._isSecure()).toBe(false);
    }
  });

  it("refuses TLS files with a plaintext address, half a client certificate, and files that are not PEM", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "fabric-pem-"));
    try {
      const junk = path.join(dir, "junk.pem");
      writeFileSync(junk, "not a certificate\n");
      expect(() => channelFor("b:1", { caFile: junk })).toThrow(/caFile\) are set but .* is plaintext/);
      expect(() => channelFor("grpcs://b:1", { certFile: junk })).toThrow(/both certFile and keyFile/);
      expect(() => channelFor("grpcs://b:1", { caFile: path.join(dir, "none.pem") })).toThrow(
        /caFile: cannot read .*none\.pem/,
      );
      expect(() => channelFor("grpcs://b:1", { caFile: junk })).toThrow(
        /caFile: .*junk\.pem is not a PEM certificate/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
