import { describe, expect, it } from "vitest";

import { FabricError, inlinePayload, storedPayload } from "../../common/index.js";
import { TaskState } from "../../proto/index.js";
import type { ErrorInfo } from "../../proto/index.js";
import * as updates from "./task-updates.js";

const head = { taskId: "t1", attempt: 2, atMs: 1234, actor: "manager/m1" };

const workerError = (over: Partial<ErrorInfo> = {}): ErrorInfo => ({
  code: "UNKNOWN",
  message: "boom",
  reason: "function_error",
  remote: undefined,
  shell: undefined,
  ...over,
});

describe("task updates", () => {
  it("a started task is RUNNING, with its block and worker in the detail", () => {
    expect(updates.startedUpdate(head, "block b1, worker w1")).toEqual({
      taskId: "t1",
      state: TaskState.TASK_STATE_RUNNING,
      atMs: 1234,
      actor: "manager/m1",
      detail: "block b1, worker w1",
      result: undefined,
      error: undefined,
      attempt: 2,
      startedAtMs: 0,
      startedBy: "",
    });
  });

  it("a retry stays RUNNING and records the failed attempt, its detail kept short", () => {
    const detail = updates.retryDetail(2, 3, workerError(), updates.retryDelayMs(2));
    expect(detail).toBe("attempt 2 of 4 failed (function_error: boom); retrying in 2 s");
    const u = updates.retryingUpdate(head, detail);
    expect(u).toMatchObject({ state: TaskState.TASK_STATE_RUNNING, detail, attempt: 2, error: undefined });
    expect(updates.retryingUpdate(head, "x".repeat(5000)).detail).toHaveLength(2000);
    expect(updates.retryDetail(1, 1, workerError({ reason: "" }), 1000)).toContain("(UNKNOWN: boom)");
  });

  it("retries back off 1 s, 2 s, 4 s, … up to 60 s", () => {
    expect([1, 2, 3, 4, 7, 20].map(updates.retryDelayMs)).toEqual([1000, 2000, 4000, 8000, 60_000, 60_000]);
  });

  it("a success carries its result, inline or stored", () => {
    const inline = updates.successUpdate(head, inlinePayload(Buffer.from("42")));
    expect(inline).toMatchObject({
      state: TaskState.TASK_STATE_SUCCESS,
      atMs: 1234,
      detail: "",
      error: undefined,
    });
    expect(Buffer.from(inline.result!.json).toString()).toBe("42");
    expect(updates.successUpdate(head, storedPayload("t1.result", 9)).result).toEqual(
      storedPayload("t1.result", 9),
    );
  });

  it("a worker's failure keeps its ErrorInfo and names its reason", () => {
    const error = workerError();
    expect(updates.failedUpdate(head, error)).toMatchObject({
      state: TaskState.TASK_STATE_FAILED,
      detail: "function_error",
      error,
      result: undefined,
    });
  });

  it("the agent's own failures and cancellations carry code, reason and message", () => {
    const lost = updates.errorUpdate(
      head,
      new FabricError("UNAVAILABLE", "the worker was lost", { reason: "worker_lost" }),
    );
    expect(lost).toMatchObject({ state: TaskState.TASK_STATE_FAILED, detail: "worker_lost", attempt: 2 });
    expect(lost.error).toMatchObject({
      code: "UNAVAILABLE",
      reason: "worker_lost",
      message: "the worker was lost",
    });
    const cancelled = updates.cancelledUpdate({ ...head, actor: "endpoint/e1" });
    expect(cancelled).toMatchObject({
      state: TaskState.TASK_STATE_FAILED,
      detail: "cancelled",
      actor: "endpoint/e1",
    });
    expect(cancelled.error).toMatchObject({
      code: "CANCELLED",
      message: "the task was cancelled by its owner",
    });
  });

  it("a start reported only in the outcome is folded in, unless one is there already", () => {
    const u = updates.successUpdate(head, inlinePayload(Buffer.from("1")));
    expect(updates.withStart(u, 1000, "manager/m1")).toMatchObject({
      startedAtMs: 1000,
      startedBy: "manager/m1",
    });
    expect(updates.withStart(u, 0, "manager/m1")).toBe(u);
    const started = { ...u, startedAtMs: 5, startedBy: "manager/m0" };
    expect(updates.withStart(started, 1000, "manager/m1")).toBe(started);
  });

  it("long output keeps its last 64 KiB, messages a quarter of that", () => {
    const big = "a".repeat(updates.ERROR_FIELD_CAP) + "THE END";
    const fitted = updates.fitError(
      workerError({
        message: big,
        remote: { type: "Error", message: big, stack: big },
        shell: { exitCode: 1, stdout: big, stderr: "short", signal: "" },
      }),
    );
    expect(fitted.shell!.stdout.endsWith("THE END")).toBe(true);
    expect(fitted.shell!.stdout).toMatch(/^\[\.\.\. 7 bytes truncated \.\.\.\]\n/);
    expect(fitted.shell!.stderr).toBe("short");
    expect(fitted.remote!.stack.length).toBeLessThan(updates.ERROR_FIELD_CAP + 100);
    expect(fitted.message.length).toBeLessThan(updates.ERROR_FIELD_CAP / 4 + 100);
    expect(fitted.message.endsWith("THE END")).toBe(true);
    expect(updates.fitError(workerError())).toEqual(workerError());
  });
});
