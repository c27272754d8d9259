import { randomBytes, randomUUID } from "node:crypto";

import * as grpc from "@grpc/grpc-js";
import { jetstream } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";

import { TokenAuthority } from "../cloud/index.js";
import { Bus } from "../common/index.js";
import {
  EndpointServiceService,
  FunctionServiceService,
  SubmitTasksRequest,
  TaskServiceService,
} from "../proto/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { RawClients } from "./support/raw-clients.js";

const METHODS = [FunctionServiceService, EndpointServiceService, TaskServiceService].flatMap((s) =>
  Object.values(s).map((d: { path: string; responseStream: boolean }) => ({
    path: d.path,
    stream: d.responseStream,
  })),
);

/** Codes a hostile request may get: every one says what was wrong. INTERNAL / UNKNOWN never. */
const CLEAR = new Set([
  grpc.status.OK,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNAUTHENTICATED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.FAILED_PRECONDITION,
]);

/** A random protobuf-looking message: valid tags with random wire types and values, or noise. */
function randomMessage(valid: Uint8Array): Uint8Array {
  const r = Math.random();
  if (r < 0.3) return randomBytes(Math.floor(Math.random() * 512));
  if (r < 0.6) {
    // A valid message with a few bytes flipped, cut short, or extended.
    const b = Buffer.from(valid);
    for (let i = 0; i < 1 + Math.floor(Math.random() * 4) && b.length > 0; i++) {
      b[Math.floor(Math.random() * b.length)] = Math.floor(Math.random() * 256);
    }
    return Math.random() < 0.3 ? b.subarray(0, Math.floor(Math.random() * b.length)) : b;
  }
  const parts: number[] = [];
  for (let f = 0; f < 1 + Math.floor(Math.random() * 6); f++) {
    const field = 1 + Math.floor(Math.random() * 20);
    const wire = [0, 1, 2, 5][Math.floor(Math.random() * 4)]!;
    parts.push((field << 3) | wire);
    if (wire === 0) parts.push(...randomBytes(1 + Math.floor(Math.random() * 3)).map((x) => x & 0x7f));
    else if (wire === 1) parts.push(...randomBytes(8));
    else if (wire === 5) parts.push(...randomBytes(4));
    else {
      const len = Math.floor(Math.random() * 40);
      parts.push(len, ...randomBytes(len));
    }
  }
  return Uint8Array.from(parts);
}

function rawCall(
  c: RawClients,
  path: string,
  stream: boolean,
  bytes: Uint8Array,
  md: grpc.Metadata,
): Promise<number> {
  const serialize = (b: Uint8Array) => Buffer.from(b);
  const deserialize = (b: Buffer) => b;
  const opts = { deadline: Date.now() + 15_000 };
  return new Promise((resolve) => {
    if (!stream) {
      c.tasks.makeUnaryRequest(path, serialize, deserialize, bytes, md, opts, (err) =>
        resolve(err ? err.code : grpc.status.OK),
      );
      return;
    }
    const call = c.tasks.makeServerStreamRequest(path, serialize, deserialize, bytes, md, opts);
    // A watch of random ids may wait for them forever: a clear first answer is all we need.
    call.on("data", () => undefined);
    call.on("error", (err: grpc.ServiceError) => resolve(err.code));
    call.on("end", () => resolve(grpc.status.OK));
    setTimeout(() => {
      call.cancel();
      resolve(grpc.status.OK);
    }, 1_000);
  });
}

