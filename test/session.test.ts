import type * as grpc from "@grpc/grpc-js";
import { beforeAll, describe, expect, it } from "vitest";

import { errorFromInfo, fromGrpcError } from "../common/index.js";
import { SessionRequest, TaskState, type SessionResponse, type SubmitTasksRequest } from "../proto/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { RawClients } from "./support/raw-clients.js";

const enc = new TextEncoder();

/** A raw Session stream: send requests, await answers by ref. */
class RawSession {
  readonly answers: SessionResponse[] = [];
  private waiters: (() => void)[] = [];
  ended: Promise<{ code: string; message: string }>;

  constructor(readonly stream: grpc.ClientDuplexStream<SessionRequest, SessionResponse>) {
    stream.on("data", (res: SessionResponse) => {
      this.answers.push(res);
      for (const w of this.waiters.splice(0)) w();
    });
    this.ended = new Promise((resolve) => {
      stream.on("error", (err) => {
        const fe = fromGrpcError(err);
        resolve({ code: fe.code, message: fe.message });
      });
      stream.on("end", () => resolve({ code: "OK", message: "" }));
    });
  }

  send(req: SessionRequest): void {
    this.stream.write(req);
  }

  /** The answers for `ref`, once `done` says there are `count` (or one ends them). */
  async waitFor(ref: number, until: (answers: SessionResponse[]) => boolean): Promise<SessionResponse[]> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const mine = this.answers.filter((a) => a.ref === ref);
      if (until(mine)) return mine;
      if (Date.now() > deadline) throw new Error(`no answer for ref ${ref}: ${JSON.stringify(mine)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }

  async submitted(ref: number): Promise<SessionResponse> {
    const [a] = await this.waitFor(ref, (xs) => xs.length > 0);
    return a!;
  }
}

describe("Session: submits and watches on one stream", () => {
  const stack = useFabric({ name: "session" });
  let functionId: string;
  let endpointId: string;

  beforeAll(async () => {
    functionId = await stack.raw.registerJs("const f = () => 1;");
    endpointId = (await stack.raw.newEndpoint("ep")).id;
  });

  const open = (c: RawClients = stack.raw) => new RawSession(c.tasks.session(c.md.clone()));
  const submitReq = (n = 1): SubmitTasksRequest => ({
    tasks: Array.from({ length: n }, () => ({
      functionId,
      endpointId,
      argsJson: enc.encode("[]"),
      kwargsJson: enc.encode("{}"),
    })),
    groupId: "",
  });

  it("answers many submits at once by ref, each with its own tasks", async () => {
    const s = open();
    for (let ref = 1; ref <= 20; ref++)
      s.send({ ref, op: { $case: "submit", value: submitReq((ref % 3) + 1) } });
    const ids = new Set<string>();
    for (let ref = 1; ref <= 20; ref++) {
      const a = await s.submitted(ref);
      expect(a.msg?.$case).toBe("submitted");
      if (a.msg?.$case !== "submitted") continue;
      expect(a.msg.value.taskIds).toHaveLength((ref % 3) + 1);
      for (const id of a.msg.value.taskIds) ids.add(id);
    }
    let expected = 0;
    for (let ref = 1; ref <= 20; ref++) expected += (ref % 3) + 1;
    expect(ids.size).toBe(expected); // every id distinct
    const all = (await stack.raw.getTasks({ taskIds: [...ids], omitResults: true })).tasks;
    expect(all.map((t) => t.state).every((st) => st === TaskState.TASK_STATE_WAITING_FOR_ENDPOINT)).toBe(
      true,
    );
    s.stream.end();
    expect((await s.ended).code).toBe("OK");
  });

  it("a failed request is answered with its error; the stream and other requests go on", async () => {
    const s = open();
    const bad = submitReq();
    bad.tasks[0]!.functionId = "00000000-0000-4000-8000-000000000000";
    s.send({ ref: 1, op: { $case: "submit", value: bad } });
    s.send({ ref: 2, op: { $case: "submit", value: { ...submitReq(), groupId: "not-a-group" } } });
    s.send({
      ref: 3,
      op: { $case: "watch", value: { taskIds: ["00000000-0000-4000-8000-000000000001"], groupId: "" } },
    });
    s.send({ ref: 4, op: undefined });
    s.send({ ref: 5, op: { $case: "submit", value: submitReq() } });
    const code = async (ref: number) => {
      const a = await s.submitted(ref);
      return a.msg?.$case === "error" ? errorFromInfo(a.msg.value).code : a.msg?.$case;
    };
    expect(await code(1)).toBe("NOT_FOUND");
    expect(await code(2)).toBe("INVALID_ARGUMENT");
    expect(await code(3)).toBe("NOT_FOUND");
    expect(await code(4)).toBe("INVALID_ARGUMENT");
    expect(await code(5)).toBe("submitted");
    s.stream.end();
    expect((await s.ended).code).toBe("OK");
  });

  it("a watch gets its tasks as they finish, then done; unwatch ends a watch early", async () => {
    const s = open();
    s.send({ ref: 1, op: { $case: "submit", value: submitReq(2) } });
    const a = await s.submitted(1);
    if (a.msg?.$case !== "submitted") throw new Error(`not submitted: ${JSON.stringify(a)}`);
    const [t1, t2] = a.msg.value.taskIds;
    s.send({ ref: 2, op: { $case: "watch", value: { taskIds: [t1!, t2!], groupId: "" } } });
    s.send({ ref: 3, op: { $case: "watch", value: { taskIds: [t2!], groupId: "" } } });
    await new Promise((r) => setTimeout(r, 300));
    expect(s.answers.filter((x) => x.ref === 2 || x.ref === 3)).toHaveLength(0); // nothing finished yet

    await stack.raw.cancelTasks({ taskIds: [t1!] });
    const first = await s.waitFor(2, (xs) => xs.length > 0);
    expect(first[0]!.msg?.$case).toBe("tasks");
    if (first[0]!.msg?.$case === "tasks") expect(first[0]!.msg.value.task?.id).toBe(t1);

    // The client stops waiting for t2 on ref 3: done at once, nothing else.
    s.send({ ref: 3, op: { $case: "unwatch", value: {} } });
    const three = await s.waitFor(3, (xs) => xs.length > 0);
    expect(three.map((x) => x.msg?.$case)).toEqual(["done"]);

    await stack.raw.cancelTasks({ taskIds: [t2!] });
    const two = await s.waitFor(2, (xs) => xs.some((x) => x.msg?.$case === "done"));
    expect(two.map((x) => x.msg?.$case)).toEqual(["tasks", "tasks", "done"]);

    // Half-closed with nothing open: the broker ends the stream normally.
    s.stream.end();
    expect((await s.ended).code).toBe("OK");
  });

  it("a half-closed stream ends only after its open watch has been answered", async () => {
    const s = open();
    s.send({ ref: 1, op: { $case: "submit", value: submitReq() } });
    const a = await s.submitted(1);
    if (a.msg?.$case !== "submitted") throw new Error("not submitted");
    const [t] = a.msg.value.taskIds;
    s.send({ ref: 2, op: { $case: "watch", value: { taskIds: [t!], groupId: "" } } });
    s.stream.end();
    await new Promise((r) => setTimeout(r, 300));
    await stack.raw.cancelTasks({ taskIds: [t!] });
    const two = await s.waitFor(2, (xs) => xs.some((x) => x.msg?.$case === "done"));
    expect(two.map((x) => x.msg?.$case)).toEqual(["tasks", "done"]);
    expect((await s.ended).code).toBe("OK");
  });

  it("answers each request of a stream without a valid token UNAUTHENTICATED; a request of undecodable bytes ends the stream", async () => {
    const nobody = RawClients.withToken(stack.fabric, "not-a-token");
    const s = open(nobody);
    s.send({ ref: 1, op: { $case: "submit", value: submitReq() } });
    const a = await s.submitted(1);
    expect(a.msg?.$case === "error" && errorFromInfo(a.msg.value).code).toBe("UNAUTHENTICATED");
    s.stream.end();
    await s.ended;

    const raw = stack.raw.tasks.makeBidiStreamRequest(
      "/fabric.v1.TaskService/Session",
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => SessionRequest.decode(b) as unknown as SessionResponse,
      stack.raw.md.clone(),
    );
    const r = new RawSession(raw as unknown as grpc.ClientDuplexStream<SessionRequest, SessionResponse>);
    raw.write(Uint8Array.from([0xff, 0xff, 0xff]));
    const end = await r.ended;
    expect(end.code).toBe("INVALID_ARGUMENT");
    expect(end.message).toMatch(/malformed Session request/);
    expect(stack.fabric.broker.process?.running).toBe(true);
  });

  it("a submission may join no group: nothing to watch by group, and not together with a group", async () => {
    const s = open();
    s.send({ ref: 1, op: { $case: "submit", value: { ...submitReq(2), noGroup: true } } });
    const a = await s.submitted(1);
    if (a.msg?.$case !== "submitted") throw new Error(`not submitted: ${JSON.stringify(a)}`);
    expect(a.msg.value.groupId).toBe("");
    const tasks = (await stack.raw.getTasks({ taskIds: a.msg.value.taskIds, omitResults: true })).tasks;
    expect(tasks.map((t) => t.groupId)).toEqual(["", ""]);
    s.send({
      ref: 2,
      op: { $case: "submit", value: { ...submitReq(), noGroup: true, groupId: a.msg.value.groupId || "x" } },
    });
    const b = await s.submitted(2);
    expect(b.msg?.$case === "error" && errorFromInfo(b.msg.value).code).toBe("INVALID_ARGUMENT");
    s.stream.end();
    await s.ended;
  });

  it("the SDK client submits and waits over its session, and closes it when idle", async () => {
    const { client } = stack;
    const id = await client.run(functionId, endpointId, []);
    expect((await client.getTask(id)).groupId).toBe(""); // run() joins no group
    const waiting = client.waitForResult(id, { timeoutMs: 10_000 }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    await stack.raw.cancelTasks({ taskIds: [id] });
    const err = (await waiting) as { code?: string };
    expect(err.code).toBe("CANCELLED");
    // Unknown ids are refused over the session as over a call.
    await expect(
      client.waitForResult("00000000-0000-4000-8000-000000000002", { timeoutMs: 5_000 }),
    ).rejects.toMatchObject({ code: "NOT_FOUND" });
  });
});
