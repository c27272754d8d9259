import { describe, expect, it } from "vitest";

import { FabricError } from "../common/client.js";
import * as fmt from "./cli-format.js";
import { TaskFailedError } from "./errors.js";
import type { EndpointInfo, FunctionInfo, TaskInfo, TaskOutcome } from "./types.js";

const at = new Date("2026-11-22T04:00:00.000Z");
/** What every record alice registered has in common. */
const byAlice = { owner: "alice", description: "", createdAt: at };

const info: TaskInfo = {
  id: "t1",
  functionId: "f1",
  endpointId: "e1",
  groupId: "g1",
  state: "failed",
  terminal: true,
  history: [
    { state: "received", at, actor: "broker/b1", detail: "" },
    { state: "failed", at, actor: "endpoint/e1", detail: "shell_exit_nonzero" },
  ],
  attempts: 1,
  createdAt: at,
  completedAt: at,
  error: {
    code: "UNKNOWN",
    message: "command exited with code 3",
    reason: "shell_exit_nonzero",
    shell: { exitCode: 3, stdout: "partial\n", stderr: "broken\n" },
  },
  output: undefined,
};

describe("task output", () => {
  it("status shows the fields, the failure and the history", () => {
    const text = fmt.formatTaskStatus(info);
    expect(text).toMatch(/│ state +│ failed/);
    expect(text).toMatch(/UNKNOWN: command exited with code 3/);
    expect(text).toMatch(/│ exit code +│ 3/);
    expect(text).toMatch(/│ STATE +│ AT +│ ACTOR +│ DETAIL/);
    expect(text).toMatch(/│ received +│ 2026-11-22T04:00:00.000Z │ broker\/b1/);
    // No colour codes: output goes to files and logs.
    expect(text.includes(String.fromCharCode(27))).toBe(false);
  });

  it("--json keeps dates as ISO strings", () => {
    const parsed = JSON.parse(fmt.toJson(info)) as { createdAt: string; history: { at: string }[] };
    expect(parsed.createdAt).toBe("2026-11-22T04:00:00.000Z");
    expect(parsed.history[0]!.at).toBe("2026-11-22T04:00:00.000Z");
  });

  it("a watch line per outcome: value or error", () => {
    const ok: TaskOutcome = { taskId: "t1", state: "success", ok: true, value: { a: 1 }, task: info };
    expect(fmt.formatOutcomeLine(ok)).toBe('t1  success  {"a":1}');
    const err = new TaskFailedError("t2", "failed", "UNKNOWN", "boom\nsecond line", {
      reason: "function_error",
    });
    const bad: TaskOutcome = { taskId: "t2", state: "failed", ok: false, error: err, task: info };
    expect(fmt.formatOutcomeLine(bad)).toBe("t2  failed  UNKNOWN: boom second line");
    expect(fmt.outcomeToJson(bad)).toEqual({
      taskId: "t2",
      state: "failed",
      ok: false,
      error: { code: "UNKNOWN", message: "boom\nsecond line", reason: "function_error" },
    });
  });

  it("long values are clipped to one line", () => {
    const ok: TaskOutcome = { taskId: "t", state: "success", ok: true, value: "x".repeat(500), task: info };
    const line = fmt.formatOutcomeLine(ok);
    expect(line.length).toBeLessThan(140);
    expect(line.endsWith("…")).toBe(true);
  });

  it("results print as JSON, undefined as null", () => {
    expect(fmt.formatValue({ a: [1] })).toBe('{\n  "a": [\n    1\n  ]\n}');
    expect(fmt.formatValue(undefined)).toBe("null");
    expect(fmt.formatValue("s")).toBe('"s"');
  });

  it("errors serialize with their fields", () => {
    expect(fmt.errorToJson(new FabricError("NOT_FOUND", "nope"))).toEqual({
      code: "NOT_FOUND",
      message: "nope",
    });
    expect(fmt.errorToJson(new Error("x"))).toEqual({ code: "INTERNAL", message: "x" });
  });
});

describe("function output", () => {
  const js: FunctionInfo = {
    ...byAlice,
    id: "f1",
    name: "add",
    containerImage: "",
    kind: "js",
    source: "const add = (function add(a, b) { return a + b; }\n);\n",
    entryPoint: "add",
  };
  const sh: FunctionInfo = {
    ...js,
    id: "f2",
    name: "gz",
    kind: "shell",
    command: "gzip {file}",
    walltimeSeconds: 60,
    containerImage: "alpine",
  };

  it("lists functions in a table", () => {
    const text = fmt.formatFunctions([js, sh]);
    expect(text).toMatch(/│ ID +│ NAME +│ KIND +│ IMAGE +│ CREATED/);
    expect(text).toMatch(/│ f1 +│ add +│ js +│ \(default\)/);
    expect(text).toMatch(/│ f2 +│ gz +│ shell +│ alpine/);
    expect(fmt.formatFunctions([])).toBe("no functions registered");
  });

  it("shows a JS function's source and a shell function's command", () => {
    expect(fmt.formatFunction(js)).toMatch(/entry point +│ add[\s\S]*const add = \(function add/);
    expect(fmt.formatFunction(sh)).toMatch(/command +│ gzip \{file\}/);
    expect(fmt.formatFunction(sh)).toMatch(/walltime +│ 60 s/);
  });
});

describe("endpoint output", () => {
  const ep: EndpointInfo = {
    ...byAlice,
    id: "e1",
    name: "hpc",
    status: {
      connection: "online",
      queuedTasks: 3,
      last: {
        at,
        state: "online",
        hostname: "login1",
        agentVersion: "0.1.0",
        provider: "local",
        outstandingTasks: 5,
        runningTasks: 2,
        managers: 1,
        workers: 2,
        idleWorkers: 0,
        blocks: [{ blockId: "b0", jobId: "123", state: "running", since: at, reason: "" }],
        lastError: "",
        heartbeatIntervalS: 5,
        startedAt: at,
        python: {
          version: "3.11.2",
          executable: "/usr/bin/python3",
          implementation: "cpython",
          problem: "",
          modules: ["json", "numpy"],
        },
      },
    },
  };

  it("lists endpoints with their connection", () => {
    const text = fmt.formatEndpoints([
      ep,
      {
        ...ep,
        id: "e2",
        name: "new",
        status: { connection: "never-connected", queuedTasks: 0, last: undefined },
      },
    ]);
    expect(text).toMatch(/│ e1 +│ hpc +│ online +│ 3 +│ 2 +│ 2 \(0\)/);
    expect(text).toMatch(/│ e2 +│ new +│ never-connected +│ 0 +│ - +│ - +│ -/);
  });

  it("shows one endpoint's status and blocks", () => {
    const text = fmt.formatEndpoint(ep);
    expect(text).toMatch(/│ connection +│ online/);
    expect(text).toMatch(/│ host +│ login1/);
    expect(text).toMatch(/│ BLOCK +│ JOB/);
    expect(text).toMatch(/│ b0 +│ 123 +│ running/);
  });
});
