import path from "node:path";

import * as jose from "jose";
import { describe, expect, it } from "vitest";

import { TokenAuthority } from "../cloud/index.js";
import type { FabricError } from "../common/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { codeOf } from "./support/outcomes.js";
import { RawClients } from "./support/raw-clients.js";

const enc = new TextEncoder();

describe("broker API: validation, limits, authentication, ownership", () => {
  const stack = useFabric({
    name: "api",
    brokerConfig: { limits: { maxPayloadBytes: 1024 * 1024 } },
    rawUsers: ["bob"],
  });

  async function brokerAnswers(): Promise<void> {
    const res = await stack.raw.listFunctions();
    expect(Array.isArray(res.functions)).toBe(true);
    expect(stack.fabric.broker.process?.running).toBe(true);
  }

  async function setup(c: RawClients) {
    const functionId = await c.registerJs("const add = (a, b) => a + b;", "add");
    return { functionId, endpointId: (await c.newEndpoint("ep")).id };
  }

  it("registers and reads back a function", async () => {
    const { functionId } = await setup(stack.raw);
    const got = await stack.raw.getFunction({ functionId });
    expect(got.function?.spec?.kind?.$case).toBe("js");
    expect(got.function?.owner).toBe("alice");
  });

  it("unknown function or endpoint id → NOT_FOUND, and the broker stays up", async () => {
    const { functionId, endpointId } = await setup(stack.raw);
    const unknown = "00000000-0000-4000-8000-000000000000";
    const submit = (f: string, e: string) => stack.raw.submitOne(f, e, [1, 2]);
    expect(await codeOf(submit(unknown, endpointId))).toBe("NOT_FOUND");
    expect(await codeOf(submit(functionId, unknown))).toBe("NOT_FOUND");
    expect(await codeOf(stack.raw.getFunction({ functionId: unknown }))).toBe("NOT_FOUND");
    expect(await codeOf(stack.raw.getTasks({ taskIds: [unknown], omitResults: false }))).toBe("NOT_FOUND");
    await brokerAnswers();
  });

  it("malformed requests → INVALID_ARGUMENT, and the broker stays up", async () => {
    const { functionId, endpointId } = await setup(stack.raw);
    // Bytes that are not a protobuf message at all.
    const raw = stack.raw.rawCall(
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
      expect(await codeOf(stack.raw.submitTasks({ groupId: "", tasks: [t] }))).toBe("INVALID_ARGUMENT");
    }
    expect(await codeOf(stack.raw.submitTasks({ groupId: "", tasks: [] }))).toBe("INVALID_ARGUMENT");
    const noSpec = stack.raw.registerFunction({ name: "x", description: "", spec: undefined });
    expect(await codeOf(noSpec)).toBe("INVALID_ARGUMENT");
    const badEntry = stack.raw.registerFunction({
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
    const { functionId, endpointId } = await setup(stack.raw);
    const big = enc.encode(JSON.stringify(["x".repeat(2 * 1024 * 1024)]));
    const p = stack.raw.submitTasks({
      groupId: "",
      tasks: [{ functionId, endpointId, argsJson: big, kwargsJson: new Uint8Array() }],
    });
    const err = (await p.catch((e: unknown) => e)) as FabricError;
    expect(err.code).toBe("RESOURCE_EXHAUSTED");
    expect(err.message).toMatch(/payload limit/);
    await brokerAnswers();
  });

  it("no token, expired token, bad signature, alg none → UNAUTHENTICATED", async () => {
    const list = (token: string) => codeOf(RawClients.withToken(stack.fabric, token).listFunctions());
    expect(await list("")).toBe("UNAUTHENTICATED");
    expect(await list("garbage")).toBe("UNAUTHENTICATED");
    expect(await list(await stack.fabric.broker.token("alice", -60))).toBe("UNAUTHENTICATED");
    const other = await TokenAuthority.fromKeyFile(
      path.join(stack.fabric.dir, "other-key.pem"),
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
    const { functionId, endpointId } = await setup(stack.raw);
    const taskId = await stack.raw.submitOne(functionId, endpointId, [1, 2]);
    expect(await codeOf(stack.rawOf("bob").getFunction({ functionId }))).toBe("NOT_FOUND");
    expect(await codeOf(stack.rawOf("bob").getEndpoint({ endpointId }))).toBe("NOT_FOUND");
    expect(await codeOf(stack.rawOf("bob").getTasks({ taskIds: [taskId], omitResults: false }))).toBe(
      "NOT_FOUND",
    );
    expect(await codeOf(stack.rawOf("bob").cancelTasks({ taskIds: [taskId] }))).toBe("NOT_FOUND");
    expect(await codeOf(stack.rawOf("bob").deleteFunction({ functionId }))).toBe("NOT_FOUND");
    // Bob cannot submit to Alice's endpoint nor run Alice's function.
    const bobFn = await stack.rawOf("bob").registerJs("const add = (a, b) => a + b;", "add", "b");
    const submitToAlice = stack.rawOf("bob").submitTasks({
      groupId: "",
      tasks: [
        {
          functionId: bobFn,
          endpointId,
          argsJson: new Uint8Array(),
          kwargsJson: new Uint8Array(),
        },
      ],
    });
    expect(await codeOf(submitToAlice)).toBe("NOT_FOUND");
    const fns = await stack.rawOf("bob").listFunctions();
    expect(fns.functions.map((f) => f.owner)).toEqual(fns.functions.map(() => "bob"));
    const eps = await stack.rawOf("bob").listEndpoints();
    expect(eps.endpoints.find((e) => e.id === endpointId)).toBeUndefined();
    // Alice still sees and cancels her own task.
    const mine = await stack.raw.cancelTasks({ taskIds: [taskId] });
    expect(mine.tasks[0]?.error?.reason).toBe("cancelled");
  });
});
