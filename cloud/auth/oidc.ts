import * as jose from "jose";

import { FabricError } from "../../common/index.js";

/** Options of an external OpenID Connect issuer (broker config `auth.oidc`). */
export interface OidcOptions {
  readonly issuer: string;
  readonly jwksUri: string;
  readonly audience: string;
  readonly algorithms: readonly string[];
  readonly userPrefix: string;
  readonly users: Readonly<Record<string, string>>;
}

/**
 * Verifies tokens of an external OpenID Connect issuer against its JWKS (fetched and cached by
 * jose, refetched when a token names an unknown `kid`) and maps their subject to a fabric user.
 * Algorithms are pinned to the configured list; `iss`, `aud`, `exp` and `nbf` are checked.
 */
export class OidcVerifier {
  private readonly jwks: ReturnType<typeof jose.createRemoteJWKSet>;

  constructor(private readonly opts: OidcOptions) {
    this.jwks = jose.createRemoteJWKSet(new URL(opts.jwksUri), {
      timeoutDuration: 5_000,
      cooldownDuration: 30_000,
      cacheMaxAge: 10 * 60_000,
    });
  }

  get issuer(): string {
    return this.opts.issuer;
  }

  /** The fabric user a verified token stands for, and its token id (`jti`, if any). */
  async verify(token: string): Promise<{ userId: string; tokenId: string; exp: number }> {
    let payload: jose.JWTPayload;
    try {
      ({ payload } = await jose.jwtVerify(token, this.jwks, {
        algorithms: [...this.opts.algorithms],
        issuer: this.opts.issuer,
        audience: this.opts.audience,
        requiredClaims: ["exp", "sub"],
      }));
    } catch (err) {
      if (err instanceof jose.errors.JWKSTimeout || !(err instanceof jose.errors.JOSEError)) {
        throw new FabricError("UNAVAILABLE", `cannot reach the identity provider's keys: ${String(err)}`);
      }
      throw err;
    }
    const sub = payload.sub ?? "";
    const userId = this.opts.users[sub] ?? `${this.opts.userPrefix}${sub}`;
    return { userId, tokenId: payload.jti ?? "", exp: payload.exp ?? 0 };
  }
}
