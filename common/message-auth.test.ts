import { randomBytes } from "node:crypto";

import { pino } from "pino";
import { describe, expect, it } from "vitest";

import { BrokerMessageKeys, DropLog, MAC_HEADER, MessageKey, deriveMessageRoot } from "./message-auth.js";

const enc = new TextEncoder();

describe("MessageKey", () => {
  const key = new MessageKey(randomBytes(32));
  const payload = enc.encode("a task message");

  it("accepts what it signed and nothing else", () => {
    const mac = key.mac("fabric.tasks.e1", payload);
    expect(mac).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(key.check("fabric.tasks.e1", payload, mac)).toBe("ok");
    // Another subject, another payload, a flipped bit, another key: refused.
    expect(key.check("fabric.tasks.e2", payload, mac)).toBe("bad signature");
    expect(key.check("fabric.control.e1", payload, mac)).toBe("bad signature");
    expect(key.check("fabric.tasks.e1", enc.encode("a task messagf"), mac)).toBe("bad signature");
    const flipped = Buffer.from(mac, "base64url");
    flipped[3]! ^= 1;
    expect(key.check("fabric.tasks.e1", payload, flipped.toString("base64url"))).toBe("bad signature");
    expect(new MessageKey(randomBytes(32)).check("fabric.tasks.e1", payload, mac)).toBe("bad signature");
  });

  it("calls a missing header unsigned and garbage a bad signature, without throwing", () => {
    expect(key.check("s", payload, undefined)).toBe("unsigned");
    expect(key.check("s", payload, null)).toBe("unsigned");
    expect(key.check("s", payload, "")).toBe("unsigned");
    for (const junk of ["x", "!".repeat(22), "A".repeat(23), "A".repeat(21), "\u00e9".repeat(22)])
      expect(key.check("s", payload, junk)).toBe("bad signature");
  });

  it("binds the boundary of subject and payload", () => {
    const mac = key.mac("fabric.tasks.a", enc.encode("bc"));
    expect(key.check("fabric.tasks.ab", enc.encode("c"), mac)).toBe("bad signature");
  });

  it("puts the MAC in the Fabric-Mac header", () => {
    const h = key.headers("s", payload);
    expect(h.get(MAC_HEADER)).toBe(key.mac("s", payload));
  });

  it("refuses a short key", () => {
    expect(() => new MessageKey(new Uint8Array(8))).toThrow(/at least 16 bytes/);
  });
});

describe("BrokerMessageKeys", () => {
  const seed = randomBytes(32);

  it("derives the same keys from the same signing key, on every replica", () => {
    const a = new BrokerMessageKeys(deriveMessageRoot(seed));
    const b = new BrokerMessageKeys(deriveMessageRoot(Buffer.from(seed)));
    const p = enc.encode("x");
    expect(b.events.check("fabric.events.o", p, a.events.mac("fabric.events.o", p))).toBe("ok");
    expect(b.endpoint("e1").check("fabric.tasks.e1", p, a.endpoint("e1").mac("fabric.tasks.e1", p))).toBe(
      "ok",
    );
    expect(Buffer.from(a.endpointSecret("e1"))).toEqual(Buffer.from(b.endpointSecret("e1")));
    expect(a.endpoint("e1")).toBe(a.endpoint("e1")); // one key object per endpoint
  });

  it("gives each endpoint its own key, none of them the event key", () => {
    const k = new BrokerMessageKeys(deriveMessageRoot(seed));
    const p = enc.encode("x");
    // An agent holding endpoint e1's key cannot sign for e2, nor a task event.
    const agent = new MessageKey(k.endpointSecret("e1"));
    expect(k.endpoint("e2").check("fabric.tasks.e2", p, agent.mac("fabric.tasks.e2", p))).toBe(
      "bad signature",
    );
    expect(k.events.check("fabric.events.o", p, agent.mac("fabric.events.o", p))).toBe("bad signature");
    expect(k.endpoint("e1").check("fabric.tasks.e1", p, agent.mac("fabric.tasks.e1", p))).toBe("ok");
    // Another signing key, other message keys.
    const other = new BrokerMessageKeys(deriveMessageRoot(randomBytes(32)));
    expect(Buffer.from(other.endpointSecret("e1"))).not.toEqual(Buffer.from(k.endpointSecret("e1")));
  });
});

describe("DropLog", () => {
  it("writes one line per interval however many messages are dropped, with their count", () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino(
      { level: "warn" },
      { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) },
    );
    const drops = new DropLog(log, "task message", { intervalMs: 60_000 });
    for (let i = 0; i < 1000; i++) drops.drop(`fabric.tasks.e${i}`, "unsigned");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ subject: "fabric.tasks.e0", reason: "unsigned", level: 40 });
    expect(String(lines[0]!["msg"])).toMatch(/task message not sent by a broker/);
    const soon = new DropLog(log, "control message", { intervalMs: 0 });
    soon.drop("a", "unsigned");
    soon.drop("b", "bad signature");
    expect(lines).toHaveLength(3);
    new DropLog(log, "result batch", { from: "the endpoint's agent" }).drop("fabric.results.e", "unsigned");
    expect(String(lines[3]!["msg"])).toBe("result batch not sent by the endpoint's agent (unsigned) dropped");
  });
});
