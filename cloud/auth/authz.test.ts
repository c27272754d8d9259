import { describe, expect, it } from "vitest";

import { agentPermissions } from "./nats-credentials.js";
import { AccessPolicy, assertFunctionAllowed } from "./authz.js";

describe("AccessPolicy", () => {
  const policy = new AccessPolicy({ physics: ["carol"], chem: ["dave"] });
  const obj = { owner: "alice", sharedWith: ["bob", "group:physics"] };

  it("owners, named users and group members may use; others not", () => {
    expect(policy.canUse(obj, "alice")).toBe(true);
    expect(policy.canUse(obj, "bob")).toBe(true);
    expect(policy.canUse(obj, "carol")).toBe(true);
    expect(policy.canUse(obj, "dave")).toBe(false);
    expect(policy.canUse({ ...obj, sharedWith: ["physics"] }, "carol")).toBe(false); // a user named physics
  });

  it("public objects are usable by anyone but listed only to those they are shared with", () => {
    const pub = { ...obj, public: true };
    expect(policy.canUse(pub, "eve")).toBe(true);
    expect(policy.lists(pub, "eve")).toBe(false);
    expect(policy.lists(pub, "bob")).toBe(true);
  });

  it("invisible is NOT_FOUND; visible but not owned is PERMISSION_DENIED", () => {
    expect(() => policy.owned(obj, "dave", "function f", "delete")).toThrow(/not found/);
    expect(() => policy.owned(obj, "bob", "function f", "delete")).toThrow(/only the owner/);
    expect(policy.owned(obj, "alice", "function f", "delete")).toBe(obj);
  });

  it("an allowed-functions list admits only its functions; an empty one admits all", () => {
    const ep = { id: "e", owner: "a", name: "", description: "", createdAtMs: 0, sharedWith: [] };
    expect(() => assertFunctionAllowed({ ...ep, allowedFunctions: [] }, "f1")).not.toThrow();
    expect(() => assertFunctionAllowed({ ...ep, allowedFunctions: ["f1"] }, "f1")).not.toThrow();
    expect(() => assertFunctionAllowed({ ...ep, allowedFunctions: ["f1"] }, "f2")).toThrow(
      /allowed-functions/,
    );
  });
});

describe("agentPermissions", () => {
  it("names only the endpoint's own subjects, consumer and inbox; no broad wildcards", () => {
    const p = agentPermissions("aaa", "ep-aaa-1");
    const all = [...(p.pub?.allow ?? []), ...(p.sub?.allow ?? [])];
    for (const s of all) {
      expect(s).not.toMatch(/^(>|\$JS\.API\.>|fabric\.>|_INBOX\.>)$/);
      if (s.startsWith("fabric.") || s.includes("FABRIC_TASKS") || s.startsWith("_INBOX")) {
        expect(s).toMatch(/aaa/);
      }
    }
    expect(p.sub?.allow).toContain("_INBOX_aaa.>");
    expect(p.pub?.allow).toContain("fabric.results.aaa");
    expect(p.pub?.allow).toContain("$JS.API.CONSUMER.MSG.NEXT.FABRIC_TASKS.ep-aaa-1");
  });

  it("creates, deletes or reads through no consumer on the payload stream, and has no direct gets", () => {
    const pub = agentPermissions("aaa", "ep-aaa-1").pub?.allow ?? [];
    // A consumer delivers to any subject its creator names; a direct get answers with raw bytes.
    expect(pub.filter((s) => s.includes("OBJ_") && /CONSUMER|\$JS\.ACK|DIRECT/.test(s))).toEqual([]);
    expect(pub.some((s) => /CONSUMER\.(CREATE|DURABLE|DELETE)/.test(s))).toBe(false);
    expect(pub).toContain("$JS.API.STREAM.MSG.GET.OBJ_fabric_payloads_aaa");
  });
});
