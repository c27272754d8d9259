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

  it("checks the security fields: operator-mode NATS, OIDC, groups, rate limits", () => {
    const k = { keyFile: "/k.pem" };
    expect(() => resolveBrokerConfig({ auth: k, nats: { accountSigningKeyFile: "/s.nk" } })).toThrow(
      /nats\.credentials: accountSigningKeyFile needs credentials/,
    );
    expect(() =>
      resolveBrokerConfig({ auth: { ...k, oidc: { issuer: "x", jwksUri: "not a url", audience: "a" } } }),
    ).toThrow(/auth\.oidc\.jwksUri/);
    expect(() =>
      resolveBrokerConfig({
        auth: {
          ...k,
          oidc: { issuer: "x", jwksUri: "https://x/jwks", audience: "a", algorithms: ["HS256"] },
        },
      }),
    ).toThrow(/auth\.oidc\.algorithms\.0/);
    expect(() => resolveBrokerConfig({ auth: k, groups: { physics: "alice" } })).toThrow(/groups\.physics/);
    const c = resolveBrokerConfig({ auth: k });
    expect(c.limits.callsPerSecond).toBe(1000);
    expect(c.nats.credentials).toBeUndefined();
  });

  it("checks the TLS fields: a client CA for required client certs, cert and key together", () => {
    const k = { keyFile: "/k.pem" };
    expect(() =>
      resolveBrokerConfig({
        auth: k,
        tls: { certFile: "/c.pem", keyFile: "/k.pem", requireClientCert: true },
      }),
    ).toThrow(/tls\.clientCaFile: requireClientCert needs clientCaFile/);
    expect(() => resolveBrokerConfig({ auth: k, tls: { certFile: "/c.pem" } })).toThrow(/tls\.keyFile/);
    expect(() => resolveBrokerConfig({ auth: k, nats: { tls: { certFile: "/c.pem" } } })).toThrow(
      /nats\.tls\.keyFile: certFile and keyFile go together/,
    );
    const tls = { certFile: "/c.pem", keyFile: "/k.pem" };
    expect(resolveBrokerConfig({ auth: k, tls }).tls?.requireClientCert).toBe(false);
    expect(
      resolveBrokerConfig({ auth: k, tls: { ...tls, clientCaFile: "/ca.pem" } }).tls?.requireClientCert,
    ).toBe(true);
    expect(resolveBrokerConfig({ auth: k }).tls).toBeUndefined();
  });
});

describe("broker config errors", () => {
  it("say what is missing or wrong, in the file's words", () => {
    expect(() => resolveBrokerConfig({})).toThrow("auth: required (expected a mapping)");
    expect(() => resolveBrokerConfig({ auth: { keyFile: 3 } })).toThrow(
      "auth.keyFile: expected a string, got 3",
    );
  });
});
