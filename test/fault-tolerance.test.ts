import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";

import { Bus } from "../common/index.js";
import type { EndpointProcess } from "../devkit/index.js";
import { useFabric } from "./support/fabric-suite.js";
import {
  countingSource,
  expectEachOnce,
  expectRanAtLeastOnce,
  lines,
  rerunsOfFinished,
  until,
} from "./support/fault.js";
import { TcpProxy } from "./support/tcp-proxy.js";

/**
 * Issue 5, "nothing lost": the core invariant (every accepted task reaches exactly one terminal
 * state, with at most one visible result) under a NATS crash, a network cut between the agent and
 * NATS, and repeated agent crashes. Every part is real: nats-server (file store), the broker and
 * the agent run as processes; agents reach NATS through a TCP proxy the test can cut.
 */
describe("fault tolerance: NATS crash, network cut, agent crashes", () => {
  let proxy: TcpProxy;
  const stack = useFabric({
    name: "fault",
    // The broker reaches NATS directly; agents go through the proxy.
    agentLink: async (nats) => (proxy = await TcpProxy.start(nats.port)),
    brokerConfig: { endpointOfflineAfterSeconds: 3 },
  });
  let functionId: string;
  /** Figures for the report, printed at the end. */
  const report: Record<string, unknown> = {};

  beforeAll(async () => {
    functionId = await stack.client.registerFunction({ source: countingSource, entryPoint: "work" });
  });

  afterAll(() => {
    console.log(`fault-tolerance figures: ${JSON.stringify(report)}`);
  });

  /** Scenario `name`'s endpoint (`fault-NAME`, of `workers` workers) and its counting function's log. */
  async function startScenario(name: string, workers: number) {
    const ep = await stack.fabric.startEndpoint("alice", `fault-${name}`, {
      workers,
      extra: { heartbeatIntervalSeconds: 1 },
    });
    return { ep, endpointId: ep.endpointId(), logFile: path.join(stack.fabric.dir, `${name}.log`) };
  }

  /** On failure: what states the tasks are in, and the ends of the broker's and agent's logs. */
  async function diagnose(taskIds: readonly string[], ep: EndpointProcess): Promise<void> {
    const states = new Map<string, number>();
    for (let i = 0; i < taskIds.length; i += 5_000) {
      for (const t of await stack.client.getTasks(taskIds.slice(i, i + 5_000)))
        states.set(t.state, (states.get(t.state) ?? 0) + 1);
    }
    console.log(`task states: ${JSON.stringify(Object.fromEntries(states))}`);
    const nc = await connect({ servers: stack.fabric.nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      for await (const info of jsm.consumers.list(Bus.taskStream)) {
        const { num_pending, num_ack_pending, num_waiting, num_redelivered, delivered, ack_floor } = info;
        console.log(
          `task consumer ${info.name}: ${JSON.stringify({ num_pending, num_ack_pending, num_waiting, num_redelivered, delivered, ack_floor })}`,
        );
      }
    } finally {
      await nc.close();
    }
    console.log(`broker log:\n${stack.fabric.broker.process?.output.slice(-6000) ?? ""}`);
    console.log(`agent log:\n${ep.process?.output.slice(-6000) ?? ""}`);
    writeFileSync(path.join(tmpdir(), `fabric-fault-agent-${Date.now()}.log`), ep.process?.output ?? "");
  }

  /**
   * The core invariant for `taskIds` (see expectEachOnce; on failure, what the tasks and queues
   * look like), and how many extra executions `logFile` shows.
   */
  async function expectCompleted(taskIds: readonly string[], ep: EndpointProcess, logFile: string) {
    const tally = await expectEachOnce(stack.client, taskIds, 120_000).catch(async (err: unknown) => {
      await diagnose(taskIds, ep);
      throw err;
    });
    const extraRuns = expectRanAtLeastOnce(tally, logFile);
    // A run lost with its agent runs again; a task whose outcome was recorded never does.
    const reranFinished = rerunsOfFinished(tally, logFile);
    expect(reranFinished, "runs of tasks begun after their outcome was recorded").toBe(0);
    return { tally, extraRuns, reranFinished };
  }

  /** `n` tasks of the counting function, keyed `prefix-i`. */
  function tasks(
    endpointId: string,
    logFile: string,
    prefix: string,
    from: number,
    n: number,
    sleepMs: number,
  ) {
    return Array.from({ length: n }, (_, k) => ({
      functionId,
      endpointId,
      args: [`${prefix}-${from + k}`, logFile, sleepMs],
    }));
  }

  it("A: nats-server SIGKILLed and restarted mid-batch: every accepted task completes exactly once", async () => {
    const { ep, endpointId, logFile } = await startScenario("a", 2);
    const accepted: string[] = [];
    let refused = 0;
    let lastRefusal = "";
    let next = 0;
    let submitting = true;
    let slowestSubmitMs = 0;
    // Users keep submitting through the crash: only what the broker acknowledged counts as accepted.
    const submitter = (async () => {
      while (submitting) {
        try {
          const t0 = Date.now();
          const { taskIds } = await stack.client.submitBatch(tasks(endpointId, logFile, "a", next, 100, 1));
          slowestSubmitMs = Math.max(slowestSubmitMs, Date.now() - t0);
          accepted.push(...taskIds);
        } catch (err) {
          refused++;
          lastRefusal = (err as Error).message;
          await new Promise((r) => setTimeout(r, 100));
        }
        next += 100;
        // About 1,000 tasks/s offered: more than two workers run, without piling up a long tail.
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    await until(() => lines(logFile).length >= 300, 60_000, "300 executions before the crash");
    await stack.fabric.nats.kill();
    const acceptedAtCrash = accepted.length;
    // Down until a user has been refused (or a few submissions went by), then back on the same store.
    const downSince = Date.now();
    await until(() => refused > 0 || Date.now() - downSince > 3_000, 10_000, "a refused submission");
    await stack.fabric.nats.restart();
    const restartedAt = Date.now();
    const ranAtRestart = lines(logFile).length;
    await until(() => lines(logFile).length >= ranAtRestart + 20, 30_000, "tasks flowing after the restart");
    const restartToFlowingMs = Date.now() - restartedAt;
    await until(
      () => accepted.length >= acceptedAtCrash + 500,
      60_000,
      "500 tasks accepted after the restart",
    );
    submitting = false;
    await submitter;

    const { tally, extraRuns, reranFinished } = await expectCompleted(accepted, ep, logFile);
    report["A"] = {
      accepted: accepted.length,
      refused,
      lastRefusal,
      visible: tally.seen.size,
      reExecuted: extraRuns,
      reranFinished,
      restartToFlowingMs,
      slowestSubmitMs,
    };
    await ep.stop();
  }, 240_000);

  it("A2: nats-server and the agent SIGKILLed together, both restarted: no task whose outcome was recorded runs again", async () => {
    // A killed nats-server may restore queue messages acked just before it died, and the new
    // agent remembers nothing of what the old one finished: it must ask before running them.
    const { ep, endpointId, logFile } = await startScenario("a2", 2);
    const { taskIds } = await stack.client.submitBatch(tasks(endpointId, logFile, "a2", 0, 3_000, 1));
    await until(() => lines(logFile).length >= 1_500, 60_000, "1,500 executions before the crash");
    await Promise.all([stack.fabric.nats.kill(), ep.kill()]);
    await stack.fabric.nats.restart();
    await ep.launch();
    const { extraRuns, reranFinished } = await expectCompleted(taskIds, ep, logFile);
    report["A2"] = { tasks: taskIds.length, reExecuted: extraRuns, reranFinished };
    await ep.stop();
  }, 180_000);

  it("B: the agent cut off from NATS for a while: users keep submitting, everything completes after the link returns", async () => {
    const { ep, endpointId, logFile } = await startScenario("b", 2);
    const accepted: string[] = [];
    accepted.push(...(await stack.client.submitBatch(tasks(endpointId, logFile, "b", 0, 1_000, 1))).taskIds);
    await until(() => lines(logFile).length >= 200, 60_000, "200 executions before the cut");
    proxy.cut();
    await ep.process!.waitFor(/disconnected from NATS/, 15_000);
    // The broker shows the endpoint offline once its heartbeats stop; users can still submit.
    await until(
      async () => (await stack.client.getEndpoint(endpointId)).status.connection === "offline",
      20_000,
      "the endpoint shown offline",
    );
    const ranDuringCut = lines(logFile).length;
    for (let k = 0; k < 5; k++) {
      accepted.push(
        ...(await stack.client.submitBatch(tasks(endpointId, logFile, "b", 1_000 + k * 200, 200, 1))).taskIds,
      );
    }
    // Nothing new starts while the agent cannot reach its queue (at most what it already held).
    expect(lines(logFile).length - ranDuringCut).toBeLessThanOrEqual(20);
    const cutMs = Date.now();
    proxy.restore();
    await until(
      () => lines(logFile).length > ranDuringCut + 20,
      30_000,
      "tasks flowing after the link returned",
    );
    report["B"] = { linkRestoredToFlowingMs: Date.now() - cutMs };
    const { extraRuns, reranFinished } = await expectCompleted(accepted, ep, logFile);
    report["B"] = {
      ...(report["B"] as object),
      accepted: accepted.length,
      reExecuted: extraRuns,
      reranFinished,
    };
    await ep.stop();
  }, 180_000);

  it("B2: a cancellation sent while the agent is cut off from NATS stops the task once the link returns", async () => {
    const { ep, endpointId, logFile } = await startScenario("b2", 1);
    const [long] = (await stack.client.submitBatch(tasks(endpointId, logFile, "b2", 0, 1, 120_000))).taskIds;
    await until(() => lines(logFile).length >= 1, 30_000, "the long task running");
    proxy.cut();
    await ep.process!.waitFor(/disconnected from NATS/, 15_000);
    await stack.client.cancel([long!]);
    expect((await stack.client.getTask(long!)).state).toBe("cancelled");
    proxy.restore();
    await ep.process!.waitFor(/tasks that ended while NATS was unreachable are stopped/, 30_000);
    // The only worker is free again: the next task runs at once, not after the cancelled one's 2 min.
    const [next] = (await stack.client.submitBatch(tasks(endpointId, logFile, "b2", 1, 1, 0))).taskIds;
    expect(await stack.client.waitForResult(next!, { timeoutMs: 30_000 })).toBe("b2-1");
    expect((await stack.client.getTask(long!)).state).toBe("cancelled");
    await ep.stop();
  }, 120_000);

  it("C: the agent SIGKILLed twice during 5,000 tasks: each reaches exactly one terminal state; recovery is quick", async () => {
    const { ep, endpointId, logFile } = await startScenario("c", 4);
    const n = 5_000;
    const { taskIds } = await stack.client.submitBatch(tasks(endpointId, logFile, "c", 0, n, 0));
    const recoveries: Array<{ readyMs: number; flowingMs: number }> = [];
    for (const at of [1_200, 3_000]) {
      await until(() => lines(logFile).length >= at, 90_000, `${at} executions`);
      await ep.kill();
      // Its managers notice the lost agent and exit; once they are gone nothing more runs for it.
      const t0 = Date.now();
      const before = lines(logFile).length;
      await ep.launch();
      const readyMs = Date.now() - t0;
      await until(() => lines(logFile).length >= before + 20, 30_000, "tasks flowing after the restart");
      recoveries.push({ readyMs, flowingMs: Date.now() - t0 });
    }
    const { extraRuns, reranFinished } = await expectCompleted(taskIds, ep, logFile);
    report["C"] = { tasks: n, recoveries, reExecuted: extraRuns, reranFinished };
    for (const r of recoveries) expect(r.flowingMs).toBeLessThanOrEqual(10_000);
    await ep.stop();
  }, 240_000);
}, 600_000);
