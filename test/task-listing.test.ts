/**
 * Task listing against a real broker, NATS and endpoint: the caller's tasks newest first through
 * gRPC (SDK), the CLI and HTTP; filters; pages that cover every task once; other users' tasks never
 * shown; the index kept by two brokers writing at once; and results watched over HTTP (Server-Sent
 * Events and the long-poll).
 */
import { randomUUID } from "node:crypto";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LocalFabric, freePort } from "../devkit/index.js";
import { runCli } from "../sdk/internal.js";
import { Client, type TaskSummaryInfo } from "../sdk/index.js";

interface Summary {
  id: string;
  state: string;
  functionId: string;
  groupId: string;
  createdAtMs: number;
}
interface Answer {
  tasks: Summary[];
  nextCursor: string;
  pendingIds: string[];
  code: string;
  message: string;
}

describe("task listing", () => {
  let stack: LocalFabric;
  let base: string;
  let alice: Client;
  let bob: Client;
  let aliceToken: string;
  let endpointId: string;
  let okFn: string;
  let failFn: string;
  let slowFn: string;
  /** Alice's tasks, in the order submitted. */
  const submitted: { id: string; fn: string; group: string; at: number }[] = [];

  beforeAll(async () => {
    const port = await freePort();
    stack = await LocalFabric.start({
      name: "listing",
      brokerConfig: { http: { listen: `127.0.0.1:${port}` } },
    });
    base = `http://127.0.0.1:${port}`;
    alice = await stack.client("alice");
    bob = await stack.client("bob");
    aliceToken = await stack.broker.token("alice");
    const ep = await stack.startEndpoint("alice", "list-ep", { workers: 4 });
    endpointId = ep.endpointId();
    okFn = await alice.registerFunction({ source: "function ok(x) { return x; }", entryPoint: "ok" });
    failFn = await alice.registerFunction({
      source: "function bad(x) { throw new Error('no ' + x); }",
      entryPoint: "bad",
    });
    slowFn = await alice.registerShellFunction("sleep 20");
    // 3 submissions (two of 70 tasks: more than one index page each) and single runs between.
    for (const [fn, n] of [
      [okFn, 70],
      [failFn, 5],
      [okFn, 70],
    ] as const) {
      const at = Date.now();
      const batch = await alice.submitBatch(
        Array.from({ length: n }, (_, i) => ({ functionId: fn, endpointId, args: [i] })),
      );
      for (const id of batch.taskIds) submitted.push({ id, fn, group: batch.groupId, at });
      const single = await alice.run(okFn, endpointId, [-1]);
      submitted.push({ id: single, fn: okFn, group: "", at: Date.now() });
      await new Promise((r) => setTimeout(r, 20));
    }
    // Bob's tasks on his own endpoint's function: never in Alice's listing.
    const bobFn = await bob.registerFunction({ source: "function b() { return 1; }", entryPoint: "b" });
    const bobEp = await stack.startEndpoint("bob", "bob-ep", { workers: 1 });
    await bob.submitBatch([{ functionId: bobFn, endpointId: bobEp.endpointId() }]);
    for await (const o of alice.results(submitted.map((s) => s.id))) void o;
  }, 120_000);

  afterAll(async () => {
    alice?.close();
    bob?.close();
    await stack?.stop();
  });

  const http = async (method: string, path: string, body?: unknown, token = aliceToken) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, type: res.headers.get("content-type") ?? "", text: await res.text() };
  };
  const httpJson = async (method: string, path: string, body?: unknown) => {
    const r = await http(method, path, body);
    return { status: r.status, json: JSON.parse(r.text) as Answer };
  };

  it("lists every task of the caller once, newest first, page by page", async () => {
    const seen: TaskSummaryInfo[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await alice.listTasks({ limit: 40, ...(cursor ? { cursor } : {}) });
      seen.push(...page.tasks);
      cursor = page.nextCursor;
      pages++;
    } while (cursor && pages < 20);
    expect(seen.map((t) => t.id)).toEqual(submitted.map((s) => s.id).reverse());
    expect(pages).toBeGreaterThanOrEqual(4);
    const one = seen.find((t) => t.id === submitted[0]!.id)!;
    expect(one).toMatchObject({ functionId: okFn, endpointId, state: "success", terminal: true });
    expect(one.completedAt!.getTime()).toBeGreaterThanOrEqual(one.createdAt.getTime());
    // Bob sees only his own.
    const bobs = await bob.listTasks();
    expect(bobs.tasks).toHaveLength(1);
    expect(bobs.nextCursor).toBeUndefined();
  });

  it("filters by state, function, group and time", async () => {
    const failed = await alice.listTasks({ states: ["failed"] });
    expect(failed.tasks.map((t) => t.id).sort()).toEqual(
      submitted
        .filter((s) => s.fn === failFn)
        .map((s) => s.id)
        .sort(),
    );
    expect(failed.nextCursor).toBeUndefined();
    const ofFail = await alice.listTasks({ functionId: failFn });
    expect(ofFail.tasks).toHaveLength(5);
    const group = submitted[0]!.group;
    const inGroup = [];
    for await (const t of alice.iterateTasks({ groupId: group })) inGroup.push(t.id);
    expect(inGroup.sort()).toEqual(
      submitted
        .filter((s) => s.group === group)
        .map((s) => s.id)
        .sort(),
    );
    // Created from the third submission on: the last 70 and the single run after it.
    const third = submitted[77]!;
    const recent = await alice.listTasks({ createdAfter: new Date(third.at), limit: 1000 });
    expect(recent.tasks.map((t) => t.id)).toEqual(
      submitted
        .slice(77)
        .map((s) => s.id)
        .reverse(),
    );
    const older = await alice.listTasks({ createdBefore: new Date(third.at), limit: 1000 });
    expect(older.tasks.map((t) => t.id)).toEqual(
      submitted
        .slice(0, 77)
        .map((s) => s.id)
        .reverse(),
    );
    // A running task is listed as running, then cancelled.
    const running = await alice.run(slowFn, endpointId, []);
    for (let i = 0; i < 100; i++) {
      if ((await alice.getTask(running)).state === "running") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const live = await alice.listTasks({ states: ["running"] });
    expect(live.tasks.map((t) => t.id)).toEqual([running]);
    await alice.cancel([running]);
    expect((await alice.listTasks({ limit: 1 })).tasks[0]).toMatchObject({ id: running, state: "cancelled" });
    await expect(alice.listTasks({ states: ["finished" as never] })).rejects.toThrow(/not a task state/);
    await expect(alice.listTasks({ cursor: "bogus" })).rejects.toThrow(/cursor/);
  }, 60_000);

  it("prints a table and JSON from `fabric task list`", async () => {
    const out: string[] = [];
    const io = {
      stdout: (s: string) => void out.push(s),
      stderr: () => undefined,
      env: {},
      // runCli closes the client it made when it ends: a client of its own each time.
      connect: () => new Client({ address: stack.broker.address, token: aliceToken }),
    };
    expect(await runCli(["task", "list", "--state", "failed", "--limit", "3"], io)).toBe(0);
    const table = out.join("");
    // Not a terminal: plain columns, no box lines.
    expect(table).toMatch(/^ID\s+STATE\s+FUNCTION/m);
    expect(table).not.toMatch(/[│┌─]/);
    expect(table.match(/failed/g)).toHaveLength(3);
    expect(table).toContain("more: fabric task list --cursor");
    out.length = 0;
    expect(await runCli(["task", "list", "--function", failFn, "--json"], io)).toBe(0);
    const doc = JSON.parse(out.join("")) as { tasks: { id: string }[]; nextCursor: string | null };
    expect(doc.tasks).toHaveLength(5);
    expect(doc.nextCursor).toBeNull();
    expect(await runCli(["task", "list", "--state", "done"], io)).toBe(2);
  });

  it("lists over HTTP with the same filters, and answers a bad query with a JSON 400", async () => {
    const page = await httpJson("GET", `/v1/tasks?state=failed&limit=2`);
    expect(page.status).toBe(200);
    expect(page.json.tasks).toHaveLength(2);
    expect(page.json.tasks[0]!.state).toBe("failed");
    const rest = await httpJson("GET", `/v1/tasks?state=failed&cursor=${page.json.nextCursor}`);
    expect(rest.json.tasks).toHaveLength(3);
    expect(rest.json.nextCursor).toBe("");
    const both = await httpJson("GET", `/v1/tasks?state=failed,cancelled&functionId=${failFn}`);
    expect(both.json.tasks).toHaveLength(5);
    for (const bad of [
      "state=done",
      "limit=0",
      "limit=x",
      "createdAfterMs=yesterday",
      "colour=red",
      "cursor=%%%",
    ]) {
      const r = await httpJson("GET", `/v1/tasks?${bad}`);
      expect(r.status, bad).toBe(400);
      expect(r.json.code).toBe("INVALID_ARGUMENT");
    }
  });

  it("shows an endpoint's owner the unfinished tasks on it, whoever submitted them", async () => {
    const shared = await http("POST", `/v1/endpoints/${endpointId}/policy`, { sharedWith: ["bob"] });
    expect(shared.status).toBe(200);
    const bobSleep = await bob.registerShellFunction("sleep 20");
    const mine = (
      await alice.submitBatch(Array.from({ length: 6 }, () => ({ functionId: slowFn, endpointId })))
    ).taskIds;
    const his = (
      await bob.submitBatch(Array.from({ length: 2 }, () => ({ functionId: bobSleep, endpointId })))
    ).taskIds;
    try {
      let view = await alice.listEndpointTasks(endpointId);
      // Up to 30 s: the task the test before cancelled may hold a worker until its worker is
      // stopped (or its 20 s sleep ends).
      for (let i = 0; i < 300 && view.tasks.filter((t) => t.state === "running").length < 4; i++) {
        await new Promise((r) => setTimeout(r, 100));
        view = await alice.listEndpointTasks(endpointId);
      }
      expect(view.queued + view.taken).toBe(8);
      expect(view.tasks.map((t) => t.id).sort()).toEqual([...mine, ...his].sort());
      expect(
        view.tasks
          .filter((t) => t.owner === "bob")
          .map((t) => t.id)
          .sort(),
      ).toEqual([...his].sort());
      expect(view.tasks.filter((t) => t.state === "running")).toHaveLength(4);
      const limited = await alice.listEndpointTasks(endpointId, { limit: 3 });
      expect(limited.tasks).toHaveLength(3);
      // Over HTTP too; bob may submit to the endpoint, not look at everyone's tasks on it.
      const r = await http("GET", `/v1/endpoints/${endpointId}/tasks?limit=2`);
      const doc = JSON.parse(r.text) as {
        queuedCount: number;
        takenCount: number;
        tasks: { state: string }[];
      };
      expect(doc.tasks).toHaveLength(2);
      expect(doc.queuedCount + doc.takenCount).toBe(8);
      await expect(bob.listEndpointTasks(endpointId)).rejects.toMatchObject({ code: "PERMISSION_DENIED" });
    } finally {
      await alice.cancel(mine);
      await bob.cancel(his);
    }
  }, 60_000);

  it("streams results as Server-Sent Events and answers a long-poll", async () => {
    const ids = (
      await alice.submitBatch([0, 1, 2].map((i) => ({ functionId: okFn, endpointId, args: [i * 10] })))
    ).taskIds;
    const res = await fetch(`${base}/v1/tasks/watch`, {
      method: "POST",
      headers: { authorization: `Bearer ${aliceToken}`, "content-type": "application/json" },
      body: JSON.stringify({ taskIds: ids }),
    });
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const text = await res.text();
    const events = text
      .split("\n\n")
      .filter((b) => b.startsWith("event:"))
      .map((b) => {
        const [ev, data] = b.split("\n");
        return {
          event: ev!.slice("event: ".length),
          data: JSON.parse(data!.slice("data: ".length)) as Summary & { result: unknown },
        };
      });
    expect(events.map((e) => e.event)).toEqual(["task", "task", "task", "done"]);
    expect(
      events
        .slice(0, 3)
        .map((e) => e.data.result)
        .sort(),
    ).toEqual([0, 10, 20]);
    // The query form, for EventSource; an unknown id fails before the stream starts.
    const q = await http("GET", `/v1/tasks/watch?taskId=${ids.join(",")}`);
    expect(q.type).toContain("text/event-stream");
    expect(q.text.match(/event: task/g)).toHaveLength(3);
    const unknown = await http("GET", `/v1/tasks/watch?taskId=${randomUUID()}`);
    expect(unknown.status).toBe(404);
    expect(unknown.type).toContain("application/json");

    // Long-poll: a slow task keeps it waiting until the timeout; a finished one answers at once.
    const slow = await alice.run(slowFn, endpointId, []);
    const t0 = Date.now();
    const waited = await httpJson("POST", "/v1/tasks/wait", { taskIds: [slow], timeoutMs: 700 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(650);
    expect(waited.json).toMatchObject({ tasks: [], pendingIds: [slow] });
    const quick = await httpJson("POST", "/v1/tasks/wait", { taskIds: [slow, ids[0]], timeoutMs: 10_000 });
    expect(quick.json.tasks.map((t) => t.id)).toEqual([ids[0]]);
    expect(quick.json.pendingIds).toEqual([slow]);
    await alice.cancel([slow]);
    const all = await httpJson("POST", "/v1/tasks/wait", {
      taskIds: [slow, ...ids],
      all: true,
      timeoutMs: 10_000,
    });
    expect(all.json.tasks).toHaveLength(4);
    expect(all.json.pendingIds).toEqual([]);
  }, 60_000);
});
