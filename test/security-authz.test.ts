import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { FabricError, fromGrpcError } from "../common/index.js";
import {
  TaskState,
  type FunctionMessage,
  type FunctionSpec,
  type ShareFunctionRequest,
  type ShareFunctionResponse,
  type UpdateEndpointPolicyRequest,
  type UpdateEndpointPolicyResponse,
} from "../proto/index.js";
import { LocalFabric } from "../devkit/index.js";
import { RawClients } from "./support/raw-clients.js";

const enc = new TextEncoder();
const UNKNOWN = "00000000-0000-4000-8000-000000000000";

function jsSpec(body: string): FunctionSpec {
  return {
    kind: { $case: "js", value: { source: `const f = ${body};`, entryPoint: "f" } },
    containerImage: "",
  };
}

/** The error a call fails with (code and message), or OK. */
async function outcome(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    const fe = err instanceof FabricError ? err : fromGrpcError(err);
    return { code: fe.code, message: fe.message };
  }
  return { code: "OK", message: "" };
}

function share(c: RawClients, req: ShareFunctionRequest): Promise<ShareFunctionResponse> {
  return new Promise((resolve, reject) =>
    c.functions.shareFunction(req, c.md, { deadline: Date.now() + 20_000 }, (err, res) =>
      err ? reject(err) : resolve(res),
    ),
  );
}

function setPolicy(c: RawClients, req: UpdateEndpointPolicyRequest): Promise<UpdateEndpointPolicyResponse> {
  return new Promise((resolve, reject) =>
    c.endpoints.updateEndpointPolicy(req, c.md, { deadline: Date.now() + 20_000 }, (err, res) =>
      err ? reject(err) : resolve(res),
    ),
  );
}

