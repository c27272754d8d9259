import { describe, expect, it } from "vitest";

import { MAX_SOURCE_BYTES } from "./request-shapes.js";
import { check, functionSpecSchema } from "./validate.js";

const python = (value: Record<string, unknown>) => ({
  kind: {
    $case: "python",
    value: { source: "def f():\n    return 1\n", entryPoint: "f", minVersion: "", ...value },
  },
  containerImage: "",
});
const refused = (spec: unknown) => () => check(functionSpecSchema, spec, "spec");

describe("a Python function spec", () => {
  it("accepts a module, a dotted entry point and a version", () => {
    expect(() =>
      check(functionSpecSchema, python({ entryPoint: "Model.predict", minVersion: "3.11.4" }), "spec"),
    ).not.toThrow();
  });

  it("refuses an empty or oversized source, a bad entry point, a bad version, naming each", () => {
    expect(refused(python({ source: "" }))).toThrow(/needs its source/);
    expect(refused(python({ source: "x".repeat(MAX_SOURCE_BYTES + 1) }))).toThrow(/at most 768 KiB/);
    expect(refused(python({ entryPoint: "f; import os" }))).toThrow(/Python name or a dotted path/);
    expect(refused(python({ entryPoint: "a..b" }))).toThrow(/Python name or a dotted path/);
    expect(refused(python({ minVersion: "3.x" }))).toThrow(/min version/);
    expect(refused(python({ minVersion: "99999.1" }))).toThrow(/min version/);
  });
});
