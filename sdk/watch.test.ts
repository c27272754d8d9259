import { EventEmitter } from "node:events";

import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";

import { FabricError, TaskState } from "../common/client.js";
import { Task, type WatchTasksRequest } from "../proto/index.js";
import { backoffDelay, shouldReconnect, watchTasks } from "./watch.js";
import type { WatchStream } from "./watch.js";

class FakeStream extends EventEmitter implements WatchStream {
  cancelled = false;
  constructor(readonly request: WatchTasksRequest) {
    super();
  }
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    setImmediate(() =>
      this.emit(
        "error",
        Object.assign(new Error("Cancelled"), {
          code: grpc.status.CANCELLED,
          details: "Cancelled on client",
        }),
      ),
    );
  }
  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
  send(id: string): void {
    this.emit("data", { task: done(id) });
  }
  fail(code: number, details = "broken"): void {
    this.emit("error", Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() }));
  }
}

/** A task that succeeded with the result 1; its other fields, which these tests do not look at, at their defaults. */
function done(id: string): Task {
  return {
    ...Task.decode(new Uint8Array()),
    id,
    state: TaskState.TASK_STATE_SUCCESS,
    result: { json: new TextEncoder().encode("1"), objectRef: "", size: 1 },
  };
}

/** A fake broker: records each opened stream; `script` decides what each one does. */
function fakeBroker(script: (s: FakeStream, n: number) => void) {
  const opened: FakeStream[] = [];
  const open = (req: WatchTasksRequest) => {
    const s = new FakeStream(req);
    opened.push(s);
    const n = opened.length - 1;
    setImmediate(() => script(s, n));
    return s;
  };
  return { open, opened };
}

const fast = { chunkSize: 100, initialBackoffMs: 1, maxBackoffMs: 5 };

async function collect(it: AsyncIterable<Task>): Promise<string[]> {
  const ids: string[] = [];
  for await (const t of it) ids.push(t.id);
  return ids;
}

