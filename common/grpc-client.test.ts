import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";

import { ErrorInfo } from "../proto/index.js";
import { ERROR_INFO_METADATA_KEY } from "./errors.js";
import { fromGrpcError } from "./grpc-client.js";

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
