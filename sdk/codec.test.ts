import { describe, expect, it } from "vitest";

import { FabricError, TaskState } from "../common/client.js";
import type { ErrorInfo, Task } from "../proto/index.js";
import { chunk, encodeTaskSpec, taskOutcome, toEndpointInfo, toFunctionInfo, toTaskInfo } from "./codec.js";
import { TaskFailedError, TaskPendingError } from "./errors.js";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

function task(over: Partial<Task> = {}): Task {
  return {
    id: "t1",
    owner: "alice",
    functionId: "f1",
    endpointId: "e1",
    groupId: "g1",
    state: TaskState.TASK_STATE_RUNNING,
    history: [
      { state: TaskState.TASK_STATE_RECEIVED, atMs: 1_000, actor: "broker/b1", detail: "" },
      { state: TaskState.TASK_STATE_RUNNING, atMs: 2_000, actor: "endpoint/e1", detail: "attempt 1" },
    ],
    result: undefined,
    error: undefined,
    output: undefined,
    createdAtMs: 1_000,
    completedAtMs: 0,
    attempts: 1,
    ...over,
  };
}

/** A FAILED task whose error info has `error`'s fields (UNKNOWN, and empty, elsewhere). */
const failed = (error: Partial<ErrorInfo>): Task =>
  task({
    state: TaskState.TASK_STATE_FAILED,
    error: { code: "UNKNOWN", message: "", reason: "", remote: undefined, shell: undefined, ...error },
  });

describe("encodeTaskSpec", () => {
  it("refuses a timeout past 30 days rather than letting it wrap in the wire's 32 bits", () => {
    const t = { functionId: "f", endpointId: "e", args: [] };
    expect(encodeTaskSpec({ ...t, timeoutSeconds: 30 * 24 * 3600 }).timeoutS).toBe(30 * 24 * 3600);
    expect(() => encodeTaskSpec({ ...t, timeoutSeconds: 2 ** 32 + 5 })).toThrow(
      /timeoutSeconds must be a whole number from 0 to 2592000/,
    );
  });

  it("encodes args as a JSON array and leaves kwargs empty when not given", () => {
    const spec = encodeTaskSpec({ functionId: "f", endpointId: "e", args: [1, "a", { b: null }] });
    expect(text(spec.argsJson)).toBe('[1,"a",{"b":null}]');
    expect(spec.kwargsJson.length).toBe(0);
  });

  it("sends an empty array when there are no args, and kwargs as an object", () => {
    const spec = encodeTaskSpec({ functionId: "f", endpointId: "e", kwargs: { file: "x y" } });
    expect(text(spec.argsJson)).toBe("[]");
    expect(text(spec.kwargsJson)).toBe('{"file":"x y"}');
  });

  it("refuses what is not JSON-shaped, naming the task", () => {
    const bad = (input: unknown, re: RegExp) => {
      expect(() => encodeTaskSpec(input as never, 7)).toThrow(re);
      try {
        encodeTaskSpec(input as never, 7);
      } catch (err) {
        expect((err as FabricError).code).toBe("INVALID_ARGUMENT");
      }
    };
    bad({ functionId: "", endpointId: "e" }, /task 7: functionId/);
    bad({ functionId: "f" }, /task 7: endpointId/);
    bad({ functionId: "f", endpointId: "e", args: "x" }, /args must be an array/);
    bad({ functionId: "f", endpointId: "e", kwargs: [1] }, /kwargs must be a plain object/);
    bad({ functionId: "f", endpointId: "e", kwargs: new Date() }, /kwargs must be a plain object/);
    bad({ functionId: "f", endpointId: "e", args: [1n] }, /task 7 args cannot be encoded as JSON/);
    const cyclic: Record<string, unknown> = {};
    cyclic["self"] = cyclic;
    bad({ functionId: "f", endpointId: "e", args: [cyclic] }, /cannot be encoded as JSON/);
  });
});

