import { describe, expect, it } from "vitest";

import { TaskState, type Task } from "../../proto/index.js";
import { expiredView } from "./task-expiry.js";

function task(over: Partial<Task> = {}): Task {
  return {
    id: "t1",
    owner: "alice",
    functionId: "f1",
    endpointId: "e1",
    groupId: "g1",
    state: TaskState.TASK_STATE_SUCCESS,
    history: [
      { state: TaskState.TASK_STATE_RECEIVED, atMs: 1_000, actor: "user/alice", detail: "" },
      { state: TaskState.TASK_STATE_SUCCESS, atMs: 2_000, actor: "manager/m", detail: "" },
    ],
    result: { json: new TextEncoder().encode("42"), objectRef: "", size: 2 },
    error: undefined,
    output: { stdout: "hi", stderr: "" },
    createdAtMs: 1_000,
    completedAtMs: 2_000,
    attempts: 1,
    ...over,
  };
}

describe("expiredView", () => {
  it("leaves a record within its retention as it is", () => {
    const t = task();
    expect(expiredView(t, 10_000, 12_000)).toBe(t);
  });

  it("shows a finished task past its retention as expired, without its result or output", () => {
    const v = expiredView(task(), 10_000, 12_001);
    expect(v.state).toBe(TaskState.TASK_STATE_EXPIRED);
    expect(v.result).toBeUndefined();
    expect(v.output).toBeUndefined();
    expect(v.error).toMatchObject({ code: "DATA_LOSS", reason: "expired" });
    expect(v.error!.message).toMatch(/ended in success and was kept for 10 s/);
    expect(v.history.at(-1)).toMatchObject({
      state: TaskState.TASK_STATE_EXPIRED,
      atMs: 12_000,
      actor: "broker",
    });
    expect(v.completedAtMs).toBe(2_000);
  });

  it("shows a task that never finished within its retention as expired, counting from its last change", () => {
    const waiting = task({
      state: TaskState.TASK_STATE_RUNNING,
      history: [{ state: TaskState.TASK_STATE_RUNNING, atMs: 5_000, actor: "manager/m", detail: "" }],
      result: undefined,
      completedAtMs: 0,
    });
    expect(expiredView(waiting, 10_000, 14_000)).toBe(waiting);
    const v = expiredView(waiting, 10_000, 15_001);
    expect(v.error).toMatchObject({ code: "DEADLINE_EXCEEDED", reason: "expired" });
    expect(v.completedAtMs).toBe(15_000);
  });
});