describe("authorization: owners, sharing, allowed functions", () => {
  let stack: LocalFabric;
  const users: Record<string, RawClients> = {};
  const u = (name: string) => users[name]!;

  beforeAll(async () => {
    stack = await LocalFabric.start({ brokerConfig: { groups: { physics: ["carol"] } }, operator: true });
    for (const name of ["alice", "bob", "carol", "dave"]) {
      users[name] = new RawClients(stack.broker.address, await stack.broker.token(name));
    }
  }, 60_000);

  afterAll(async () => {
    for (const c of Object.values(users)) c.close();
    await stack?.stop();
  });

  const submitOne = (c: RawClients, functionId: string, endpointId: string) =>
    c.submitTasks({
      tasks: [
        { functionId, endpointId, argsJson: enc.encode("[]"), kwargsJson: new Uint8Array(), timeoutS: 0 },
      ],
      groupId: "",
      idempotencyKey: "",
    });
  const newEndpoint = async (c: RawClients, name: string) =>
    (await c.registerEndpoint({ name, description: "", endpointId: "" })).endpoint!.id;
  const newFunction = async (c: RawClients, name: string) =>
    (await c.registerFunction({ name, description: "", spec: jsSpec("() => 1") })).function!.id;
  const listed = async (c: RawClients) =>
    (await c.listFunctions()).functions.map((f: FunctionMessage) => f.id);

  it("another user's function answers NOT_FOUND exactly like an unknown id, until it is shared", async () => {
    const fid = await newFunction(u("alice"), "private");
    const bobEp = await newEndpoint(u("bob"), "bob-ep");
    const hidden = await outcome(u("bob").getFunction({ functionId: fid }));
    const unknown = await outcome(u("bob").getFunction({ functionId: UNKNOWN }));
    expect(hidden.code).toBe("NOT_FOUND");
    expect(hidden.message.replace(fid, "ID")).toBe(unknown.message.replace(UNKNOWN, "ID"));
    expect((await outcome(submitOne(u("bob"), fid, bobEp))).code).toBe("NOT_FOUND");
    expect(await listed(u("bob"))).not.toContain(fid);
    // Sharing is the owner's: others cannot share it (NOT_FOUND: they cannot see it).
    expect(
      (await outcome(share(u("bob"), { functionId: fid, public: false, sharedWith: ["bob"] }))).code,
    ).toBe("NOT_FOUND");

    const shared = await share(u("alice"), { functionId: fid, public: false, sharedWith: ["bob"] });
    expect(shared.function?.sharedWith).toEqual(["bob"]);
    expect((await u("bob").getFunction({ functionId: fid })).function?.owner).toBe("alice");
    expect((await submitOne(u("bob"), fid, bobEp)).taskIds).toHaveLength(1);
    expect(await listed(u("bob"))).toContain(fid);
    // Shared is not owned: bob may neither delete nor re-share it.
    expect((await outcome(u("bob").deleteFunction({ functionId: fid }))).code).toBe("PERMISSION_DENIED");
    expect((await outcome(share(u("bob"), { functionId: fid, public: true, sharedWith: [] }))).code).toBe(
      "PERMISSION_DENIED",
    );
    // dave still sees nothing.
    expect((await outcome(u("dave").getFunction({ functionId: fid }))).code).toBe("NOT_FOUND");
    expect(await listed(u("dave"))).not.toContain(fid);

    // Unsharing takes effect at once.
    await share(u("alice"), { functionId: fid, public: false, sharedWith: [] });
    expect((await outcome(submitOne(u("bob"), fid, bobEp))).code).toBe("NOT_FOUND");
  });

  it("public functions run for anyone (unlisted); group shares reach the group's members only", async () => {
    const pub = await newFunction(u("alice"), "public");
    await share(u("alice"), { functionId: pub, public: true, sharedWith: [] });
    const daveEp = await newEndpoint(u("dave"), "dave-ep");
    expect((await submitOne(u("dave"), pub, daveEp)).taskIds).toHaveLength(1);
    expect(await listed(u("dave"))).not.toContain(pub);

    const grp = await newFunction(u("alice"), "group");
    await share(u("alice"), { functionId: grp, public: false, sharedWith: ["group:physics"] });
    const carolEp = await newEndpoint(u("carol"), "carol-ep");
    expect((await submitOne(u("carol"), grp, carolEp)).taskIds).toHaveLength(1);
    expect(await listed(u("carol"))).toContain(grp);
    expect((await outcome(submitOne(u("dave"), grp, daveEp))).code).toBe("NOT_FOUND");
    // A malformed share list is INVALID_ARGUMENT naming the field.
    const bad = await outcome(share(u("alice"), { functionId: grp, public: false, sharedWith: ["a b"] }));
    expect(bad.code).toBe("INVALID_ARGUMENT");
    expect(bad.message).toMatch(/sharedWith/);
  });

  it("endpoints: only the owner and those it is shared with may submit; only the owner manages it", async () => {
    const ep = await newEndpoint(u("alice"), "shared-ep");
    const bobFn = await newFunction(u("bob"), "bobs");
    expect((await outcome(submitOne(u("bob"), bobFn, ep))).code).toBe("NOT_FOUND");
    expect((await outcome(u("bob").getEndpoint({ endpointId: ep }))).code).toBe("NOT_FOUND");
    expect(
      (await outcome(setPolicy(u("bob"), { endpointId: ep, sharedWith: ["bob"], allowedFunctions: [] })))
        .code,
    ).toBe("NOT_FOUND");

    await setPolicy(u("alice"), {
      endpointId: ep,
      sharedWith: ["bob", "group:physics"],
      allowedFunctions: [],
    });
    expect((await submitOne(u("bob"), bobFn, ep)).taskIds).toHaveLength(1);
    expect((await u("bob").getEndpoint({ endpointId: ep })).endpoint?.owner).toBe("alice");
    expect((await u("bob").listEndpoints()).endpoints.map((e) => e.id)).toContain(ep);
    expect((await u("dave").listEndpoints()).endpoints.map((e) => e.id)).not.toContain(ep);
    expect(
      (await outcome(u("bob").registerEndpoint({ name: "x", description: "", endpointId: ep }))).code,
    ).toBe("PERMISSION_DENIED");
    expect(
      (await outcome(setPolicy(u("bob"), { endpointId: ep, sharedWith: [], allowedFunctions: [] }))).code,
    ).toBe("PERMISSION_DENIED");
    // Bob's tasks stay bob's: alice (the endpoint's owner) cannot read them through the API.
    const tid = (await submitOne(u("bob"), bobFn, ep)).taskIds[0]!;
    expect((await outcome(u("alice").getTasks({ taskIds: [tid], omitResults: true }))).code).toBe(
      "NOT_FOUND",
    );
    const carolFn = await newFunction(u("carol"), "carols");
    expect((await submitOne(u("carol"), carolFn, ep)).taskIds).toHaveLength(1);
    expect((await outcome(submitOne(u("dave"), await newFunction(u("dave"), "d"), ep))).code).toBe(
      "NOT_FOUND",
    );
  });

  it("an endpoint's allowed-functions list is enforced by the broker (PERMISSION_DENIED)", async () => {
    const ep = await newEndpoint(u("alice"), "restricted");
    const ok = await newFunction(u("alice"), "ok");
    const other = await newFunction(u("alice"), "other");
    const res = await setPolicy(u("alice"), { endpointId: ep, sharedWith: [], allowedFunctions: [ok] });
    expect(res.endpoint?.allowedFunctions).toEqual([ok]);
    expect((await submitOne(u("alice"), ok, ep)).taskIds).toHaveLength(1);
    const denied = await outcome(submitOne(u("alice"), other, ep));
    expect(denied.code).toBe("PERMISSION_DENIED");
    expect(denied.message).toMatch(/allowed-functions/);
    const bad = await outcome(
      setPolicy(u("alice"), { endpointId: ep, sharedWith: [], allowedFunctions: ["nope"] }),
    );
    expect(bad.code).toBe("INVALID_ARGUMENT");
  });

  it("a running agent learns of a policy change at once, without reconnecting", async () => {
    const agent = await stack.startEndpoint("alice", "agent-live-policy", { workers: 1 });
    const ok = await newFunction(u("alice"), "ok");
    await setPolicy(u("alice"), { endpointId: agent.endpointId(), sharedWith: [], allowedFunctions: [ok] });
    await agent.process!.waitFor(/"allowedFunctions":1,.*the endpoint's allowed functions changed/, 10_000);
    await agent.stop();
  });

  it("the agent refuses tasks of functions outside its allowed list, even ones the broker queued earlier", async () => {
    const agent = await stack.startEndpoint("alice", "agent-restricted", { workers: 1 });
    const ep = agent.endpointId();
    await agent.stop();
    const ok = await newFunction(u("alice"), "ok");
    const other = await newFunction(u("alice"), "other");
    // Queued while the endpoint had no restriction …
    const okTask = (await submitOne(u("alice"), ok, ep)).taskIds[0]!;
    const otherTask = (await submitOne(u("alice"), other, ep)).taskIds[0]!;
    // … then the owner restricts it and the agent starts: it must not run `other`.
    await setPolicy(u("alice"), { endpointId: ep, sharedWith: [], allowedFunctions: [ok] });
    await agent.launch();
    const deadline = Date.now() + 30_000;
    for (;;) {
      const tasks = (await u("alice").getTasks({ taskIds: [okTask, otherTask], omitResults: true })).tasks;
      const [a, b] = [tasks.find((t) => t.id === okTask)!, tasks.find((t) => t.id === otherTask)!];
      if (a.completedAtMs > 0 && b.completedAtMs > 0) {
        expect(a.state).toBe(TaskState.TASK_STATE_SUCCESS);
        expect(b.state).toBe(TaskState.TASK_STATE_FAILED);
        expect(b.error?.code).toBe("PERMISSION_DENIED");
        expect(b.history.at(-1)?.actor).toBe(`endpoint/${ep}`);
        break;
      }
      if (Date.now() > deadline)
        throw new Error(`tasks did not finish: ${JSON.stringify(tasks.map((t) => t.state))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});