describe("chunk", () => {
  it("splits into consecutive chunks", () => {
    expect(chunk([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
    expect(chunk([], 3)).toEqual([]);
    expect(() => chunk([1], 0)).toThrow(FabricError);
  });
});

describe("toTaskInfo", () => {
  it("names states and turns times into dates", () => {
    const info = toTaskInfo(task());
    expect(info.state).toBe("running");
    expect(info.terminal).toBe(false);
    expect(info.history).toEqual([
      { state: "received", at: new Date(1_000), actor: "broker/b1", detail: "" },
      { state: "running", at: new Date(2_000), actor: "endpoint/e1", detail: "attempt 1" },
    ]);
    expect(info.createdAt).toEqual(new Date(1_000));
    expect(info.completedAt).toBeUndefined();
    expect(info.error).toBeUndefined();
  });
});

describe("taskOutcome", () => {
  it("decodes a success's JSON result", () => {
    const o = taskOutcome(
      task({
        state: TaskState.TASK_STATE_SUCCESS,
        result: { json: json({ a: [1, 2] }), objectRef: "", size: 9 },
        completedAtMs: 3_000,
      }),
    );
    expect(o).toMatchObject({ taskId: "t1", state: "success", ok: true, value: { a: [1, 2] } });
    expect(o.task.completedAt).toEqual(new Date(3_000));
  });

  it("a success with an empty result is undefined", () => {
    const o = taskOutcome(
      task({
        state: TaskState.TASK_STATE_SUCCESS,
        result: { json: new Uint8Array(), objectRef: "", size: 0 },
      }),
    );
    expect(o).toMatchObject({ ok: true, value: undefined });
  });

  it("a result left in the object store is an error, not a silent undefined", () => {
    const o = taskOutcome(
      task({
        state: TaskState.TASK_STATE_SUCCESS,
        result: { json: new Uint8Array(), objectRef: "t1.result", size: 5 },
      }),
    );
    expect(o.ok).toBe(false);
    if (!o.ok) expect(o.error.code).toBe("INTERNAL");
  });

  it("a task still running is TaskPendingError with its state", () => {
    const o = taskOutcome(task({ state: TaskState.TASK_STATE_WAITING_FOR_ENDPOINT }));
    expect(o.ok).toBe(false);
    if (o.ok) return;
    expect(o.error).toBeInstanceOf(TaskPendingError);
    expect(o.error.code).toBe("FAILED_PRECONDITION");
    expect((o.error as TaskPendingError).state).toBe("waiting-for-endpoint");
  });

  it("a failed JS function is TaskFailedError with the remote exception", () => {
    const o = taskOutcome(
      failed({
        message: "detector D7 saturated",
        reason: "function_error",
        remote: {
          type: "ExperimentError",
          message: "detector D7 saturated",
          stack: "ExperimentError: ...\n at explode",
        },
      }),
    );
    expect(o.ok).toBe(false);
    if (o.ok) return;
    const err = o.error as TaskFailedError;
    expect(err).toBeInstanceOf(TaskFailedError);
    expect(err).toBeInstanceOf(FabricError);
    expect(err.name).toBe("TaskFailedError");
    expect(err).toMatchObject({ code: "UNKNOWN", reason: "function_error", taskId: "t1", state: "failed" });
    expect(err.remote?.type).toBe("ExperimentError");
    expect(o.task.error?.remote?.stack).toMatch(/explode/);
  });

  it("a failed shell command carries exit code and output", () => {
    const o = taskOutcome(
      failed({
        message: "command exited with code 3",
        reason: "shell_exit_nonzero",
        shell: { exitCode: 3, stdout: "partial\n", stderr: "broken\n", signal: "" },
      }),
    );
    if (o.ok) throw new Error("expected a failure");
    expect(o.error.shell).toEqual({ exitCode: 3, stdout: "partial\n", stderr: "broken\n" });
    expect(o.error.reason).toBe("shell_exit_nonzero");
  });

  it("cancelled and expired tasks without error info still get a meaningful error", () => {
    const c = taskOutcome(task({ state: TaskState.TASK_STATE_CANCELLED }));
    if (c.ok) throw new Error("expected a failure");
    expect(c.error).toMatchObject({ code: "CANCELLED", reason: "cancelled", state: "cancelled" });
    const e = taskOutcome(task({ state: TaskState.TASK_STATE_EXPIRED }));
    if (e.ok) throw new Error("expected a failure");
    expect(e.error).toMatchObject({ code: "DEADLINE_EXCEEDED", reason: "expired" });
  });

  it("an unknown error code from the wire becomes UNKNOWN", () => {
    const o = taskOutcome(failed({ code: "BOGUS", message: "m" }));
    if (o.ok) throw new Error("expected a failure");
    expect(o.error.code).toBe("UNKNOWN");
  });
});

describe("toFunctionInfo / toEndpointInfo", () => {
  it("flattens the function kind", () => {
    expect(
      toFunctionInfo({
        id: "f",
        owner: "o",
        name: "n",
        description: "",
        createdAtMs: 5,
        spec: { kind: { $case: "shell", value: { command: "echo {x}", walltimeS: 30 } }, containerImage: "" },
        public: false,
        sharedWith: [],
      }),
    ).toMatchObject({ kind: "shell", command: "echo {x}", walltimeSeconds: 30, createdAt: new Date(5) });
  });

  it("an endpoint that never connected says so", () => {
    const e = toEndpointInfo(
      {
        id: "e",
        owner: "o",
        name: "n",
        description: "",
        createdAtMs: 1,
        sharedWith: [],
        allowedFunctions: [],
      },
      undefined,
    );
    expect(e.status).toEqual({ connection: "never-connected", queuedTasks: 0, last: undefined });
  });
});
