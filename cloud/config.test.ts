import { describe, expect, it } from "vitest";

import { resolveBrokerConfig } from "./config.js";

describe("broker config", () => {
  it("fills defaults", () => {
    const c = resolveBrokerConfig({ auth: { keyFile: "/k.pem" } });
    expect(c.listen).toBe("127.0.0.1:50051");
    expect(c.limits.maxPayloadBytes).toBe(10 * 1024 * 1024);
    expect(c.nats.servers).toEqual(["nats://127.0.0.1:4222"]);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it("names the path of a bad field", () => {
    expect(() =>
      resolveBrokerConfig({ auth: { keyFile: "/k.pem" }, limits: { maxBatchSize: "lots" } }),
    ).toThrow(/limits\.maxBatchSize/);
    expect(() => resolveBrokerConfig({})).toThrow(/auth/);
    expect(() => resolveBrokerConfig({ auth: { keyFile: "/k.pem" }, lissen: "x" })).toThrow(
      /lissen|Unrecognized/,
    );
  });
});
