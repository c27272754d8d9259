import { createPublicKey, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

import * as grpc from "@grpc/grpc-js";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import * as jose from "jose";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { REVOKED_TOKENS_BUCKET, TokenAuthority } from "../cloud/index.js";
import { type FabricError, errorFromInfo } from "../common/index.js";
import { runCli } from "../devkit/index.js";
import type { SessionResponse } from "../proto/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { outcomeOf as outcome } from "./support/outcomes.js";
import { jsSpec, RawClients } from "./support/raw-clients.js";

/** A tiny OpenID Connect issuer: an RS256 key published as a JWKS on 127.0.0.1. */
class TestIdp {
  private constructor(
    readonly server: Server,
    readonly issuer: string,
    private readonly key: jose.CryptoKey,
  ) {}

  static async start(): Promise<TestIdp> {
    const { privateKey, publicKey } = await jose.generateKeyPair("RS256", { extractable: true });
    const jwk = { ...(await jose.exportJWK(publicKey)), kid: "k1", alg: "RS256", use: "sig" };
    const server = createServer((req, res) => {
      if (req.url === "/jwks") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ keys: [jwk] }));
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    return new TestIdp(server, `http://127.0.0.1:${port}`, privateKey);
  }

  get jwksUri(): string {
    return `${this.issuer}/jwks`;
  }

  token(
    sub: string,
    over: { aud?: string; iss?: string; exp?: number; key?: jose.CryptoKey } = {},
  ): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new jose.SignJWT({ kind: "endpoint", owner: "alice" }) // kind claims of an IdP mean nothing
      .setProtectedHeader({ alg: "RS256", kid: "k1" })
      .setIssuer(over.iss ?? this.issuer)
      .setAudience(over.aud ?? "fabric")
      .setSubject(sub)
      .setIssuedAt(now)
      .setExpirationTime(over.exp ?? now + 600)
      .setJti(`idp-${sub}-${now}-${Math.random()}`)
      .sign(over.key ?? this.key);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

describe("authentication: pinned algorithms, claims, kinds, revocation, external OIDC, rate limits", () => {
  let idp: TestIdp;
  let authority: TokenAuthority;

  // The IdP starts before the fabric (the broker's config names it) and stops after it.
  beforeAll(async () => {
    idp = await TestIdp.start();
  });

  afterAll(async () => {
    await idp?.stop();
  });

  const stack = useFabric({
    name: "auth",
    brokerConfig: () => ({
      auth: {
        oidc: {
          issuer: idp.issuer,
          jwksUri: idp.jwksUri,
          audience: "fabric",
          users: { "sub-alice": "alice" },
        },
      },
      limits: { callsPerSecond: 20, callBurst: 20 },
    }),
  });
  const as = (token: string) => RawClients.withToken(stack.fabric, token);

  beforeAll(async () => {
    authority = await TokenAuthority.fromKeyFile(stack.fabric.broker.keyFile, "fabric-broker", "fabric-api");
  });

  /** A token signed with the broker's real key but with chosen header and claims. */
  async function brokerSigned(claims: jose.JWTPayload, header: jose.JWTHeaderParameters = { alg: "EdDSA" }) {
    const pem = readFileSync(stack.fabric.broker.keyFile, "utf8");
    const key = await jose.importPKCS8(pem, "EdDSA");
    const now = Math.floor(Date.now() / 1000);
    return new jose.SignJWT({
      kind: "user",
      iss: "fabric-broker",
      aud: "fabric-api",
      sub: "mallory",
      exp: now + 600,
      nbf: now - 5,
      jti: `t-${Math.random()}`,
      ...claims,
    })
      .setProtectedHeader(header)
      .sign(key);
  }

  it("rejects alg none, algorithm confusion, and wrong iss / aud / exp / nbf / kind", async () => {
    const now = Math.floor(Date.now() / 1000);
    const payload = { kind: "user", iss: "fabric-broker", aud: "fabric-api", sub: "mallory", exp: now + 600 };
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const none = `${b64({ alg: "none", typ: "JWT" })}.${b64(payload)}.`;
    // HS256 keyed with the broker's public key: the classic confusion attack.
    const pub = createPublicKey(readFileSync(stack.fabric.broker.keyFile, "utf8"))
      .export({ type: "spki", format: "pem" })
      .toString();
    const confused = await new jose.SignJWT(payload)
      .setProtectedHeader({ alg: "HS256" })
      .sign(new TextEncoder().encode(pub));
    const cases: Array<[string, string, RegExp]> = [
      ["alg none", none, /algorithm|malformed|unsupported/i],
      ["HS256 with the public key", confused, /algorithm/i],
      ["wrong issuer", await brokerSigned({ iss: "evil" }), /iss/],
      ["wrong audience", await brokerSigned({ aud: "other-api" }), /aud/],
      ["expired", await brokerSigned({ exp: now - 120 }), /expired/],
      ["not yet valid", await brokerSigned({ nbf: now + 3600 }), /nbf/],
      ["unknown kind", await brokerSigned({ kind: "admin" }), /kind/],
      ["endpoint kind without owner", await brokerSigned({ kind: "endpoint" }), /kind/],
      ["garbage", "not.a.jwt", /malformed|invalid/i],
    ];
    for (const [what, token, re] of cases) {
      const o = await outcome(as(token).listFunctions());
      expect(o.code, what).toBe("UNAUTHENTICATED");
      expect(o.message, what).toMatch(re);
    }
    expect((await outcome(as(await authority.issueUserToken("alice", 60)).listFunctions())).code).toBe("OK");
  });

  it("user tokens and endpoint credentials are different kinds; neither works as the other", async () => {
    const alice = as(await authority.issueUserToken("alice", 600));
    const reg = await alice.newEndpoint("kinds");
    const ep = as(reg.token);
    // Endpoint credentials make no user calls …
    // (Thunks, so each call starts only when it is awaited: a rejection never waits unobserved.)
    for (const call of [
      () => ep.registerFunction({ name: "x", description: "", spec: jsSpec("const f = () => 1;") }),
      () => ep.listFunctions(),
      () => ep.listEndpoints(),
      () => ep.registerEndpoint({ name: "y", description: "", endpointId: "" }),
      () => ep.submitTasks({ tasks: [], groupId: "", idempotencyKey: "" }),
    ]) {
      expect((await outcome(call())).code).toBe("PERMISSION_DENIED");
    }
    // … and see only their own endpoint.
    const other = await alice.newEndpoint("other");
    expect((await ep.getEndpoint({ endpointId: reg.id })).endpoint?.id).toBe(reg.id);
    expect((await outcome(ep.getEndpoint({ endpointId: other.id }))).code).toBe("NOT_FOUND");
    // A user token cannot connect as an endpoint.
    const connect = (c: RawClients) => c.connectEndpoint({ agentVersion: "t", hostname: "t" });
    expect((await outcome(connect(alice))).code).toBe("PERMISSION_DENIED");
    expect((await outcome(connect(ep))).code).toBe("OK");
  });

  it("a revoked token is refused at once, even though it was verified (and cached) before", async () => {
    const token = await authority.issueUserToken("bob", 600);
    const bob = as(token);
    expect((await outcome(bob.listFunctions())).code).toBe("OK");
    const out = await runCli(
      "cloud/cli.js",
      ["revoke", "-c", stack.fabric.broker.configFile, "--token", token],
      stack.fabric.dir,
    );
    expect(out).toMatch(/revoked/);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const o = await outcome(bob.listFunctions());
      if (o.code === "UNAUTHENTICATED") {
        expect(o.message).toMatch(/revoked/);
        break;
      }
      if (Date.now() > deadline) throw new Error("revocation did not apply");
      await new Promise((r) => setTimeout(r, 50));
    }
    // Other tokens of the same user still work.
    expect((await outcome(as(await authority.issueUserToken("bob", 600)).listFunctions())).code).toBe("OK");
  });

  it("a token revoked while its Session stream is open is refused on that stream's next request", async () => {
    const token = await authority.issueUserToken("carol", 600);
    const carol = as(token);
    const stream = carol.tasks.session(carol.md.clone());
    const answers: SessionResponse[] = [];
    stream.on("data", (a: SessionResponse) => answers.push(a));
    stream.on("error", () => undefined);
    const answerTo = async (ref: number) => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const a = answers.find((x) => x.ref === ref);
        if (a) return a.msg?.$case === "error" ? errorFromInfo(a.msg.value) : a.msg?.$case;
        if (Date.now() > deadline) throw new Error(`no answer to ${ref}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const watch = (ref: number) =>
      stream.write({ ref, op: { $case: "watch", value: { taskIds: [randomUUID()], groupId: "" } } });
    watch(1);
    expect(await answerTo(1)).toMatchObject({ code: "NOT_FOUND" }); // authenticated, then looked up
    await runCli(
      "cloud/cli.js",
      ["revoke", "-c", stack.fabric.broker.configFile, "--token", token],
      stack.fabric.dir,
    );
    for (let ref = 2; ; ref++) {
      watch(ref);
      const a = (await answerTo(ref)) as FabricError;
      if (a.code === "UNAUTHENTICATED") {
        expect(a.message).toMatch(/revoked/);
        break;
      }
      if (ref > 200) throw new Error("revocation did not apply to the open session");
      await new Promise((r) => setTimeout(r, 50));
    }
    stream.end();
  });

  it("re-registering an endpoint revokes its previous credential; the new one works", async () => {
    const alice = as(await authority.issueUserToken("alice", 600));
    const first = await alice.registerEndpoint({ name: "rotated", description: "", endpointId: "" });
    const id = first.endpoint!.id;
    const old = as(first.endpointToken);
    expect((await outcome(old.getEndpoint({ endpointId: id }))).code).toBe("OK");
    const second = await alice.registerEndpoint({ name: "rotated", description: "", endpointId: id });
    expect(second.endpoint!.id).toBe(id);
    expect(second.endpointToken).not.toBe(first.endpointToken);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const o = await outcome(old.getEndpoint({ endpointId: id }));
      if (o.code === "UNAUTHENTICATED") {
        expect(o.message).toMatch(/revoked/);
        break;
      }
      if (Date.now() > deadline) throw new Error("the previous credential still works");
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await outcome(as(second.endpointToken).getEndpoint({ endpointId: id }))).code).toBe("OK");
  });

  it("revocations of tokens that have expired anyway are pruned; live ones are kept", async () => {
    const nc = await connect({ servers: stack.fabric.nats.url });
    try {
      const kv = await new Kvm(nc).open(REVOKED_TOKENS_BUCKET);
      const now = Math.floor(Date.now() / 1000);
      await TokenAuthority.revoke(kv, "long-expired", now - 3600);
      await TokenAuthority.revoke(kv, "still-live", now + 3600);
      const own = await TokenAuthority.fromKeyFile(path.join(stack.fabric.dir, "prune-key.pem"), "i", "a");
      await own.followRevocations(kv, pino({ level: "silent" }));
      expect(await own.pruneRevocations()).toBeGreaterThanOrEqual(1);
      const keys: string[] = [];
      for await (const k of await kv.keys()) keys.push(k);
      expect(keys).toContain("still-live");
      expect(keys).not.toContain("long-expired");
    } finally {
      await nc.close();
    }
  });

  it("accepts an external OIDC issuer's tokens, verified against its JWKS, mapped to a fabric user", async () => {
    const alice = as(await authority.issueUserToken("alice", 600));
    const fid = await alice.registerJs("const f = () => 1;", "f", "mine");
    // sub-alice maps to alice: same functions.
    const viaIdp = as(await idp.token("sub-alice"));
    expect((await viaIdp.getFunction({ functionId: fid })).function?.owner).toBe("alice");
    // Another subject is its own user, "oidc:<sub>"; the IdP's `kind` claim gives it no endpoint powers.
    const carol = as(await idp.token("carol-123"));
    const reg = await carol.registerFunction({
      name: "c",
      description: "",
      spec: jsSpec("const f = () => 1;"),
    });
    expect(reg.function?.owner).toBe("oidc:carol-123");
    expect((await outcome(carol.getFunction({ functionId: fid }))).code).toBe("NOT_FOUND");
    // Wrong audience, expired, or signed by another key: refused.
    const otherKey = (await jose.generateKeyPair("RS256")).privateKey;
    for (const token of [
      await idp.token("sub-alice", { aud: "someone-else" }),
      await idp.token("sub-alice", { exp: Math.floor(Date.now() / 1000) - 120 }),
      await idp.token("sub-alice", { key: otherKey }),
    ]) {
      expect((await outcome(as(token).listFunctions())).code).toBe("UNAUTHENTICATED");
    }
  });

  it("rate limits each caller with RESOURCE_EXHAUSTED and a retry-after; other callers are unaffected", async () => {
    const flood = as(await authority.issueUserToken("flood", 600));
    const calm = as(await authority.issueUserToken("calm", 600));
    // The generated client directly, to see the gRPC status and metadata as any client would.
    const raw = () =>
      new Promise<grpc.ServiceError | null>((resolve) =>
        flood.functions.listFunctions({}, flood.md, (err) => resolve(err)),
      );
    const results = await Promise.all(Array.from({ length: 40 }, raw));
    const limited = results.filter((e): e is grpc.ServiceError => e?.code === grpc.status.RESOURCE_EXHAUSTED);
    expect(limited.length).toBeGreaterThan(0);
    expect(limited[0]!.details).toMatch(/retry after \d+ ms/);
    const md = limited[0]!.metadata;
    expect(Number(md.get("retry-after-ms")[0])).toBeGreaterThan(0);
    expect((await outcome(calm.listFunctions())).code).toBe("OK");
    // After the advertised wait, the flooder is admitted again.
    await new Promise((r) => setTimeout(r, Number(md.get("retry-after-ms")[0]) + 100));
    expect((await outcome(flood.listFunctions())).code).toBe("OK");
  });
});
