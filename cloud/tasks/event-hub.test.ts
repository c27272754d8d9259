import { describe, expect, it } from "vitest";

import { Task, TaskEventBatch, TaskState } from "../../proto/index.js";
import { repeatedField } from "./event-hub.js";

function task(id: string, resultBytes: number): Task {
  return {
    id,
    owner: "alice",
    functionId: "f",
    endpointId: "e",
    groupId: "g",
    state: TaskState.TASK_STATE_SUCCESS,
    history: [
      { state: TaskState.TASK_STATE_SUCCESS, atMs: 1_763_000_000_000, actor: "manager/m", detail: "" },
    ],
    result: { json: new Uint8Array(resultBytes).fill(0x31), objectRef: "", size: resultBytes },
    error: undefined,
    output: undefined,
    createdAtMs: 1_763_000_000_000,
    completedAtMs: 1_763_000_000_001,
    attempts: 1,
  };
}

describe("repeatedField", () => {
  it("frames already-encoded tasks exactly as encoding the batch would", () => {
    // Small, 1-byte, 2-byte and 3-byte length prefixes.
    const tasks = [task("a", 0), task("b", 100), task("c", 1_000), task("d", 20_000)];
    const raw = repeatedField(
      1,
      tasks.map((t) => Task.encode(t).finish()),
    );
    expect(Buffer.from(raw)).toEqual(Buffer.from(TaskEventBatch.encode({ tasks }).finish()));
    expect(TaskEventBatch.decode(raw).tasks.map((t) => t.id)).toEqual(["a", "b", "c", "d"]);
    expect(repeatedField(1, [])).toHaveLength(0);
  });
});
