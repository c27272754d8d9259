import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

import { decode as decodeJwt, encodeAccount, encodeOperator, encodeUser, fmtCreds } from "@nats-io/jwt";
import type { Permissions } from "@nats-io/jwt";
import { createAccount, createOperator, createUser, fromSeed, type KeyPair } from "@nats-io/nkeys";

import { Bus, FabricError } from "../../common/index.js";

/** NATS credentials handed to one agent: a user JWT, its seed, and the inbox prefix it must use. */
export interface AgentNatsCredentials {
  readonly userJwt: string;
  readonly userSeed: string;
  readonly inboxPrefix: string;
}

/** The inbox prefix of an endpoint's agent: only it may subscribe below it. */
export function agentInboxPrefix(endpointId: string): string {
  return `_INBOX_${endpointId}`;
}

/**
 * The exact NATS permissions of an endpoint's agent: its own task consumer (pull, ack, info), its
 * own result and status subjects, its control subject (cancellations), its inbox, and its own
 * payload bucket (a stream of its own: no other endpoint's objects are reachable through it),
 * which it reads and writes without creating consumers.
 */
export function agentPermissions(endpointId: string, consumer: string): Permissions {
  const stream = Bus.taskStream;
  const obj = `OBJ_${Bus.payloadBucket(endpointId)}`;
  const o = `$O.${Bus.payloadBucket(endpointId)}`;
  return {
    pub: {
      allow: [
        "$JS.API.INFO",
        `$JS.API.CONSUMER.INFO.${stream}.${consumer}`,
        `$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`,
        `$JS.ACK.${stream}.${consumer}.>`,
        Bus.resultSubject(endpointId),
        Bus.resultRequestSubject(endpointId),
        Bus.taskCheckSubject(endpointId),
        Bus.endpointStatusSubject(endpointId),
        // Its payload bucket, read with message gets (metadata, then chunk by chunk) and written
        // chunk by chunk (a rewritten object's old chunks are purged). No consumer of any kind:
        // the server delivers a push consumer's messages to whatever subject its creator names,
        // whatever that creator may publish to. No direct get either: it answers with the stored
        // bytes, and the server sends an answer to any reply subject the requester names.
        `$JS.API.STREAM.MSG.GET.${obj}`,
        `$JS.API.STREAM.PURGE.${obj}`,
        `${o}.>`,
      ],
    },
    sub: { allow: [`${agentInboxPrefix(endpointId)}.>`, Bus.controlSubject(endpointId)] },
  };
}

/**
 * Mints per-endpoint NATS user JWTs with the application account's signing key (operator mode).
 * The server checks them against the account JWT it was preloaded with: no reload needed.
 */
export class NatsCredentialMinter {
  private constructor(
    private readonly signingKey: KeyPair,
    readonly account: string,
  ) {}

  /**
   * @param signingKeySeed the account signing key's seed (`SA…`)
   * @param account the account's public key (`A…`)
   */
  static fromSeed(signingKeySeed: string, account: string): NatsCredentialMinter {
    let kp: KeyPair;
    try {
      kp = fromSeed(new TextEncoder().encode(signingKeySeed.trim()));
    } catch (err) {
      throw new FabricError(
        "INVALID_ARGUMENT",
        `the NATS account signing key is not an nkey seed: ${(err as Error).message}`,
      );
    }
    if (!/^A[A-Z2-7]{55}$/.test(account)) {
      throw new FabricError("INVALID_ARGUMENT", "the NATS account must be an account public key (A…)");
    }
    return new NatsCredentialMinter(kp, account);
  }

  /** Credentials for the agent of `endpointId`, allowed to use task consumer `consumer` only. */
  async mintAgent(endpointId: string, consumer: string, ttlSeconds: number): Promise<AgentNatsCredentials> {
    const user = createUser();
    const perms = agentPermissions(endpointId, consumer);
    const userJwt = await encodeUser(
      `endpoint-${endpointId}`,
      user,
      this.signingKey,
      { issuer_account: this.account, ...perms },
      { exp: Math.floor(Date.now() / 1000) + ttlSeconds },
    );
    return {
      userJwt,
      userSeed: new TextDecoder().decode(user.getSeed()),
      inboxPrefix: agentInboxPrefix(endpointId),
    };
  }
}

/** The account a user JWT belongs to (its `issuer_account`, or its issuer when signed by the account). */
export function accountOfUserJwt(jwt: string): string {
  const claims = decodeJwt<{ issuer_account?: string }>(jwt);
  return claims.nats.issuer_account ?? claims.iss;
}

/** Reads the JWT out of a `.creds` file. */
export function jwtOfCredsFile(file: string): string {
  const text = readFileSync(file, "utf8");
  const m = /-----BEGIN NATS USER JWT-----\s*(\S+)\s*------END NATS USER JWT------/.exec(text);
  if (!m) throw new FabricError("INVALID_ARGUMENT", `${file} is not a NATS .creds file`);
  return m[1]!;
}

/** What {@link createOperatorSetup} wrote. */
export interface OperatorSetup {
  /** nats-server configuration lines: operator, system account, MEMORY resolver with its preload. */
  readonly serverConfig: string;
  /** The broker's own NATS user (unrestricted within the application account), mode 0600. */
  readonly brokerCredsFile: string;
  /** The application account's signing key seed, mode 0600: the broker mints agents' users with it. */
  readonly signingKeyFile: string;
  /** The application account's public key. */
  readonly account: string;
}

/**
 * Creates a fresh operator, system account and application account (JetStream enabled, one
 * signing key), the broker's user credentials, and the server configuration that preloads both
 * accounts (`resolver: MEMORY`). For the dev kit and tests; production operators use `nsc`.
 */
export async function createOperatorSetup(dir: string): Promise<OperatorSetup> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const operator = createOperator();
  const sys = createAccount();
  const app = createAccount();
  const signing = createAccount();
  const operatorJwt = await encodeOperator("fabric", operator, {
    system_account: sys.getPublicKey(),
  });
  const sysJwt = await encodeAccount("SYS", sys, {}, { signer: operator });
  const appJwt = await encodeAccount(
    "FABRIC",
    app,
    {
      signing_keys: [signing.getPublicKey()],
      limits: {
        subs: -1,
        data: -1,
        payload: -1,
        imports: -1,
        exports: -1,
        wildcards: true,
        conn: -1,
        leaf: -1,
        mem_storage: -1,
        disk_storage: -1,
        streams: -1,
        consumer: -1,
      },
    },
    { signer: operator },
  );
  const broker = createUser();
  const brokerJwt = await encodeUser("fabric-broker", broker, signing, {
    issuer_account: app.getPublicKey(),
  });
  const brokerCredsFile = path.join(dir, "broker.creds");
  writeFileSync(brokerCredsFile, fmtCreds(brokerJwt, broker), { mode: 0o600 });
  const signingKeyFile = path.join(dir, "account-signing.nk");
  writeFileSync(signingKeyFile, new TextDecoder().decode(signing.getSeed()), { mode: 0o600 });
  const serverConfig = [
    `operator: ${operatorJwt}`,
    `system_account: ${sys.getPublicKey()}`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${sys.getPublicKey()}: ${sysJwt}`,
    `  ${app.getPublicKey()}: ${appJwt}`,
    "}",
    "",
  ].join("\n");
  return { serverConfig, brokerCredsFile, signingKeyFile, account: app.getPublicKey() };
}