describe("watchTasks", () => {
  it("yields each task once and ends when the stream ends", async () => {
    const b = fakeBroker((s) => {
      s.send("a");
      s.send("b");
      s.send("a"); // a duplicate from the server is dropped
      s.emit("end");
    });
    expect(await collect(watchTasks(b.open, { taskIds: ["a", "b"] }, fast))).toEqual(["a", "b"]);
    expect(b.opened).toHaveLength(1);
  });

  it("re-opens a broken stream for the ids not yet received", async () => {
    const b = fakeBroker((s, n) => {
      if (n === 0) {
        s.send("a");
        s.fail(grpc.status.UNAVAILABLE);
      } else {
        for (const id of s.request.taskIds) s.send(id);
        s.emit("end");
      }
    });
    const ids = await collect(watchTasks(b.open, { taskIds: ["a", "b", "c"] }, fast));
    expect(ids.sort()).toEqual(["a", "b", "c"]);
    expect(b.opened[1]!.request.taskIds).toEqual(["b", "c"]);
  });

  it("a group watch that breaks is re-opened by the ids known to be in it", async () => {
    const b = fakeBroker((s, n) => {
      if (n === 0) {
        expect(s.request.groupId).toBe("g");
        s.send("a");
        s.fail(grpc.status.INTERNAL);
      } else {
        for (const id of s.request.taskIds) s.send(id);
        s.emit("end");
      }
    });
    const ids = await collect(watchTasks(b.open, { groupId: "g", knownTaskIds: ["a", "b"] }, fast));
    expect(ids).toEqual(["a", "b"]);
    expect(b.opened[1]!.request).toEqual({ taskIds: ["b"], groupId: "" });
  });

  it("a group watch with no known ids is re-opened by group, dropping what was already yielded", async () => {
    const b = fakeBroker((s, n) => {
      s.send("a");
      if (n === 0) s.fail(grpc.status.CANCELLED);
      else {
        s.send("b");
        s.emit("end");
      }
    });
    expect(await collect(watchTasks(b.open, { groupId: "g" }, fast))).toEqual(["a", "b"]);
    expect(b.opened[1]!.request.groupId).toBe("g");
  });

  it("splits long id lists into lanes of at most chunkSize", async () => {
    const ids = Array.from({ length: 250 }, (_, i) => `t${i}`);
    const b = fakeBroker((s) => {
      for (const id of s.request.taskIds) s.send(id);
      s.emit("end");
    });
    const got = await collect(watchTasks(b.open, { taskIds: ids }, fast));
    expect(got).toHaveLength(250);
    expect(b.opened.map((s) => s.request.taskIds.length)).toEqual([100, 100, 50]);
  });

  it("does not retry an error that is the answer (NOT_FOUND)", async () => {
    const b = fakeBroker((s) => s.fail(grpc.status.NOT_FOUND, "task x not found"));
    await expect(collect(watchTasks(b.open, { taskIds: ["x"] }, fast))).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
    expect(b.opened).toHaveLength(1);
  });

  it("times out with DEADLINE_EXCEEDED and cancels the stream", async () => {
    const b = fakeBroker(() => undefined);
    await expect(
      collect(watchTasks(b.open, { taskIds: ["x"] }, { ...fast, timeoutMs: 20 })),
    ).rejects.toMatchObject({
      code: "DEADLINE_EXCEEDED",
    });
    expect(b.opened[0]!.cancelled).toBe(true);
  });

  it("stops with CANCELLED when aborted", async () => {
    const ac = new AbortController();
    const b = fakeBroker(() => ac.abort());
    await expect(
      collect(watchTasks(b.open, { taskIds: ["x"] }, { ...fast, signal: ac.signal })),
    ).rejects.toMatchObject({
      code: "CANCELLED",
    });
  });

  it("gives up with UNAVAILABLE when reconnecting fails for longer than the window", async () => {
    const b = fakeBroker((s) => s.fail(grpc.status.UNAVAILABLE, "connection refused"));
    const err = await collect(
      watchTasks(b.open, { taskIds: ["x"] }, { ...fast, reconnectWindowMs: 30 }),
    ).catch((e: unknown) => e as FabricError);
    expect(err).toBeInstanceOf(FabricError);
    expect((err as FabricError).code).toBe("UNAVAILABLE");
    expect((err as FabricError).message).toMatch(/connection refused/);
    expect(b.opened.length).toBeGreaterThan(1);
  });

  it("breaking out of the loop cancels the streams", async () => {
    const b = fakeBroker((s) => s.send("a"));
    for await (const t of watchTasks(b.open, { taskIds: ["a", "b"] }, fast)) {
      expect(t.id).toBe("a");
      break;
    }
    expect(b.opened[0]!.cancelled).toBe(true);
  });

  it("stopping at the last task lets the stream end on its own instead of resetting it", async () => {
    // Each cancel is an RST_STREAM; HTTP/2 servers drop a connection after ~1,000 of them.
    const b = fakeBroker((s) => {
      s.send("a");
      setTimeout(() => s.emit("end"), 20); // the broker ends the stream after the last task
    });
    for await (const t of watchTasks(b.open, { taskIds: ["a"] }, fast)) {
      expect(t.id).toBe("a");
      break; // as waitForResult does
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(b.opened[0]!.cancelled).toBe(false);
  });
});

describe("reconnect policy", () => {
  it("retries transport failures, not answers", () => {
    expect(shouldReconnect(new FabricError("UNAVAILABLE", ""))).toBe(true);
    expect(shouldReconnect(new FabricError("INTERNAL", ""))).toBe(true);
    expect(shouldReconnect(new FabricError("CANCELLED", ""))).toBe(true);
    expect(shouldReconnect(new FabricError("NOT_FOUND", ""))).toBe(false);
    expect(shouldReconnect(new FabricError("UNAUTHENTICATED", ""))).toBe(false);
  });

  it("backs off exponentially with jitter, up to the cap", () => {
    expect(backoffDelay(0, 100, 5_000, () => 1)).toBe(100);
    expect(backoffDelay(0, 100, 5_000, () => 0)).toBe(50);
    expect(backoffDelay(3, 100, 5_000, () => 1)).toBe(800);
    expect(backoffDelay(20, 100, 5_000, () => 1)).toBe(5_000);
  });
});
