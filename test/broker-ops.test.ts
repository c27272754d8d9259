import { createServer, type AddressInfo } from "node:net";
import path from "node:path";

import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";

import { Bus } from "../common/index.js";
import { BrokerProcess, EndpointProcess, LocalFabric, freePort, until } from "../devkit/index.js";
import { Client } from "../sdk/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { failureOf } from "./support/outcomes.js";

describe("broker operations: health, replicas, graceful stop, retention", () => {
  const stack = useFabric({ name: "ops" });

  /**
   * Another broker on the suite's NATS, stopped with the fabric. Every broker on one NATS shares
   * one signing key (replicas must: tokens and message signatures derive from it), unless
   * `keyFile` names another.
   */
  async function replica(name: string, keyFile = stack.fabric.broker.keyFile): Promise<BrokerProcess> {
    const { nats, dir } = stack.fabric;
    return stack.fabric.adopt(
      await BrokerProcess.start({ natsUrl: nats.url, dir: path.join(dir, name), keyFile }),
    );
  }

  /** Two replicas on the suite's NATS, an endpoint of `user`'s on the first, a client on each. */
  async function twoBrokers(user: string) {
    const a = await replica(`${user}-a`);
    const b = await replica(`${user}-b`);
    const token = await a.token(user);
    const ep = await EndpointProcess.start({
      home: path.join(stack.fabric.dir, `home-${user}`),
      name: "ep",
      broker: a.address,
      token,
      workers: 2,
    });
    stack.fabric.endpoints.push(ep);
    return {
      ep,
      a,
      b,
      viaA: new Client({ address: a.address, token }),
      viaB: new Client({ address: b.address, token }),
    };
  }

  it("answers the gRPC health check", async () => {
    const broker = await replica("b0");
    const Health = grpc.makeGenericClientConstructor(healthService, "Health");
    const client = new Health(broker.address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      check(req: object, cb: (err: grpc.ServiceError | null, res: { status: string }) => void): void;
    };
    const res = await new Promise<{ status: string }>((resolve, reject) =>
      client.check({ service: "" }, (err, r) => (err ? reject(err) : resolve(r))),
    );
    expect(res.status).toBe("SERVING");
    client.close();
    // SIGTERM: a graceful stop that exits 0.
    await broker.process!.stop();
    expect((await broker.process!.exited).code).toBe(0);
  });

  it("a broker started with another signing key than its replicas says so loudly", async () => {
    const first = await twoBrokers("keyholder");
    first.viaA.close();
    first.viaB.close();
    const odd = await replica("odd", path.join(stack.fabric.dir, "another-key.pem"));
    await odd.process!.waitFor(/another broker on this NATS signs with a different key/, 10_000);
    await odd.process!.stop();
  }, 60_000);

  it("two brokers on one NATS serve the same users: submit through one, results through the other", async () => {
    const { ep, viaA, viaB } = await twoBrokers("dave");
    try {
      const fid = await viaA.registerFunction((x: number) => x * 2);
      expect((await viaB.getFunction(fid)).id).toBe(fid);
      const { groupId } = await viaA.submitBatch(
        Array.from({ length: 200 }, (_, i) => ({ functionId: fid, endpointId: ep.endpointId(), args: [i] })),
      );
      let sum = 0;
      for await (const o of viaB.results({ groupId }, { timeoutMs: 60_000 }))
        if (o.ok) sum += o.value as number;
      expect(sum).toBe(2 * ((199 * 200) / 2));
    } finally {
      viaA.close();
      viaB.close();
    }
  }, 120_000);

  it("a watch on the submitting broker hears at once of tasks another replica recorded", async () => {
    // Broker A follows the owner's events (a watch is open) when it submits: it then trusts its own
    // cached records instead of reading them, so a result recorded by B must reach it as an event
    // that drops A's stale copy. Were that broken, A's watch would wait for its 2 s fallback read.
    const { ep, viaA, viaB } = await twoBrokers("frank");
    try {
      const sleepy = await viaA.registerFunction(async (ms: number) => new Promise((r) => setTimeout(r, ms)));
      const double = await viaA.registerFunction((x: number) => x * 2);
      const long = await viaA.run(sleepy, ep.endpointId(), [60_000]);
      const follower = viaA.results([long])[Symbol.asyncIterator]();
      const pendingLong = follower.next();
      await new Promise((r) => setTimeout(r, 300)); // A now follows frank's events
      for (let round = 0; round < 3; round++) {
        const { taskIds } = await viaA.submitBatch(
          Array.from({ length: 40 }, (_, i) => ({
            functionId: double,
            endpointId: ep.endpointId(),
            args: [i],
          })),
        );
        // Wait (through B) until all are recorded, half of them by B's result ingest on average.
        for (;;) {
          const infos = await viaB.getTasks(taskIds);
          if (infos.every((t) => t.terminal)) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        const t0 = Date.now();
        let n = 0;
        for await (const o of viaA.results(taskIds, { timeoutMs: 30_000 })) if (o.ok) n++;
        expect(n).toBe(40);
        expect(Date.now() - t0).toBeLessThan(1_900);
      }
      await viaA.cancel([long]);
      await pendingLong;
    } finally {
      viaA.close();
      viaB.close();
    }
  }, 120_000);

  it("an SDK given several broker addresses skips a dead and a silent one, and fails over when its broker dies", async () => {
    const { ep, a, b, viaA, viaB } = await twoBrokers("erin");
    viaA.close();
    viaB.close();
    // Nothing listens on one; the other accepts TCP and never speaks HTTP/2 (a hung host).
    const dead = `127.0.0.1:${await freePort()}`;
    const silent = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const hung = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const token = await a.token("erin");
    const client = new Client({
      address: [dead, hung, a.address, b.address],
      token,
      connectTimeoutMs: 1_000,
    });
    try {
      const t0 = Date.now();
      const fid = await client.registerFunction((x: number) => x + 1);
      expect(Date.now() - t0).toBeLessThan(5_000);
      const run = async (x: number) =>
        client.waitForResult(await client.run(fid, ep.endpointId(), [x]), { timeoutMs: 30_000 });
      expect(await run(1)).toBe(2);
      // The broker in use dies: the next call goes to the other one, within seconds.
      await a.process!.kill();
      const t1 = Date.now();
      expect(await run(2)).toBe(3);
      expect(Date.now() - t1).toBeLessThan(10_000);
    } finally {
      client.close();
      silent.close();
    }
  }, 60_000);

  it("a task past its retention answers expired, then, later, not found; results go with it", async () => {
    // Retention is a property of the buckets, so this broker gets a NATS (a fabric) of its own.
    const retaining = stack.fabric.adopt(
      await LocalFabric.start({
        name: "retention",
        brokerConfig: { resultRetentionSeconds: 2, expiredTaskAnswerSeconds: 3 },
      }),
    );
    const ep = await retaining.startEndpoint("erin", "ep", { workers: 1 });
    const client = await retaining.client("erin");
    const fid = await client.registerFunction(() => "kept for a while");
    const tid = await client.run(fid, ep.endpointId(), []);
    expect(await client.waitForResult(tid, { timeoutMs: 30_000 })).toBe("kept for a while");
    // Past its retention: expired, with a reason, and no result.
    await until(async () => (await client.getTask(tid)).state === "expired", 10_000, "the task expired");
    const expired = await client.getTask(tid);
    expect(expired.error).toMatchObject({ code: "DATA_LOSS", reason: "expired" });
    const err = await failureOf(client.waitForResult(tid, { timeoutMs: 5_000 }));
    expect(err.reason).toBe("expired");
    // Then gone, like an unknown id.
    const deadline = Date.now() + 20_000;
    let code = "";
    while (Date.now() < deadline) {
      code = await client.getTask(tid).then(
        () => "",
        (e: { code: string }) => e.code,
      );
      if (code) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(code).toBe("NOT_FOUND");

    // A deleted endpoint's payload bucket, once empty, is removed by a broker's sweep (at start).
    const endpointId = ep.endpointId();
    const bucket = `OBJ_${Bus.payloadBucket(endpointId)}`;
    const nc = await connect({ servers: retaining.nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      expect((await jsm.streams.info(bucket)).config.name).toBe(bucket);
      await ep.stop();
      await client.deleteEndpoint(endpointId);
      const another = retaining.adopt(
        await BrokerProcess.start({ natsUrl: retaining.nats.url, dir: path.join(retaining.dir, "br2") }),
      );
      await another.process!.waitFor(/payload buckets of deleted endpoints removed/, 10_000);
      await expect(jsm.streams.info(bucket)).rejects.toThrow(/not found/);
    } finally {
      await nc.close();
    }
  }, 60_000);
});