describe("hostile input: fuzzed gRPC API and garbage on the bus, with valid traffic alongside", () => {
  const stack = useFabric({
    brokerConfig: { limits: { callsPerSecond: 0 } },
    operator: true,
    endpoint: { name: "fuzz", workers: 2 },
    rawUsers: ["mallory"],
    natsAdmin: true,
  });

  /** Valid traffic: `n` tasks in a row, each checked. */
  async function validTraffic(n: number): Promise<number> {
    const fid = await stack.client.registerFunction(function triple(x: number) {
      return x * 3;
    });
    let ok = 0;
    for (let i = 0; i < n; i++) {
      const tid = await stack.client.run(fid, stack.endpointId, [i]);
      if ((await stack.client.waitForResult<number>(tid, { timeoutMs: 30_000 })) === i * 3) ok++;
    }
    return ok;
  }

  it("answers 1,200 malformed, random and oversized requests with clear errors while valid tasks run", async () => {
    const valid = SubmitTasksRequest.encode({
      tasks: [
        {
          functionId: randomUUID(),
          endpointId: stack.endpointId,
          argsJson: Buffer.from("[1,2]"),
          kwargsJson: Buffer.from("{}"),
          timeoutS: 0,
        },
      ],
      groupId: "",
      idempotencyKey: "",
    }).finish();
    const traffic = validTraffic(40);
    const codes = new Map<number, number>();
    const unclear: string[] = [];
    const md = stack.rawOf("mallory").md;
    const badAuth = [new grpc.Metadata(), new grpc.Metadata(), new grpc.Metadata()];
    badAuth[1]!.set("authorization", "Bearer " + randomBytes(300).toString("base64"));
    badAuth[2]!.set("authorization", "Basic Zm9vOmJhcg==");
    const deadline = Date.now() + 60_000;
    let sent = 0;
    const worker = async () => {
      while (sent < 1200 && Date.now() < deadline) {
        const i = sent++;
        const m = METHODS[i % METHODS.length]!;
        const bytes = randomMessage(valid);
        const useMd = i % 10 === 9 ? badAuth[i % 3]! : md;
        const code = await rawCall(stack.rawOf("mallory"), m.path, m.stream, bytes, useMd);
        codes.set(code, (codes.get(code) ?? 0) + 1);
        if (!CLEAR.has(code))
          unclear.push(
            `${m.path} → ${grpc.status[code]} for ${Buffer.from(bytes).toString("hex").slice(0, 80)}`,
          );
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    expect(sent).toBeGreaterThanOrEqual(1200);
    // Oversized: past the payload limit (the broker's own check) and past the transport's limit.
    const big = SubmitTasksRequest.encode({
      tasks: [
        {
          functionId: randomUUID(),
          endpointId: stack.endpointId,
          argsJson: Buffer.alloc(11 * 1024 * 1024, 0x31),
          kwargsJson: Buffer.alloc(0),
          timeoutS: 0,
        },
      ],
      groupId: "",
      idempotencyKey: "",
    }).finish();
    const bigCode = await rawCall(
      stack.rawOf("mallory"),
      "/fabric.v1.TaskService/SubmitTasks",
      false,
      big,
      md,
    );
    expect([grpc.status.INVALID_ARGUMENT, grpc.status.RESOURCE_EXHAUSTED]).toContain(bigCode);
    const huge = await rawCall(
      stack.rawOf("mallory"),
      "/fabric.v1.FunctionService/RegisterFunction",
      false,
      randomBytes(70 * 1024 * 1024),
      md,
    );
    expect(huge).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(unclear).toEqual([]);
    expect(codes.get(grpc.status.INVALID_ARGUMENT) ?? 0).toBeGreaterThan(100);
    expect(await traffic).toBe(40);
    expect(stack.fabric.broker.process!.running).toBe(true);
    expect(stack.endpoint.process!.running).toBe(true);
  }, 120_000);

  it("oversized and deeply repeated messages to every method, with and without a token, get clear answers while valid tasks run", async () => {
    const traffic = validTraffic(20);
    /** `count` entries of a one-byte length-delimited field `fieldNo`, without building objects. */
    const repeatedField = (fieldNo: number, count: number) => {
      const entry = Buffer.from([(fieldNo << 3) | 2, 0x01, 0x61]);
      const out = Buffer.allocUnsafe(entry.length * count);
      for (let at = 0; at < out.length; at += entry.length) entry.copy(out, at);
      return out;
    };
    const nested = Buffer.concat([Buffer.alloc(100_000, 0x0b), Buffer.alloc(100_000, 0x0c)]);
    const noToken = new grpc.Metadata();
    const answers: string[] = [];
    const send = async (path: string, stream: boolean, bytes: Uint8Array, label: string) => {
      for (const [who, md] of [
        ["token", stack.rawOf("mallory").md],
        ["no token", noToken],
      ] as const) {
        const code = await rawCall(stack.rawOf("mallory"), path, stream, bytes, md);
        answers.push(`${path} ${label} (${who}) → ${grpc.status[code]}`);
        if (!CLEAR.has(code) || code === (grpc.status.OK as number)) {
          throw new Error(`${path} ${label} (${who}) answered ${grpc.status[code]}`);
        }
        if (who === "no token") expect(code).toBe(grpc.status.UNAUTHENTICATED);
      }
    };
    for (const m of METHODS) {
      for (const fieldNo of [1, 3])
        await send(m.path, m.stream, repeatedField(fieldNo, 1_000_000), `1M × #${fieldNo}`);
      await send(m.path, m.stream, nested, "100,000 nested groups");
    }
    // 16.7 million entries (50 MB) to the methods whose requests are lists.
    const huge = repeatedField(1, 16_700_000);
    for (const path of [
      "/fabric.v1.TaskService/GetTasks",
      "/fabric.v1.TaskService/SubmitTasks",
      "/fabric.v1.TaskService/CancelTasks",
    ]) {
      await send(path, false, huge, "16.7M × #1");
    }
    expect(answers.length).toBe(METHODS.length * 6 + 6);
    expect(await traffic).toBe(20);
    expect(stack.fabric.broker.process!.running).toBe(true);
    expect(await validTraffic(3)).toBe(3);
  }, 180_000);

  it("garbage on the endpoint's task subject and the results stream is dropped with a log line; both stay up", async () => {
    const js = jetstream(stack.admin);
    const traffic = validTraffic(20);
    const ghostIds: string[] = [];
    // Half of the garbage is signed with the endpoint's message key, as if a broker had sent it:
    // the agent's handling of undecodable tasks is reached only past the signature check.
    const key = (
      await TokenAuthority.fromKeyFile(stack.fabric.broker.keyFile, "fabric-broker", "fabric-api")
    ).messageKeys.endpoint(stack.endpointId);
    const subject = Bus.taskSubject(stack.endpointId);
    for (let i = 0; i < 60; i++) {
      const h = headers();
      if (i % 2 === 0) {
        const id = randomUUID();
        ghostIds.push(id);
        h.set("Nats-Msg-Id", id);
      }
      const garbage = randomBytes(1 + Math.floor(Math.random() * 300));
      if (i % 4 < 2) key.headers(subject, garbage, h);
      await js.publish(subject, garbage, { headers: h });
      // Garbage results too, half of them signed with the endpoint's key (as its agent would).
      const result = randomBytes(1 + Math.floor(Math.random() * 300));
      const resultSubject = Bus.resultSubject(stack.endpointId);
      await js.publish(
        resultSubject,
        result,
        i % 2 === 0 ? { headers: key.headers(resultSubject, result) } : {},
      );
    }
    expect(await traffic).toBe(20);
    const agent = stack.endpoint.process!;
    // Unsigned: dropped before it is read. Signed but undecodable, with a task id: reported failed
    // (the broker knows no such task and says so); without one: terminated. Garbage results:
    // dropped by the broker, unsigned ones before they are read.
    await agent.waitFor(/task message not sent by a broker \(unsigned\) dropped/, 20_000);
    await agent.waitFor(/undecodable task message; reporting it failed/, 20_000);
    await agent.waitFor(/undecodable task message without a task id/, 20_000);
    await stack.fabric.broker.process!.waitFor(
      /result batch not sent by the endpoint's agent \(unsigned\) dropped/,
      20_000,
    );
    await stack.fabric.broker.process!.waitFor(/undecodable result message dropped/, 20_000);
    await stack.fabric.broker.process!.waitFor(/update for an unknown or expired task dropped/, 20_000);
    // Nothing stays queued: every garbage task message was settled.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const ep = await stack.client.getEndpoint(stack.endpointId);
      if (ep.status.queuedTasks === 0) break;
      if (Date.now() > deadline) throw new Error(`still ${ep.status.queuedTasks} queued`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(agent.running).toBe(true);
    expect(stack.fabric.broker.process!.running).toBe(true);
    expect(await validTraffic(5)).toBe(5);
  }, 120_000);
});
