import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import * as jose from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { TokenAuthority } from "../cloud/index.js";
import { FabricError, fromGrpcError } from "../common/index.js";
import type { FunctionSpec } from "../proto/index.js";
import { NatsServer, BrokerProcess } from "../devkit/index.js";
import { RawClients } from "./support/raw-clients.js";

const enc = new TextEncoder();
const jsSpec: FunctionSpec = {
  kind: { $case: "js", value: { source: "const add = (a, b) => a + b;", entryPoint: "add" } },
  containerImage: "",
};

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err instanceof FabricError ? err : fromGrpcError(err)).code;
  }
  return "OK";
}

describe("broker API: validation, limits, authentication, ownership", () => {
  let nats: NatsServer;
  let broker: BrokerProcess;
  let dir: string;
  let alice: RawClients;
  let bob: RawClients;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "fabric-api-"));
    nats = await NatsServer.start();
    broker = await BrokerProcess.start({
      natsUrl: nats.url,
      dir,
      extra: { limits: { maxPayloadBytes: 1024 * 1024 } },
    });
    alice = new RawClients(broker.address, await broker.token("alice"));
    bob = new RawClients(broker.address, await broker.token("bob"));
  });

  afterAll(async () => {
    alice?.close();
    bob?.close();
    await broker?.stop();
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function brokerAnswers(): Promise<void> {
    const res = await alice.listFunctions();
    expect(Array.isArray(res.functions)).toBe(true);
    expect(broker.process?.running).toBe(true);
  }

  async function setup(c: RawClients) {
    const fn = await c.registerFunction({ name: "add", description: "", spec: jsSpec });
    const ep = await c.registerEndpoint({
      name: "ep",
      description: "",
      endpointId: "",
    });
    return { functionId: fn.function!.id, endpointId: ep.endpoint!.id };
  }

  it("registers and reads back a function", async () => {
    const { functionId } = await setup(alice);
    const got = await alice.getFunction({ functionId });
    expect(got.function?.spec?.kind?.$case).toBe("js");
    expect(got.function?.owner).toBe("alice");
  });

  it("unknown function or endpoint id → NOT_FOUND, and the broker stays up", async () => {
    const { functionId, endpointId } = await setup(alice);
    const unknown = "00000000-0000-4000-8000-000000000000";
    const submit = (f: string, e: string) =>
      alice.submitTasks({
        groupId: "",
        tasks: [
          { functionId: f, endpointId: e, argsJson: enc.encode("[1,2]"), kwargsJson: new Uint8Array() },
        ],
      });
    expect(await codeOf(submit(unknown, endpointId))).toBe("NOT_FOUND");
    expect(await codeOf(submit(functionId, unknown))).toBe("NOT_FOUND");
    expect(await codeOf(alice.getFunction({ functionId: unknown }))).toBe("NOT_FOUND");
    expect(await codeOf(alice.getTasks({ taskIds: [unknown], omitResults: false }))).toBe("NOT_FOUND");
    await brokerAnswers();
  });

  it("malformed requests → INVALID_ARGUMENT, and the broker stays up", async () => {
    const { functionId, endpointId } = await setup(alice);
    // Bytes that are not a protobuf message at all.
    const raw = alice.rawCall(
      "/fabric.v1.TaskService/SubmitTasks",
      Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
    );
    expect(await codeOf(raw)).toBe("INVALID_ARGUMENT");
    // Well-formed protobuf, bad content.
    const bad = [
      { functionId: "not-an-id", endpointId, argsJson: enc.encode("[]"), kwargsJson: new Uint8Array() },
      { functionId, endpointId, argsJson: enc.encode("{not json"), kwargsJson: new Uint8Array() },
      { functionId, endpointId, argsJson: enc.encode('{"a":1}'), kwargsJson: new Uint8Array() },
    ];
    for (const t of bad) {
      expect(await codeOf(alice.submitTasks({ groupId: "", tasks: [t] }))).toBe("INVALID_ARGUMENT");
    }
    expect(await codeOf(alice.submitTasks({ groupId: "", tasks: [] }))).toBe("INVALID_ARGUMENT");
    const noSpec = alice.registerFunction({ name: "x", description: "", spec: undefined });
    expect(await codeOf(noSpec)).toBe("INVALID_ARGUMENT");
    const badEntry = alice.registerFunction({
      name: "x",
      description: "",
      spec: {
        kind: { $case: "js", value: { source: "1", entryPoint: "no spaces allowed" } },
        containerImage: "",
      },
    });
    expect(await codeOf(badEntry)).toBe("INVALID_ARGUMENT");
    await brokerAnswers();
  });

  it("oversized payload → RESOURCE_EXHAUSTED with a clear message, and the broker stays up", async () => {
    const { functionId, endpointId } = await setup(alice);
    const big = enc.encode(JSON.stringify(["x".repeat(2 * 1024 * 1024)]));
    const p = alice.submitTasks({
      groupId: "",
      tasks: [{ functionId, endpointId, argsJson: big, kwargsJson: new Uint8Array() }],
    });
    const err = (await p.catch((e: unknown) => e)) as FabricError;
    expect(err.code).toBe("RESOURCE_EXHAUSTED");
    expect(err.message).toMatch(/payload limit/);
    await brokerAnswers();
  });

  it("no token, expired token, bad signature, alg none → UNAUTHENTICATED", async () => {
    const list = (token: string) => {
      const c = new RawClients(broker.address, token);
      return codeOf(c.listFunctions()).finally(() => c.close());
    };
    expect(await list("")).toBe("UNAUTHENTICATED");
    expect(await list("garbage")).toBe("UNAUTHENTICATED");
    expect(await list(await broker.token("alice", -60))).toBe("UNAUTHENTICATED");
    const other = await TokenAuthority.fromKeyFile(
      path.join(dir, "other-key.pem"),
      "fabric-broker",
      "fabric-api",
    );
    expect(await list(await other.issueUserToken("alice", 3600))).toBe("UNAUTHENTICATED");
    const none = new jose.UnsecuredJWT({ kind: "user" })
      .setSubject("alice")
      .setIssuer("fabric-broker")
      .setAudience("fabric-api")
      .setExpirationTime("1h")
      .encode();
    expect(await list(none)).toBe("UNAUTHENTICATED");
    await brokerAnswers();
  });

  it("user B cannot read, cancel or list user A's functions, endpoints or tasks", async () => {
    const { functionId, endpointId } = await setup(alice);
    const sub = await alice.submitTasks({
      groupId: "",
      tasks: [{ functionId, endpointId, argsJson: enc.encode("[1,2]"), kwargsJson: new Uint8Array() }],
    });
    const taskId = sub.taskIds[0]!;
    expect(await codeOf(bob.getFunction({ functionId }))).toBe("NOT_FOUND");
    expect(await codeOf(bob.getEndpoint({ endpointId }))).toBe("NOT_FOUND");
    expect(await codeOf(bob.getTasks({ taskIds: [taskId], omitResults: false }))).toBe("NOT_FOUND");
    expect(await codeOf(bob.cancelTasks({ taskIds: [taskId] }))).toBe("NOT_FOUND");
    expect(await codeOf(bob.deleteFunction({ functionId }))).toBe("NOT_FOUND");
    // Bob cannot submit to Alice's endpoint nor run Alice's function.
    const bobFn = await bob.registerFunction({ name: "b", description: "", spec: jsSpec });
    const submitToAlice = bob.submitTasks({
      groupId: "",
      tasks: [
        {
          functionId: bobFn.function!.id,
          endpointId,
          argsJson: new Uint8Array(),
          kwargsJson: new Uint8Array(),
        },
      ],
    });
    expect(await codeOf(submitToAlice)).toBe("NOT_FOUND");
    const fns = await bob.listFunctions();
    expect(fns.functions.map((f) => f.owner)).toEqual(fns.functions.map(() => "bob"));
    const eps = await bob.listEndpoints();
    expect(eps.endpoints.find((e) => e.id === endpointId)).toBeUndefined();
    // Alice still sees and cancels her own task.
    const mine = await alice.cancelTasks({ taskIds: [taskId] });
    expect(mine.tasks[0]?.error?.reason).toBe("cancelled");
  });
});
