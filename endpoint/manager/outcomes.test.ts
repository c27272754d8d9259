import { describe, expect, it } from "vitest";

import { FabricError } from "../../common/lean.js";
import {
  lastOutputNote,
  cancelledError,
  cancelledOutcome,
  failedOutcome,
  timeoutError,
  unstartedOutcome,
  workerLostError,
} from "./outcomes.js";

describe("failure outcomes", () => {
  it("a failed outcome carries no result, the error's wire form, and the times and worker given", () => {
    const err = new FabricError("UNAVAILABLE", "engine down", { reason: "worker_lost" });
    const o = failedOutcome("t1", err, { startedAtMs: 10, finishedAtMs: 25, workerId: "m/w0" });
    expect(o).toEqual({
      taskId: "t1",
      ok: false,
      resultJson: Buffer.alloc(0),
      error: {
        code: "UNAVAILABLE",
        message: "engine down",
        reason: "worker_lost",
        remote: undefined,
        shell: undefined,
      },
      startedAtMs: 10,
      finishedAtMs: 25,
      workerId: "m/w0",
    });
  });

  it("a task that never started begins and ends at the same moment", () => {
    const err = new FabricError("FAILED_PRECONDITION", "no such image");
    const o = unstartedOutcome("t2", err, "m/w3", 1_000);
    expect(o).toMatchObject({ startedAtMs: 1_000, finishedAtMs: 1_000, workerId: "m/w3" });
    expect(o.error).toMatchObject({ code: "FAILED_PRECONDITION", message: "no such image" });
  });

  it("a cancelled task names its owner's cancellation and no worker", () => {
    const o = cancelledOutcome("t3", 500);
    expect(o).toMatchObject({ taskId: "t3", ok: false, startedAtMs: 500, finishedAtMs: 500, workerId: "" });
    expect(o.error).toMatchObject({
      code: "CANCELLED",
      reason: "cancelled",
      message: "the task was cancelled by its owner",
    });
    expect(cancelledError().reason).toBe("cancelled");
  });

  it("a timeout says which timeout the task outran", () => {
    const e = timeoutError(30);
    expect(e).toMatchObject({ code: "DEADLINE_EXCEEDED", reason: "timeout" });
    expect(e.message).toBe("the task ran longer than its 30 s timeout and was stopped");
  });

  it("a dead worker is out_of_memory when the memory limit killed it, worker_lost otherwise", () => {
    const oom = workerLostError("worker container", "m/w1", {
      description: "was killed by the memory limit",
      outOfMemory: true,
    });
    expect(oom).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "out_of_memory" });
    expect(oom.message).toBe(
      "the task ran out of memory: the worker container m/w1 was killed by the memory limit",
    );
    const lost = workerLostError("worker process", "m/w2", {
      description: "exited with code 7",
      outOfMemory: false,
    });
    expect(lost).toMatchObject({ code: "UNAVAILABLE", reason: "worker_lost" });
    expect(lost.message).toBe("the worker process m/w2 exited with code 7 while running the task");
    expect(lost.retryable).toBe(true);
  });

  it("a dead worker's message quotes its last output, without a fatal report's list of modules", () => {
    const lastOutput = [
      "Fatal Python error: Segmentation fault",
      "",
      "Current thread 0x00007f (most recent call first):",
      '  File "<fabric function f>", line 3 in main',
      "",
      "ce._multiarray_umath, numpy.linalg._umath_linalg, scipy.special._ufuncs (total: 3)",
    ].join("\n");
    const lost = workerLostError("Python interpreter", "m/w0", {
      description: "crashed (SIGSEGV)",
      outOfMemory: false,
      lastOutput,
    });
    expect(lost.message).toBe(
      "the Python interpreter m/w0 crashed (SIGSEGV) while running the task; its last output: " +
        'Fatal Python error: Segmentation fault\n\nCurrent thread 0x00007f (most recent call first):\n  File "<fabric function f>", line 3 in main',
    );
    expect(
      lastOutputNote({ description: "", outOfMemory: false, lastOutput: "x".repeat(5000) }),
    ).toHaveLength("; its last output: ".length + 1500);
    expect(lastOutputNote({ description: "", outOfMemory: false, lastOutput: " \n" })).toBe("");
  });
});
