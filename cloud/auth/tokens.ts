import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

import * as jose from "jose";
import type { Logger } from "pino";

import { FabricError, BrokerMessageKeys, deriveMessageRoot } from "../../common/index.js";
import type { RevocationBucket } from "../state/revocations.js";
import type { OidcVerifier } from "./oidc.js";
import type { RateLimiter } from "./rate-limit.js";

const ALG = "EdDSA";

/** Who is calling: a user, or an endpoint agent acting for its owner. */
export type Principal =
  | { readonly kind: "user"; readonly userId: string; readonly tokenId: string }
  | {
      readonly kind: "endpoint";
      readonly endpointId: string;
      readonly owner: string;
      readonly tokenId: string;
    };

/**
 * Issues and verifies the broker's own JWTs (Ed25519, `alg` pinned to EdDSA). Tokens carry
 * `kind` ("user" | "endpoint"), `sub`, `iss`, `aud`, `exp`, `nbf`, `jti`. Optionally also accepts
 * an external OpenID Connect issuer's tokens as user tokens ({@link useOidc}), and refuses
 * tokens whose id was revoked ({@link followRevocations}), cached or not.
 */
export class TokenAuthority {
  private oidc: OidcVerifier | undefined;
  private readonly revoked = new Set<string>();
  /** Admits authenticated calls per caller (set by the broker from `limits.callsPerSecond`). */
  rateLimiter: RateLimiter | undefined;

  /**
   * Keys of the messages brokers send on NATS (task, control, event messages), derived from the
   * signing key: every replica with the same key file signs alike (see common/message-auth.ts).
   */
  readonly messageKeys: BrokerMessageKeys;

  private constructor(
    private readonly privateKey: jose.CryptoKey,
    private readonly publicKey: jose.CryptoKey,
    private readonly issuer: string,
    private readonly audience: string,
    seed: Uint8Array,
  ) {
    this.messageKeys = new BrokerMessageKeys(deriveMessageRoot(seed));
  }

  /** Loads the signing key from `keyFile`, creating it (mode 0600) when absent. */
  static async fromKeyFile(
    keyFile: string,
    issuer: string,
    audience: string,
    opts: { create?: boolean } = {},
  ): Promise<TokenAuthority> {
    let pem: string;
    if (existsSync(keyFile)) {
      pem = readFileSync(keyFile, "utf8");
    } else if (opts.create === false) {
      throw new FabricError(
        "FAILED_PRECONDITION",
        `the broker's signing key ${keyFile} does not exist: check auth.keyFile in the broker config (the broker creates the key at its first start; a token signed with another key would be refused)`,
      );
    } else {
      const { privateKey } = await jose.generateKeyPair(ALG, { extractable: true });
      pem = await jose.exportPKCS8(privateKey);
      mkdirSync(dirname(keyFile), { recursive: true, mode: 0o700 });
      try {
        writeFileSync(keyFile, pem, { mode: 0o600, flag: "wx" });
      } catch {
        // Another replica created it first: use theirs.
        pem = readFileSync(keyFile, "utf8");
      }
    }
    let privateKey: jose.CryptoKey;
    try {
      privateKey = await jose.importPKCS8(pem, ALG, { extractable: true });
    } catch (err) {
      throw new FabricError(
        "INVALID_ARGUMENT",
        `${keyFile} is not an Ed25519 PKCS#8 PEM key: ${(err as Error).message}`,
      );
    }
    const jwk = await jose.exportJWK(privateKey);
    const publicKey = (await jose.importJWK({ kty: jwk.kty, crv: jwk.crv, x: jwk.x }, ALG)) as jose.CryptoKey;
    // The private key's seed (JWK `d`) is what the message keys derive from.
    const seed = Buffer.from(jwk.d ?? "", "base64url");
    return new TokenAuthority(privateKey, publicKey, issuer, audience, seed);
  }

  /** A user token valid for `ttlSeconds`. */
  async issueUserToken(userId: string, ttlSeconds: number): Promise<string> {
    return this.sign({ kind: "user" }, userId, ttlSeconds);
  }

  /** An endpoint credential: acts only as that endpoint. */
  async issueEndpointToken(
    endpointId: string,
    owner: string,
    ttlSeconds = 10 * 365 * 24 * 3600,
  ): Promise<string> {
    return (await this.issueEndpointCredential(endpointId, owner, ttlSeconds)).token;
  }

  /** An endpoint credential with its id and expiry (to revoke it when it is replaced). */
  async issueEndpointCredential(
    endpointId: string,
    owner: string,
    ttlSeconds = 10 * 365 * 24 * 3600,
  ): Promise<{ token: string; tokenId: string; expSeconds: number }> {
    return this.signed({ kind: "endpoint", owner }, endpointId, ttlSeconds);
  }

  private async sign(claims: Record<string, string>, subject: string, ttlSeconds: number): Promise<string> {
    return (await this.signed(claims, subject, ttlSeconds)).token;
  }

  private async signed(
    claims: Record<string, string>,
    subject: string,
    ttlSeconds: number,
  ): Promise<{ token: string; tokenId: string; expSeconds: number }> {
    const now = Math.floor(Date.now() / 1000);
    const tokenId = randomUUID();
    const expSeconds = now + ttlSeconds;
    const token = await new jose.SignJWT(claims)
      .setProtectedHeader({ alg: ALG, typ: "JWT" })
      .setIssuer(this.issuer)
      .setAudience(this.audience)
      .setSubject(subject)
      .setIssuedAt(now)
      .setNotBefore(now - 5)
      .setExpirationTime(expSeconds)
      .setJti(tokenId)
      .sign(this.privateKey);
    return { token, tokenId, expSeconds };
  }

