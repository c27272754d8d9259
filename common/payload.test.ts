import { describe, expect, it } from "vitest";

import { isRetryable } from "./errors.js";
import {
  fitsInline,
  inlineBytes,
  inlineLimitFor,
  inlinePayload,
  isStored,
  storedPayload,
} from "./payload.js";

describe("the payload rule", () => {
  it("keeps a payload inline up to the limit and the room left, and stores it past either", () => {
    expect(fitsInline(100, 256)).toBe(true);
    expect(fitsInline(256, 256)).toBe(true);
    expect(fitsInline(257, 256)).toBe(false);
    expect(fitsInline(200, 256, 199)).toBe(false);
    expect(fitsInline(0, 256, 0)).toBe(true);
  });

  it("lowers the inline limit to the server's message size, never below 1 KiB", () => {
    expect(inlineLimitFor(262_144, 1_048_576, 65_536)).toBe(262_144);
    expect(inlineLimitFor(262_144, 131_072, 65_536)).toBe(65_536);
    expect(inlineLimitFor(262_144, 32_768, 65_536)).toBe(1024);
  });

  it("builds inline and stored payloads, and copies inline bytes out", () => {
    const json = new TextEncoder().encode("[1,2]");
    expect(inlinePayload(json)).toEqual({ json, objectRef: "", size: 5 });
    const stored = storedPayload("results.t1", 1_000_000);
    expect(stored).toEqual({ json: new Uint8Array(0), objectRef: "results.t1", size: 1_000_000 });
    expect(isStored(stored)).toBe(true);
    expect(isStored(inlinePayload(json))).toBe(false);
    expect(isStored(undefined)).toBe(false);
    const copy = inlineBytes(inlinePayload(json));
    expect(copy.toString()).toBe("[1,2]");
    json[0] = 0;
    expect(copy.toString()).toBe("[1,2]");
    expect(inlineBytes(undefined).length).toBe(0);
  });
});

describe("retryable errors", () => {
  it("retries what a broker going away ends calls with, and a rate limit; not answers", () => {
    for (const code of [
      "UNAVAILABLE",
      "DEADLINE_EXCEEDED",
      "ABORTED",
      "CANCELLED",
      "INTERNAL",
      "UNKNOWN",
    ] as const) {
      expect(isRetryable({ code }), code).toBe(true);
    }
    expect(isRetryable({ code: "RESOURCE_EXHAUSTED", reason: "rate_limited" })).toBe(true);
    expect(isRetryable({ code: "RESOURCE_EXHAUSTED", reason: "result_too_large" })).toBe(false);
    for (const code of ["NOT_FOUND", "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED"] as const) {
      expect(isRetryable({ code }), code).toBe(false);
    }
  });
});
