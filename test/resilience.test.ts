import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Client } from "../sdk/index.js";
import { LocalFabric, until } from "../devkit/index.js";

/** A function that records each execution in a file, so duplicate executions show. */
const countingSource = `
async function work(i, logFile, sleepMs) {
  require("node:fs").appendFileSync(logFile, i + "\\n");
  await new Promise((r) => setTimeout(r, sleepMs));
  return i;
}`;

describe("resilience: stopped endpoints, broker restarts, agent crashes", () => {
  let stack: LocalFabric;
  let client: Client;
  let scratch: string;

  beforeAll(async () => {
    stack = await LocalFabric.start();
    client = new Client({ address: stack.broker.address, token: await stack.broker.token("alice") });
    scratch = mkdtempSync(path.join(tmpdir(), "fabric-resilience-"));
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await stack?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  it("tasks submitted while the endpoint is stopped wait, and run when it starts", async () => {
    const ep = await stack.startEndpoint("alice", "sleepy");
    const endpointId = ep.endpointId();
    await ep.stop();
    const functionId = await client.registerFunction((x: number) => x + 1);
    const { groupId, taskIds } = await client.submitBatch(
      Array.from({ length: 50 }, (_, i) => ({ functionId, endpointId, args: [i] })),
    );
    const before = await client.getTasks(taskIds.slice(0, 5));
    for (const t of before) expect(t.state).toBe("waiting-for-endpoint");
    expect((await client.getEndpoint(endpointId)).status.connection).toBe("offline");

    await ep.launch();
    let ok = 0;
    for await (const o of client.results({ groupId }, { timeoutMs: 60_000 })) if (o.ok) ok++;
    expect(ok).toBe(50);
    await ep.stop();
  }, 120_000);

  it("a broker restarted in the middle of a batch: every task still completes", async () => {
    const ep = await stack.startEndpoint("alice", "steady");
    const endpointId = ep.endpointId();
    const logFile = path.join(scratch, "broker-restart.log");
    const functionId = await client.registerFunction({ source: countingSource, entryPoint: "work" });
    const n = 2_000;
    const { groupId, taskIds } = await client.submitBatch(
      Array.from({ length: n }, (_, i) => ({ functionId, endpointId, args: [i, logFile, 2] })),
    );
    await until(() => lines(logFile).length >= 200, 60_000, "200 executions");
    await stack.broker.restart();
    const seen = new Set<string>();
    let ok = 0;
    for await (const o of client.results({ groupId }, { timeoutMs: 120_000 })) {
      expect(seen.has(o.taskId)).toBe(false);
      seen.add(o.taskId);
      if (o.ok) ok++;
    }
    expect(ok).toBe(n);
    const tasks = await client.getTasks(taskIds);
    for (const t of tasks) expect(t.state).toBe("success");
    await ep.stop();
  }, 240_000);

  it("an agent killed with SIGKILL mid-batch, then restarted: each task reaches exactly one terminal state", async () => {
    const ep = await stack.startEndpoint("alice", "crashy");
    const endpointId = ep.endpointId();
    const logFile = path.join(scratch, "agent-kill.log");
    const functionId = await client.registerFunction({ source: countingSource, entryPoint: "work" });
    const n = 2_000;
    const { groupId, taskIds } = await client.submitBatch(
      Array.from({ length: n }, (_, i) => ({ functionId, endpointId, args: [i, logFile, 2] })),
    );
    await until(() => lines(logFile).length >= 300, 60_000, "300 executions");
    await ep.kill();
    // Its managers notice the lost agent and exit; nothing may keep running for it.
    await ep.launch();

    const seen = new Set<string>();
    let ok = 0;
    for await (const o of client.results({ groupId }, { timeoutMs: 180_000 })) {
      expect(seen.has(o.taskId)).toBe(false);
      seen.add(o.taskId);
      if (o.ok) ok++;
    }
    expect(seen.size).toBe(n);
    const tasks = await client.getTasks(taskIds);
    let terminalTransitions = 0;
    for (const t of tasks) {
      const terminal = t.history.filter((h) =>
        ["success", "failed", "cancelled", "expired"].includes(h.state),
      );
      expect(terminal).toHaveLength(1);
      terminalTransitions += terminal.length;
    }
    expect(terminalTransitions).toBe(n);
    // Tasks the dead agent held un-acked are delivered again to the new one and run to success.
    expect(ok).toBe(n);
    const executed = new Set(lines(logFile));
    expect(executed.size).toBe(n);
    await ep.stop();
  }, 300_000);

  it("the broker killed in the middle of a submit: the SDK's retry with the same idempotency key creates no task twice", async () => {
    const ep = await stack.startEndpoint("alice", "submitted");
    const endpointId = ep.endpointId();
    const logFile = path.join(scratch, "submit-kill.log");
    const functionId = await client.registerFunction({ source: countingSource, entryPoint: "work" });
    const n = 5_000;
    const submitting = client.submitBatch(
      Array.from({ length: n }, (_, i) => ({ functionId, endpointId, args: [i, logFile, 0] })),
    );
    // Kill the broker while the call is in flight, then bring it back on the same address.
    await new Promise((r) => setTimeout(r, 150));
    await stack.broker.kill();
    const restarted = stack.broker.restart();
    const { groupId, taskIds } = await submitting;
    await restarted;
    expect(new Set(taskIds).size).toBe(n);
    let ok = 0;
    for await (const o of client.results({ groupId }, { timeoutMs: 120_000 })) if (o.ok) ok++;
    expect(ok).toBe(n);
    // Every task ran exactly once: none was created (and queued) twice.
    const runs = lines(logFile);
    expect(runs).toHaveLength(n);
    expect(new Set(runs).size).toBe(n);
    await ep.stop();
  }, 240_000);
});

function lines(file: string): string[] {
  try {
    return readFileSync(file, "utf8").split("\n").filter(Boolean);
  } catch {
    return [];
  }
}