  /** Tokens verified recently, so a busy caller pays for one signature check, not one per call. */
  private readonly verified = new Map<string, { principal: Principal; expMs: number }>();

  /** Accepts tokens of an external OpenID Connect issuer as user tokens. */
  useOidc(verifier: OidcVerifier): void {
    this.oidc = verifier;
  }

  /**
   * Loads the revoked token ids from `kv` (the revocations bucket) and follows its changes, so that a revocation made on
   * any replica (or with `fabric-broker revoke`) applies here within moments, cache or not.
   */
  async followRevocations(kv: RevocationBucket, log: Logger): Promise<void> {
    this.revocations = kv;
    for await (const key of await kv.keys()) this.revoked.add(key);
    const watch = await kv.watch({ include: "updates" });
    void (async () => {
      for await (const e of watch) {
        if (e.operation === "PUT") {
          this.revoked.add(e.key);
          log.info({ tokenId: e.key }, "token revoked");
        } else this.revoked.delete(e.key);
      }
    })();
  }

  private revocations: RevocationBucket | undefined;

  /** Revokes a token id in the bucket this authority follows (see {@link followRevocations}). */
  async revokeTokenId(tokenId: string, expSeconds: number): Promise<void> {
    if (!this.revocations) throw new FabricError("INTERNAL", "token revocation is not set up");
    await TokenAuthority.revoke(this.revocations, tokenId, expSeconds);
  }

  /**
   * Forgets revocations of tokens that have expired anyway (they fail verification by `exp`);
   * returns how many. Keeps the revocation list as small as the set of live revoked tokens.
   */
  async pruneRevocations(nowSeconds = Math.floor(Date.now() / 1000)): Promise<number> {
    const kv = this.revocations;
    if (!kv) return 0;
    let pruned = 0;
    for await (const key of await kv.keys()) {
      const e = await kv.get(key);
      if (!e || e.operation !== "PUT") continue;
      const exp = Number(new TextDecoder().decode(e.value));
      // A minute past `exp`, beyond any clock skew the verifier tolerates.
      if (Number.isFinite(exp) && exp > 0 && exp + 60 < nowSeconds) {
        await kv.purge(key);
        pruned++;
      }
    }
    return pruned;
  }

  /** Marks a token id revoked in `kv` (every replica following it refuses the token from then on). */
  static async revoke(kv: RevocationBucket, tokenId: string, expSeconds: number): Promise<void> {
    await kv.put(tokenId, new TextEncoder().encode(String(expSeconds)));
  }

  /** Verifies a bearer token; anything wrong with it is UNAUTHENTICATED with the reason. */
  async verify(token: string): Promise<Principal> {
    const hit = this.verified.get(token);
    const principal = hit && hit.expMs > Date.now() ? hit.principal : await this.verifyAndRemember(token);
    if (principal.tokenId && this.revoked.has(principal.tokenId)) {
      throw new FabricError("UNAUTHENTICATED", "invalid token: it has been revoked");
    }
    return principal;
  }

  private async verifyAndRemember(token: string): Promise<Principal> {
    const principal = await this.verifyUncached(token);
    if (this.verified.size >= 10_000) this.verified.clear();
    const { exp } = jose.decodeJwt(token);
    // Re-check at least every minute, and never past expiry.
    this.verified.set(token, { principal, expMs: Math.min((exp ?? 0) * 1000, Date.now() + 60_000) });
    return principal;
  }

  private async verifyUncached(token: string): Promise<Principal> {
    if (this.oidc) {
      let iss: string | undefined;
      try {
        iss = jose.decodeJwt(token).iss;
      } catch {
        throw new FabricError("UNAUTHENTICATED", "invalid token: malformed token");
      }
      if (iss === this.oidc.issuer && iss !== this.issuer) {
        try {
          const { userId, tokenId } = await this.oidc.verify(token);
          return { kind: "user", userId, tokenId };
        } catch (err) {
          if (err instanceof FabricError) throw err;
          throw new FabricError("UNAUTHENTICATED", `invalid token: ${describeJoseError(err)}`);
        }
      }
    }
    let payload: jose.JWTPayload;
    try {
      ({ payload } = await jose.jwtVerify(token, this.publicKey, {
        algorithms: [ALG],
        issuer: this.issuer,
        audience: this.audience,
        requiredClaims: ["exp", "sub", "kind"],
      }));
    } catch (err) {
      throw new FabricError("UNAUTHENTICATED", `invalid token: ${describeJoseError(err)}`);
    }
    const sub = payload.sub ?? "";
    const tokenId = payload.jti ?? "";
    if (payload["kind"] === "user" && sub) return { kind: "user", userId: sub, tokenId };
    if (payload["kind"] === "endpoint" && sub && typeof payload["owner"] === "string") {
      return { kind: "endpoint", endpointId: sub, owner: payload["owner"], tokenId };
    }
    throw new FabricError("UNAUTHENTICATED", "invalid token: unknown token kind");
  }
}

function describeJoseError(err: unknown): string {
  if (err instanceof jose.errors.JWTExpired)
    return "the token has expired; ask your broker's operator for a new one";
  if (err instanceof jose.errors.JWSSignatureVerificationFailed) return "bad signature";
  if (err instanceof jose.errors.JOSEAlgNotAllowed) return "algorithm not allowed";
  if (err instanceof jose.errors.JWTClaimValidationFailed) return `claim "${err.claim}" ${err.reason}`;
  if (err instanceof jose.errors.JWSInvalid || err instanceof jose.errors.JWTInvalid)
    return "malformed token";
  return err instanceof Error ? err.message : String(err);
}
