import { describe, expect, it } from "vitest";

import { TaskState, type Task, type TaskUpdate } from "../../proto/index.js";
import { applyTaskUpdate, cancelTask } from "./task-transitions.js";

const S = TaskState;
const task = (state: TaskState = S.TASK_STATE_WAITING_FOR_ENDPOINT): Task => ({
  id: "t1",
  owner: "alice",
  functionId: "f",
  endpointId: "ep1",
  groupId: "g",
  state,
  history: [{ state, atMs: 1, actor: "broker/x", detail: "" }],
  result: undefined,
  error: undefined,
  output: undefined,
  createdAtMs: 1,
  completedAtMs: 0,
  attempts: 0,
});
const update = (state: TaskState, extra: Partial<TaskUpdate> = {}): TaskUpdate => ({
  taskId: "t1",
  state,
  atMs: 10,
  actor: "endpoint/ep1",
  detail: "",
  result: undefined,
  error: undefined,
  output: undefined,
  attempt: 1,
  startedAtMs: 0,
  startedBy: "",
  ...extra,
});

describe("applyTaskUpdate", () => {
  it("records running then success with the result, once", () => {
    const running = applyTaskUpdate(task(), update(S.TASK_STATE_RUNNING), "ep1")!;
    expect(running.state).toBe(S.TASK_STATE_RUNNING);
    const json = new TextEncoder().encode("42");
    const done = applyTaskUpdate(
      running,
      update(S.TASK_STATE_SUCCESS, { result: { json, objectRef: "", size: 2 } }),
      "ep1",
    )!;
    expect(done.state).toBe(S.TASK_STATE_SUCCESS);
    expect(done.history.map((h) => h.state)).toEqual([
      S.TASK_STATE_WAITING_FOR_ENDPOINT,
      S.TASK_STATE_RUNNING,
      S.TASK_STATE_SUCCESS,
    ]);
    expect(done.completedAtMs).toBe(10);
    // A duplicate result (redelivery) is absorbed.
    expect(applyTaskUpdate(done, update(S.TASK_STATE_SUCCESS), "ep1")).toBeNull();
    expect(applyTaskUpdate(done, update(S.TASK_STATE_FAILED), "ep1")).toBeNull();
    expect(applyTaskUpdate(done, update(S.TASK_STATE_RUNNING), "ep1")).toBeNull();
  });

  it("records a start folded into the outcome as its own transition", () => {
    const done = applyTaskUpdate(
      task(),
      update(S.TASK_STATE_SUCCESS, { startedAtMs: 7, startedBy: "manager/m1" }),
      "ep1",
    )!;
    expect(done.history.map((h) => [h.state, h.atMs, h.actor])).toEqual([
      [S.TASK_STATE_WAITING_FOR_ENDPOINT, 1, "broker/x"],
      [S.TASK_STATE_RUNNING, 7, "manager/m1"],
      [S.TASK_STATE_SUCCESS, 10, "endpoint/ep1"],
    ]);
  });

  it("rejects updates from another endpoint than the task's", () => {
    expect(applyTaskUpdate(task(), update(S.TASK_STATE_SUCCESS), "ep2")).toBeNull();
  });

  it("never moves a task backwards", () => {
    const running = applyTaskUpdate(task(), update(S.TASK_STATE_RUNNING), "ep1")!;
    expect(applyTaskUpdate(running, update(S.TASK_STATE_WAITING_FOR_NODES), "ep1")).toBeNull();
  });

  it("a late result after cancellation is ignored", () => {
    const cancelled = cancelTask(task(), "user/alice", 5)!;
    expect(cancelled.state).toBe(S.TASK_STATE_CANCELLED);
    expect(cancelled.error?.reason).toBe("cancelled");
    expect(applyTaskUpdate(cancelled, update(S.TASK_STATE_SUCCESS), "ep1")).toBeNull();
    expect(cancelTask(cancelled, "user/alice")).toBeNull();
  });

  it("a failure without error info still explains itself", () => {
    const failed = applyTaskUpdate(task(), update(S.TASK_STATE_FAILED), "ep1")!;
    expect(failed.error?.message).toMatch(/failed/);
  });
});
