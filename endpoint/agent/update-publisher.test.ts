import { pino } from "pino";
import { describe, expect, it } from "vitest";

import { TaskState, TaskUpdate, TaskUpdateBatch } from "../../proto/index.js";
import { UpdatePublisher, encodedSizeBound } from "./update-publisher.js";

const log = pino({ level: "silent" });

function update(taskId: string, bytes = 0): TaskUpdate {
  return {
    taskId,
    state: TaskState.TASK_STATE_SUCCESS,
    atMs: 1,
    actor: "endpoint/e",
    detail: "",
    result: { json: Buffer.alloc(bytes, 0x31), objectRef: "", size: bytes },
    error: undefined,
    output: undefined,
    attempt: 1,
    startedAtMs: 0,
    startedBy: "",
  };
}

describe("UpdatePublisher", () => {
  it("batches updates and runs onPublished only after the publish resolved", async () => {
    const batches: string[][] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const p = new UpdatePublisher({
      endpointId: "e",
      log,
      publish: async (bytes) => {
        await gate;
        batches.push(TaskUpdateBatch.decode(bytes).updates.map((u) => u.taskId));
      },
    });
    const acked: string[] = [];
    for (const id of ["a", "b", "c"]) p.add(update(id), () => acked.push(id));
    await new Promise((r) => setTimeout(r, 20));
    expect(acked).toEqual([]);
    release();
    await p.flush();
    expect(batches).toEqual([["a", "b", "c"]]);
    expect(acked).toEqual(["a", "b", "c"]);
  });

  it("splits batches by count and by bytes, keeping order", async () => {
    const batches: string[][] = [];
    const p = new UpdatePublisher({
      endpointId: "e",
      log,
      maxUpdates: 2,
      maxBytes: 2500,
      publish: async (bytes) => {
        batches.push(TaskUpdateBatch.decode(bytes).updates.map((u) => u.taskId));
      },
    });
    p.add(update("1"));
    p.add(update("2"));
    p.add(update("3", 1000));
    p.add(update("4", 1000));
    p.add(update("5", 1000));
    await p.flush();
    expect(batches.flat()).toEqual(["1", "2", "3", "4", "5"]);
    for (const b of batches) expect(b.length).toBeLessThanOrEqual(2);
    expect(batches).toContainEqual(["5"]);
  });

  it("retries a failed publish instead of dropping updates", async () => {
    let calls = 0;
    const p = new UpdatePublisher({
      endpointId: "e",
      log,
      publish: async () => {
        calls++;
        if (calls === 1) throw new Error("no responders");
      },
    });
    let done = false;
    p.add(update("x"), () => (done = true));
    await p.flush();
    expect(calls).toBe(2);
    expect(done).toBe(true);
    expect(p.lastError).toBe("");
  });

  it("retries at once when told the link is back, not after its backoff", async () => {
    let calls = 0;
    const p = new UpdatePublisher({
      endpointId: "e",
      log,
      publish: async () => {
        calls++;
        if (calls <= 6) throw new Error("disconnected");
      },
    });
    let done = false;
    p.add(update("x"), () => (done = true));
    // Six failures: the backoff has grown to 3.2 s.
    await new Promise((r) => setTimeout(r, 100 + 200 + 400 + 800 + 1600 + 100));
    expect(calls).toBe(6);
    const t0 = Date.now();
    p.retryNow();
    await p.flush();
    expect(Date.now() - t0).toBeLessThan(200);
    expect(done).toBe(true);
  });

  it("gives up a publish sent before the link came back, whose answer may never come, and sends it again", async () => {
    let calls = 0;
    const p = new UpdatePublisher({
      endpointId: "e",
      log,
      publish: async () => {
        calls++;
        if (calls === 1) await new Promise(() => undefined); // lost with the old server
      },
    });
    let done = false;
    p.add(update("x"), () => (done = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(calls).toBe(1);
    p.retryNow(50);
    await p.flush();
    expect(calls).toBe(2);
    expect(done).toBe(true);
  });

  it("bounds an update's encoded size from above without encoding it, closely", () => {
    const failed: TaskUpdate = {
      ...update("0b6f8a1e-5c1d-4c0e-9d0e-3f7e1d2c4b5a"),
      state: TaskState.TASK_STATE_FAILED,
      detail: "shell_exit_nonzero",
      result: undefined,
      error: {
        code: "ABORTED",
        message: "the command exited with code 2 — déjà vu ✓",
        reason: "shell_exit_nonzero",
        remote: { type: "Error", message: "x".repeat(300), stack: "at f (a.js:1:1)\n".repeat(40) },
        shell: { exitCode: 2, stdout: "ü".repeat(5000), stderr: "warn\n".repeat(100), signal: "" },
      },
      startedAtMs: 1_763_000_000_000,
      startedBy: "manager/vm-7de2cf07",
      attempt: 3,
    };
    for (const u of [update("t"), update("t", 100_000), failed]) {
      const actual = TaskUpdate.encode(u).finish().length + 8;
      expect(encodedSizeBound(u)).toBeGreaterThanOrEqual(actual);
      expect(encodedSizeBound(u)).toBeLessThan(actual + 300);
    }
  });
});
