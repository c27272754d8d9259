import { describe, expect, it } from "vitest";

import { ErrorCode, isRetryable } from "./errors.js";

describe("retryable errors", () => {
  it("retries what a broker going away ends calls with, and a rate limit; not answers", () => {
    const retried = Object.values(ErrorCode).filter((code) => isRetryable({ code }));
    expect(retried.sort()).toEqual([
      "ABORTED",
      "CANCELLED",
      "DEADLINE_EXCEEDED",
      "INTERNAL",
      "UNAVAILABLE",
      "UNKNOWN",
    ]);
    expect(isRetryable({ code: "RESOURCE_EXHAUSTED", reason: "rate_limited" })).toBe(true);
    expect(isRetryable({ code: "RESOURCE_EXHAUSTED", reason: "result_too_large" })).toBe(false);
  });
});
