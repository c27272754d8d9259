import { describe, expect, it } from "vitest";

import { TaskState, canTransition, isTerminal, stateName } from "./task-state.js";

const S = TaskState;

describe("task states", () => {
  it.each([
    [S.TASK_STATE_RECEIVED, "received", false],
    [S.TASK_STATE_WAITING_FOR_ENDPOINT, "waiting-for-endpoint", false],
    [S.TASK_STATE_WAITING_FOR_NODES, "waiting-for-nodes", false],
    [S.TASK_STATE_RUNNING, "running", false],
    [S.TASK_STATE_SUCCESS, "success", true],
    [S.TASK_STATE_FAILED, "failed", true],
    [S.TASK_STATE_CANCELLED, "cancelled", true],
    [S.TASK_STATE_EXPIRED, "expired", true],
    [S.TASK_STATE_UNSPECIFIED, "unknown", false],
    [S.UNRECOGNIZED, "unknown", false],
  ])("state %i is called %s (terminal: %s)", (state, name, terminal) => {
    expect(stateName(state)).toBe(name);
    expect(isTerminal(state)).toBe(terminal);
  });

  it("moves forward only, retries while RUNNING, and never leaves an end", () => {
    expect(canTransition(S.TASK_STATE_RECEIVED, S.TASK_STATE_RUNNING)).toBe(true);
    expect(canTransition(S.TASK_STATE_RUNNING, S.TASK_STATE_RUNNING)).toBe(true);
    expect(canTransition(S.TASK_STATE_RUNNING, S.TASK_STATE_WAITING_FOR_NODES)).toBe(false);
    expect(canTransition(S.TASK_STATE_WAITING_FOR_NODES, S.TASK_STATE_FAILED)).toBe(true);
    expect(canTransition(S.TASK_STATE_SUCCESS, S.TASK_STATE_FAILED)).toBe(false);
  });
});
