import { describe, expect, it } from "vitest";

import { TaskState, type FunctionMessage } from "../proto/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { outcomeOf as outcome } from "./support/outcomes.js";
import type { RawClients } from "./support/raw-clients.js";

const UNKNOWN = "00000000-0000-4000-8000-000000000000";
const TASK_ID = /^[0-9a-f-]{36}$/;

describe("authorization: owners, sharing, allowed functions", () => {
  const stack = useFabric({
    brokerConfig: { groups: { physics: ["carol"] } },
    operator: true,
    rawUsers: ["bob", "carol", "dave"],
  });
  const u = (name: string) => stack.rawOf(name);

  const newEndpoint = async (c: RawClients, name: string) => (await c.newEndpoint(name)).id;
  const newFunction = (c: RawClients, name: string) => c.registerJs("const f = () => 1;", "f", name);
  const listed = async (c: RawClients) =>
    (await c.listFunctions()).functions.map((f: FunctionMessage) => f.id);

  it("another user's function answers NOT_FOUND exactly like an unknown id, until it is shared", async () => {
    const fid = await newFunction(u("alice"), "private");
    const bobEp = await newEndpoint(u("bob"), "bob-ep");
    const hidden = await outcome(u("bob").getFunction({ functionId: fid }));
    const unknown = await outcome(u("bob").getFunction({ functionId: UNKNOWN }));
    expect(hidden.code).toBe("NOT_FOUND");
    expect(hidden.message.replace(fid, "ID")).toBe(unknown.message.replace(UNKNOWN, "ID"));
    expect((await outcome(u("bob").submitOne(fid, bobEp))).code).toBe("NOT_FOUND");
    expect(await listed(u("bob"))).not.toContain(fid);
    // Sharing is the owner's: others cannot share it (NOT_FOUND: they cannot see it).
    expect(
      (await outcome(u("bob").shareFunction({ functionId: fid, public: false, sharedWith: ["bob"] }))).code,
    ).toBe("NOT_FOUND");

    const shared = await u("alice").shareFunction({ functionId: fid, public: false, sharedWith: ["bob"] });
    expect(shared.function?.sharedWith).toEqual(["bob"]);
    expect((await u("bob").getFunction({ functionId: fid })).function?.owner).toBe("alice");
    expect(await u("bob").submitOne(fid, bobEp)).toMatch(TASK_ID);
    expect(await listed(u("bob"))).toContain(fid);
    // Shared is not owned: bob may neither delete nor re-share it.
    expect((await outcome(u("bob").deleteFunction({ functionId: fid }))).code).toBe("PERMISSION_DENIED");
    expect(
      (await outcome(u("bob").shareFunction({ functionId: fid, public: true, sharedWith: [] }))).code,
    ).toBe("PERMISSION_DENIED");
    // dave still sees nothing.
    expect((await outcome(u("dave").getFunction({ functionId: fid }))).code).toBe("NOT_FOUND");
    expect(await listed(u("dave"))).not.toContain(fid);

    // Unsharing takes effect at once.
    await u("alice").shareFunction({ functionId: fid, public: false, sharedWith: [] });
    expect((await outcome(u("bob").submitOne(fid, bobEp))).code).toBe("NOT_FOUND");
  });

  it("public functions run for anyone (unlisted); group shares reach the group's members only", async () => {
    const pub = await newFunction(u("alice"), "public");
    await u("alice").shareFunction({ functionId: pub, public: true, sharedWith: [] });
    const daveEp = await newEndpoint(u("dave"), "dave-ep");
    expect(await u("dave").submitOne(pub, daveEp)).toMatch(TASK_ID);
    expect(await listed(u("dave"))).not.toContain(pub);

    const grp = await newFunction(u("alice"), "group");
    await u("alice").shareFunction({ functionId: grp, public: false, sharedWith: ["group:physics"] });
    const carolEp = await newEndpoint(u("carol"), "carol-ep");
    expect(await u("carol").submitOne(grp, carolEp)).toMatch(TASK_ID);
    expect(await listed(u("carol"))).toContain(grp);
    expect((await outcome(u("dave").submitOne(grp, daveEp))).code).toBe("NOT_FOUND");
    // A malformed share list is INVALID_ARGUMENT naming the field.
    const bad = await outcome(
      u("alice").shareFunction({ functionId: grp, public: false, sharedWith: ["a b"] }),
    );
    expect(bad.code).toBe("INVALID_ARGUMENT");
    expect(bad.message).toMatch(/sharedWith/);
  });

  it("endpoints: only the owner and those it is shared with may submit; only the owner manages it", async () => {
    const ep = await newEndpoint(u("alice"), "shared-ep");
    const bobFn = await newFunction(u("bob"), "bobs");
    expect((await outcome(u("bob").submitOne(bobFn, ep))).code).toBe("NOT_FOUND");
    expect((await outcome(u("bob").getEndpoint({ endpointId: ep }))).code).toBe("NOT_FOUND");
    expect(
      (
        await outcome(
          u("bob").updateEndpointPolicy({ endpointId: ep, sharedWith: ["bob"], allowedFunctions: [] }),
        )
      ).code,
    ).toBe("NOT_FOUND");

    await u("alice").updateEndpointPolicy({
      endpointId: ep,
      sharedWith: ["bob", "group:physics"],
      allowedFunctions: [],
    });
    expect(await u("bob").submitOne(bobFn, ep)).toMatch(TASK_ID);
    expect((await u("bob").getEndpoint({ endpointId: ep })).endpoint?.owner).toBe("alice");
    expect((await u("bob").listEndpoints()).endpoints.map((e) => e.id)).toContain(ep);
    expect((await u("dave").listEndpoints()).endpoints.map((e) => e.id)).not.toContain(ep);
    expect(
      (await outcome(u("bob").registerEndpoint({ name: "x", description: "", endpointId: ep }))).code,
    ).toBe("PERMISSION_DENIED");
    expect(
      (await outcome(u("bob").updateEndpointPolicy({ endpointId: ep, sharedWith: [], allowedFunctions: [] })))
        .code,
    ).toBe("PERMISSION_DENIED");
    // Bob's tasks stay bob's: alice (the endpoint's owner) cannot read them through the API.
    const tid = await u("bob").submitOne(bobFn, ep);
    expect((await outcome(u("alice").getTasks({ taskIds: [tid], omitResults: true }))).code).toBe(
      "NOT_FOUND",
    );
    const carolFn = await newFunction(u("carol"), "carols");
    expect(await u("carol").submitOne(carolFn, ep)).toMatch(TASK_ID);
    expect((await outcome(u("dave").submitOne(await newFunction(u("dave"), "d"), ep))).code).toBe(
      "NOT_FOUND",
    );
  });

  it("an endpoint's allowed-functions list is enforced by the broker (PERMISSION_DENIED)", async () => {
    const ep = await newEndpoint(u("alice"), "restricted");
    const ok = await newFunction(u("alice"), "ok");
    const other = await newFunction(u("alice"), "other");
    const res = await u("alice").updateEndpointPolicy({
      endpointId: ep,
      sharedWith: [],
      allowedFunctions: [ok],
    });
    expect(res.endpoint?.allowedFunctions).toEqual([ok]);
    expect(await u("alice").submitOne(ok, ep)).toMatch(TASK_ID);
    const denied = await outcome(u("alice").submitOne(other, ep));
    expect(denied.code).toBe("PERMISSION_DENIED");
    expect(denied.message).toMatch(/allowed-functions/);
    const bad = await outcome(
      u("alice").updateEndpointPolicy({ endpointId: ep, sharedWith: [], allowedFunctions: ["nope"] }),
    );
    expect(bad.code).toBe("INVALID_ARGUMENT");
  });

  it("a running agent learns of a policy change at once, without reconnecting", async () => {
    const agent = await stack.fabric.startEndpoint("alice", "agent-live-policy", { workers: 1 });
    const ok = await newFunction(u("alice"), "ok");
    await u("alice").updateEndpointPolicy({
      endpointId: agent.endpointId(),
      sharedWith: [],
      allowedFunctions: [ok],
    });
    await agent.process!.waitFor(/"allowedFunctions":1,.*the endpoint's allowed functions changed/, 10_000);
    await agent.stop();
  });

  it("the agent refuses tasks of functions outside its allowed list, even ones the broker queued earlier", async () => {
    const agent = await stack.fabric.startEndpoint("alice", "agent-restricted", { workers: 1 });
    const ep = agent.endpointId();
    await agent.stop();
    const ok = await newFunction(u("alice"), "ok");
    const other = await newFunction(u("alice"), "other");
    // Queued while the endpoint had no restriction …
    const okTask = await u("alice").submitOne(ok, ep);
    const otherTask = await u("alice").submitOne(other, ep);
    // … then the owner restricts it and the agent starts: it must not run `other`.
    await u("alice").updateEndpointPolicy({ endpointId: ep, sharedWith: [], allowedFunctions: [ok] });
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
