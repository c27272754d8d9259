import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Bus } from "../common/index.js";
import { NatsCluster, BrokerProcess, EndpointProcess } from "../devkit/index.js";
import { Client } from "../sdk/index.js";
import {
  countingSource,
  expectEachOnce,
  expectRanAtLeastOnce,
  lines,
  rerunsOfFinished,
  until,
} from "./support/fault.js";

/**
 * Issue 5, scale-out: a 3-node NATS cluster (JetStream on each, R3 streams, buckets and object
 * store) and two broker replicas sharing one signing key. A batch keeps flowing while the node
 * leading the task stream and one broker are killed (SIGKILL); nothing accepted is lost.
 */
describe("fault tolerance on a NATS cluster with two broker replicas", () => {
  let dir: string;
  let cluster: NatsCluster;
  let brokerA: BrokerProcess;
  let brokerB: BrokerProcess;
  let clientA: Client;
  let clientB: Client;
  let endpoint: EndpointProcess | undefined;
  const report: Record<string, unknown> = {};

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "fabric-fault-cluster-"));
    cluster = await NatsCluster.start({ size: 3, dir: path.join(dir, "nats") });
    const nats = { servers: cluster.urls, replicas: 3 };
    brokerA = await BrokerProcess.start({
      natsUrl: cluster.urls,
      dir: path.join(dir, "broker"),
      extra: { nats },
    });
    brokerB = await BrokerProcess.start({
      natsUrl: cluster.urls,
      dir: path.join(dir, "broker"),
      keyFile: brokerA.keyFile,
      extra: { nats },
    });
    // Client A names both replicas, A first: a call in flight when A is killed goes to B (with
    // only A's address it kept retrying it for the SDK's 60 s window, and the test's submitter
    // stalled with it). Client B names B only: the survivor.
    const token = await brokerA.token("alice");
    clientA = new Client({ address: [brokerA.address, brokerB.address], token, connectTimeoutMs: 2_000 });
    clientB = new Client({ address: brokerB.address, token });
  }, 90_000);

  afterAll(async () => {
    clientA?.close();
    clientB?.close();
    await endpoint?.stop().catch(() => undefined);
    await brokerA?.stop().catch(() => undefined);
    await brokerB?.stop().catch(() => undefined);
    await cluster?.stop().catch(() => undefined);
    console.log(`fault-cluster figures: ${JSON.stringify(report)}`);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Waits until `logFile` shows 100 executions more than now: tasks flow again after `what`. */
  async function untilFlowingAfter(
    logFile: string,
    what: string,
    accepted: readonly string[],
  ): Promise<void> {
    const ran = lines(logFile).length;
    await until(() => lines(logFile).length >= ran + 100, 60_000, `tasks flowing after ${what}`).catch(
      async (err: Error) => {
        await explain(accepted, `${ran} executions when it began, ${lines(logFile).length} now`);
        throw err;
      },
    );
  }

  /** Prints what a failed wait needs to be understood: task states and the processes' warnings. */
  async function explain(accepted: readonly string[], context: string): Promise<void> {
    const states = new Map<string, number>();
    const stuck: string[] = [];
    try {
      for (let i = 0; i < accepted.length; i += 1000)
        for (const t of await clientB.getTasks(accepted.slice(i, i + 1000))) {
          states.set(t.state, (states.get(t.state) ?? 0) + 1);
          if (t.state !== "success" && stuck.length < 3) stuck.push(JSON.stringify(t));
        }
    } catch (err) {
      stuck.push(`(cannot read the tasks: ${(err as Error).message})`);
    }
    console.log("DEBUG", context, "states", JSON.stringify([...states]));
    console.log("DEBUG stuck", stuck.join("\n"));
    const logs = { brokerA, brokerB, endpoint };
    for (const [name, proc] of Object.entries(logs))
      console.log(
        `DEBUG log of ${name}`,
        (proc?.process?.output ?? "")
          .split("\n")
          .filter((x) => /"level":(40|50|60)/.test(x))
          .slice(-25)
          .join("\n"),
      );
  }

  it("streams and buckets are replicated three times", async () => {
    const nc = await connect({ servers: cluster.urls });
    try {
      const jsm = await jetstreamManager(nc);
      for (const stream of [Bus.taskStream, Bus.resultStream, `KV_${Bus.tasksBucket}`]) {
        const info = await jsm.streams.info(stream);
        expect(info.config.num_replicas, stream).toBe(3);
        expect(info.cluster?.replicas?.length ?? 0, stream).toBe(2);
      }
    } finally {
      await nc.close();
    }
  }, 30_000);

  it("one NATS node and one broker killed mid-batch: the batch keeps flowing and nothing accepted is lost", async () => {
    endpoint = await EndpointProcess.start({
      home: path.join(dir, "home-alice"),
      name: "cluster-ep",
      broker: brokerA.address,
      token: await brokerA.token("alice"),
      workers: 2,
      blocks: 1,
    });
    const endpointId = endpoint.endpointId();
    // Its payload bucket (created when it connected) is replicated too.
    const admin = await connect({ servers: cluster.urls });
    try {
      const info = await (await jetstreamManager(admin)).streams.info(`OBJ_${Bus.payloadBucket(endpointId)}`);
      expect(info.config.num_replicas).toBe(3);
    } finally {
      await admin.close();
    }
    const functionId = await clientA.registerFunction({ source: countingSource, entryPoint: "work" });
    const logFile = path.join(dir, "cluster.log");
    const accepted: string[] = [];
    let refused = 0;
    let next = 0;
    let submitting = true;
    let brokerADown = false;
    let lastRefusal = "";
    let current = "";
    const submitter = (async () => {
      for (let round = 0; submitting; round++) {
        // Alternate between the replicas while both are up, then use the survivor.
        const client = brokerADown || round % 2 === 1 ? clientB : clientA;
        const batch = Array.from({ length: 100 }, (_, k) => ({
          functionId,
          endpointId,
          args: [`d-${next + k}`, logFile, 1],
        }));
        next += 100;
        try {
          current = `${client === clientA ? "A" : "B"} since ${Date.now()}`;
          accepted.push(...(await client.submitBatch(batch)).taskIds);
        } catch (err) {
          refused++;
          lastRefusal = `${client === clientA ? "A" : "B"}: ${(err as Error).message}`;
          await new Promise((r) => setTimeout(r, 100));
        }
        // About 1,000 tasks/s offered: more than the endpoint runs, without a long tail to drain.
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    await until(() => lines(logFile).length >= 300, 60_000, "300 executions before the faults");

    // Kill the node leading the task stream: its replicas must elect a new leader.
    const nc = await connect({ servers: cluster.urls });
    let leader: string | undefined;
    try {
      leader = (await (await jetstreamManager(nc)).streams.info(Bus.taskStream)).cluster?.leader;
    } finally {
      await nc.close();
    }
    const victim = cluster.nodes.find((n) => n.serverName === leader) ?? cluster.nodes[0]!;
    const tNode = Date.now();
    await victim.kill();
    const acceptedAtNodeKill = accepted.length;
    await untilFlowingAfter(logFile, "the node loss", accepted);

    const nodeLossToFlowingMs = Date.now() - tNode;
    brokerADown = true;
    const tBroker = Date.now();
    await brokerA.kill();
    await untilFlowingAfter(logFile, "the broker loss", accepted);
    const brokerLossToFlowingMs = Date.now() - tBroker;
    await until(() => accepted.length >= acceptedAtNodeKill + 500, 90_000, "500 more tasks accepted").catch(
      (err: Error) => {
        throw new Error(
          `${err.message}; ${refused} refused, the last: ${lastRefusal}; in flight: ${current} (now ${Date.now()})`,
        );
      },
    );
    submitting = false;
    await submitter;

    const tDrain = Date.now();
    const tally = await expectEachOnce(clientB, accepted, 150_000).catch(async (err: unknown) => {
      await explain(accepted, `draining, ${refused} refused (the last: ${lastRefusal})`);
      throw err;
    });
    const drainMs = Date.now() - tDrain;
    const extraRuns = expectRanAtLeastOnce(tally, logFile);
    const reranFinished = rerunsOfFinished(tally, logFile);
    expect(reranFinished, "runs of tasks begun after their outcome was recorded").toBe(0);
    report["D"] = {
      accepted: accepted.length,
      refused,
      lastRefusal,
      killedNode: victim.serverName,
      reExecuted: extraRuns,
      reranFinished,
      nodeLossToFlowingMs,
      brokerLossToFlowingMs,
      drainMs,
    };
  }, 330_000);
}, 400_000);
