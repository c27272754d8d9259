import path from "node:path";

import { describe, expect, it } from "vitest";

import { countingSource, executions, expectEachOnce, lines, until } from "./support/fault.js";
import { useFabric } from "./support/fabric-suite.js";

describe("resilience: stopped endpoints, broker restarts, agent crashes", () => {
  const stack = useFabric();

  /**
   * A fresh endpoint `name` of alice's, and `n` tasks for it of the counting function (which logs
   * each execution to `log` in the fabric's directory, then sleeps `sleepMs`), not yet submitted.
   */
  async function countingTasks(name: string, log: string, n: number, sleepMs: number) {
    const ep = await stack.fabric.startEndpoint("alice", name);
    const endpointId = ep.endpointId();
    const logFile = path.join(stack.fabric.dir, log);
    const functionId = await stack.client.registerFunction({ source: countingSource, entryPoint: "work" });
    const tasks = Array.from({ length: n }, (_, i) => ({
      functionId,
      endpointId,
      args: [i, logFile, sleepMs],
    }));
    return { ep, logFile, tasks };
  }

  /** A batch of 2,000 counting tasks (2 ms each) on a fresh endpoint `name`, once `started` of them ran. */
  async function batchUnderWay(name: string, log: string, started: number) {
    const { ep, logFile, tasks } = await countingTasks(name, log, 2_000, 2);
    const { taskIds } = await stack.client.submitBatch(tasks);
    await until(() => lines(logFile).length >= started, 60_000, `${started} executions`);
    return { ep, logFile, taskIds };
  }

  it("tasks submitted while the endpoint is stopped wait, and run when it starts", async () => {
    const { client } = stack;
    const ep = await stack.fabric.startEndpoint("alice", "sleepy");
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
    const { ep, taskIds } = await batchUnderWay("steady", "broker-restart.log", 200);
    await stack.fabric.broker.restart();
    // Each task streams one result, a success, and ends once.
    await expectEachOnce(stack.client, taskIds, 120_000);
    await ep.stop();
  }, 240_000);

  it("an agent killed with SIGKILL mid-batch, then restarted: each task reaches exactly one terminal state", async () => {
    const { ep, logFile, taskIds } = await batchUnderWay("crashy", "agent-kill.log", 300);
    await ep.kill();
    // Its managers notice the lost agent and exit; nothing may keep running for it.
    await ep.launch();

    // Each task streams one result and has one terminal state in its history; tasks the dead agent
    // held un-acked are delivered again to the new one and run to success.
    await expectEachOnce(stack.client, taskIds, 180_000);
    const executed = executions(logFile);
    expect(executed.size).toBe(taskIds.length);
    await ep.stop();
  }, 300_000);

  it("a run lost with its agent counts: attempts and the history show both runs", async () => {
    const { ep, logFile, tasks } = await countingTasks("lossy", "lost-run.log", 1, 4_000);
    const [taskId] = (await stack.client.submitBatch(tasks)).taskIds;
    await until(
      async () => (await stack.client.getTask(taskId!)).state === "running",
      30_000,
      "the task's start recorded",
    );
    await ep.kill();
    // The new agent's consumer delivers it as a first delivery; the record says a run began.
    await ep.launch();
    expect(await stack.client.waitForResult(taskId!, { timeoutMs: 60_000 })).toBe(0);
    const info = await stack.client.getTask(taskId!);
    expect(info.attempts).toBe(2);
    expect(info.history.some((h) => /^attempt 1 did not finish/.test(h.detail))).toBe(true);
    expect(executions(logFile).get("0")).toBe(2);
    await ep.stop();
  }, 120_000);

  it("the broker killed in the middle of a submit: the SDK's retry with the same idempotency key creates no task twice", async () => {
    const { ep, logFile, tasks } = await countingTasks("submitted", "submit-kill.log", 5_000, 0);
    const n = tasks.length;
    const submitting = stack.client.submitBatch(tasks);
    // Kill the broker while the call is in flight, then bring it back on the same address.
    await new Promise((r) => setTimeout(r, 150));
    await stack.fabric.broker.kill();
    const restarted = stack.fabric.broker.restart();
    const { groupId, taskIds } = await submitting;
    await restarted;
    expect(new Set(taskIds).size).toBe(n);
    let ok = 0;
    for await (const o of stack.client.results({ groupId }, { timeoutMs: 120_000 })) if (o.ok) ok++;
    expect(ok).toBe(n);
    // Every task ran exactly once: none was created (and queued) twice.
    const runs = lines(logFile).map((l) => l.split(" ")[0]);
    expect(runs).toHaveLength(n);
    expect(new Set(runs).size).toBe(n);
    await ep.stop();
  }, 240_000);
});
