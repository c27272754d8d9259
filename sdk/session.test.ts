import { EventEmitter } from "node:events";

import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";

import { FabricError, errorToInfo } from "../common/client.js";
import type { SessionRequest, SessionResponse } from "../proto/index.js";
import { ClientSession } from "./session.js";

/** A stand-in for the Session call's stream: records what the client writes, replays answers. */
class FakeStream extends EventEmitter {
  readonly written: SessionRequest[] = [];
  ended = false;
  cancelled = false;
  write(req: SessionRequest): boolean {
    this.written.push(req);
    return true;
  }
  end(): void {
    this.ended = true;
  }
  cancel(): void {
    this.cancelled = true;
  }
  answer(res: SessionResponse): void {
    this.emit("data", res);
  }
}

function harness(idleMs = 50) {
  const streams: FakeStream[] = [];
  const session = new ClientSession(() => {
    const s = new FakeStream();
    streams.push(s);
    return s as unknown as grpc.ClientDuplexStream<SessionRequest, SessionResponse>;
  }, idleMs);
  return { session, streams };
}

/** An error as grpc-js reports a failed call. */
function grpcError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(`${code} ${grpc.status[code]}: ${details}`), {
    code,
    details,
    metadata: new grpc.Metadata(),
  });
}

const submitReq = { tasks: [], groupId: "", idempotencyKey: "k" };

describe("ClientSession", () => {
  it("matches answers to requests by ref, whatever their order", async () => {
    const { session, streams } = harness();
    const a = session.submit(submitReq);
    const b = session.submit(submitReq);
    expect(streams).toHaveLength(1);
    const [ra, rb] = streams[0]!.written.map((w) => w.ref);
    streams[0]!.answer({ ref: rb!, msg: { $case: "submitted", value: { groupId: "g", taskIds: ["b"] } } });
    streams[0]!.answer({
      ref: ra!,
      msg: { $case: "error", value: errorToInfo(new FabricError("NOT_FOUND", "no such function")) },
    });
    await expect(b).resolves.toEqual({ groupId: "g", taskIds: ["b"] });
    await expect(a).rejects.toMatchObject({ code: "NOT_FOUND", message: "no such function" });
  });

  it("a watch sees data, then end; cancelling it sends unwatch", async () => {
    const { session, streams } = harness();
    const w = session.watch({ taskIds: ["t1", "t2"], groupId: "" });
    const events: string[] = [];
    w.on("data", (m) => events.push(`data:${m.task?.id}`));
    w.on("end", () => events.push("end"));
    const ref = streams[0]!.written[0]!.ref;
    streams[0]!.answer({ ref, msg: { $case: "tasks", value: { task: { id: "t1" } as never, tasks: [] } } });
    streams[0]!.answer({ ref, msg: { $case: "done", value: {} } });
    expect(events).toEqual(["data:t1", "end"]);

    const w2 = session.watch({ taskIds: ["t3"], groupId: "" });
    const ref2 = streams[0]!.written[1]!.ref;
    w2.cancel();
    expect(streams[0]!.written[2]).toEqual({ ref: ref2, op: { $case: "unwatch", value: {} } });
  });

  it("closes the stream after a moment without open requests, and opens a new one when needed", async () => {
    const { session, streams } = harness(30);
    const a = session.submit(submitReq);
    const ref = streams[0]!.written[0]!.ref;
    streams[0]!.answer({ ref, msg: { $case: "submitted", value: { groupId: "g", taskIds: [] } } });
    await a;
    expect(streams[0]!.ended).toBe(false);
    await new Promise((r) => setTimeout(r, 80));
    expect(streams[0]!.ended).toBe(true);
    void session.submit(submitReq).catch(() => undefined);
    expect(streams).toHaveLength(2);
  });

  it("a broken stream fails every open request as a call would; the next request reconnects", async () => {
    const { session, streams } = harness();
    const a = session.submit(submitReq);
    const w = session.watch({ taskIds: ["t"], groupId: "" });
    const watchErr = new Promise((r) => w.on("error", r));
    streams[0]!.emit("error", grpcError(grpc.status.UNAVAILABLE, "Connection dropped"));
    await expect(a).rejects.toMatchObject({ code: "UNAVAILABLE" });
    await expect(watchErr).resolves.toMatchObject({ code: "UNAVAILABLE" });
    expect(session.available).toBe(true);
    void session.submit(submitReq).catch(() => undefined);
    expect(streams).toHaveLength(2);
  });

  it("a broker without Session is remembered: the session is no longer offered", async () => {
    const { session, streams } = harness();
    const a = session.submit(submitReq);
    streams[0]!.emit(
      "error",
      grpcError(
        grpc.status.UNIMPLEMENTED,
        "The server does not implement the method /fabric.v1.TaskService/Session",
      ),
    );
    await expect(a).rejects.toMatchObject({ code: "UNIMPLEMENTED" });
    expect(session.available).toBe(false);
  });

  it("a submit the broker does not answer in time fails DEADLINE_EXCEEDED; its late answer is ignored", async () => {
    const { session, streams } = harness();
    const a = session.submit(submitReq, 20);
    await expect(a).rejects.toMatchObject({ code: "DEADLINE_EXCEEDED" });
    const ref = streams[0]!.written[0]!.ref;
    streams[0]!.answer({ ref, msg: { $case: "submitted", value: { groupId: "g", taskIds: [] } } });
  });

  it("close fails what is open with CANCELLED and cancels the stream", async () => {
    const { session, streams } = harness();
    const a = session.submit(submitReq);
    session.close();
    await expect(a).rejects.toMatchObject({ code: "CANCELLED" });
    expect(streams[0]!.cancelled).toBe(true);
    expect(session.available).toBe(false);
  });
});
