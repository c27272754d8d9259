import { readFileSync } from "node:fs";

import { parse as parseYaml } from "yaml";
import { z } from "zod";

import { FabricError, describeIssues as describeIssuesOf } from "../common/index.js";

const MiB = 1024 * 1024;

/** Options of the cloud broker. Parse files, env and flags once with {@link resolveBrokerConfig}. */
export const BrokerConfigSchema = z
  .object({
    /**
     * Address the gRPC server listens on.
     * @default "127.0.0.1:50051"
     */
    listen: z.string().min(1).default("127.0.0.1:50051"),
    /**
     * TLS of the broker's listeners (the gRPC one today; the HTTP one will serve the same block).
     * The files are read again when they change or on SIGHUP; new connections get the new
     * certificate, open ones keep theirs. Without it the listener is plaintext, and the broker
     * warns at start when that listener is reachable from other machines.
     * @default none (plaintext)
     */
    tls: z
      .object({
        /** PEM certificate chain the broker presents (leaf first). */
        certFile: z.string().min(1),
        /** PEM private key of that certificate. */
        keyFile: z.string().min(1),
        /**
         * PEM bundle of the CAs whose client certificates are accepted (mTLS).
         * @default none (client certificates are not asked for)
         */
        clientCaFile: z.string().min(1).optional(),
        /**
         * With `clientCaFile`: refuse clients without a certificate from those CAs. `false` asks
         * for one but lets every client in, a step while rolling mTLS out, not a protection.
         * @default true when `clientCaFile` is set
         */
        requireClientCert: z.boolean().optional(),
      })
      .strict()
      .refine((t) => t.requireClientCert !== true || t.clientCaFile !== undefined, {
        message: "requireClientCert needs clientCaFile (the CAs client certificates must come from)",
        path: ["clientCaFile"],
      })
      .transform((t) => ({ ...t, requireClientCert: t.requireClientCert ?? t.clientCaFile !== undefined }))
      .optional(),
    /**
     * The HTTP/JSON API (docs/http.md): its own listener in the same process, the same tokens,
     * validation and owner rules as gRPC. Plaintext: put it behind a TLS-terminating proxy, or
     * keep it on loopback.
     * @default off
     */
    http: z
      .strictObject({
        /** `host:port` it listens on (port 0: any free port). */
        listen: z.string().min(1),
        /** Serve the web dashboard (docs/dashboard.md) at `/ui/` on the same listener. @default true */
        dashboard: z.boolean().default(true),
      })
      .optional(),
    /** Identifies this replica in task histories and logs. @default hostname/pid */
    brokerId: z.string().min(1).optional(),
    nats: z
      .object({
        /** NATS servers the broker (and, as told by the broker, the agents) connect to. @default ["nats://127.0.0.1:4222"] */
        servers: z.array(z.string().min(1)).min(1).default(["nats://127.0.0.1:4222"]),
        /**
         * Servers handed to agents, when they reach NATS by another address than the broker does.
         * @default the same as `servers`
         */
        agentServers: z.array(z.string().min(1)).optional(),
        /** Replicas of every stream, KV bucket and object store (1, or 3 on a cluster). @default 1 */
        replicas: z.union([z.literal(1), z.literal(3), z.literal(5)]).default(1),
        /**
         * The broker's own NATS user (`.creds` file) when NATS runs in operator mode.
         * @default none (an open NATS: no per-endpoint isolation, for a laptop)
         */
        credentials: z.string().min(1).optional(),
        /**
         * File holding the seed (`SA…`) of the application account's signing key. With it, each
         * ConnectEndpoint mints the agent a NATS user limited to that endpoint's subjects.
         * Requires `credentials`.
         */
        accountSigningKeyFile: z.string().min(1).optional(),
        /**
         * TLS towards NATS. It is used when a server URL is `tls://…` or when any field is set
         * (then every server must offer TLS). Agents do not get these files: they verify NATS
         * with their own `natsTls` settings.
         * @default none (TLS only for `tls://` URLs, verified against Node's trusted roots)
         */
        tls: z
          .object({
            /** PEM bundle of the CAs that sign the NATS servers' certificates. @default Node's trusted roots */
            caFile: z.string().min(1).optional(),
            /** PEM client certificate, for a nats-server with `verify: true`. */
            certFile: z.string().min(1).optional(),
            /** PEM private key of `certFile`. */
            keyFile: z.string().min(1).optional(),
          })
          .strict()
          .refine((t) => (t.certFile === undefined) === (t.keyFile === undefined), {
            message: "certFile and keyFile go together",
            path: ["keyFile"],
          })
          .optional(),
        /** Lifetime of an agent's NATS user; the agent gets a new one each time it connects. @default 30 days */
        agentCredentialTtlSeconds: z
          .number()
          .int()
          .positive()
          .default(30 * 24 * 3600),
      })
      .refine((n) => n.accountSigningKeyFile === undefined || n.credentials !== undefined, {
        message: "accountSigningKeyFile needs credentials (the broker's own NATS user)",
        path: ["credentials"],
      })
      .prefault({}),
    auth: z
      .object({
        /** PEM file of the Ed25519 key that signs tokens; created (mode 0600) if absent. */
        keyFile: z.string().min(1),
        /** @default "fabric-broker" */
        issuer: z.string().min(1).default("fabric-broker"),
        /** @default "fabric-api" */
        audience: z.string().min(1).default("fabric-api"),
        /**
         * An external OpenID Connect issuer whose access/ID tokens are accepted as user tokens.
         * Its subject maps to a fabric user: `users[sub]` if listed, else `prefix + sub`.
         */
        oidc: z
          .object({
            /** The `iss` its tokens carry. */
            issuer: z.string().min(1),
            /** Where its signing keys are published (JWKS). */
            jwksUri: z.string().url(),
            /** The `aud` its tokens must carry. */
            audience: z.string().min(1),
            /** Accepted signature algorithms. @default ["RS256", "ES256", "EdDSA"] */
            algorithms: z
              .array(z.string().regex(/^(RS|PS|ES)(256|384|512)$|^EdDSA$/))
              .min(1)
              .default(["RS256", "ES256", "EdDSA"]),
            /** Fabric user for a subject not listed in `users`: prefix + sub. @default "oidc:" */
            userPrefix: z.string().default("oidc:"),
            /** Explicit subject → fabric user mapping. @default {} */
            users: z.record(z.string(), z.string().min(1)).default({}),
          })
          .strict()
          .optional(),
      })
      .strict(),
    limits: z
      .object({
        /** Largest argument or result payload, in bytes. @default 10 MiB */
        maxPayloadBytes: z
          .number()
          .int()
          .positive()
          .default(10 * MiB),
        /** Payloads above this travel through the object store instead of inline. @default 256 KiB */
        inlinePayloadBytes: z
          .number()
          .int()
          .positive()
          .default(256 * 1024),
        /** Most tasks in one SubmitTasks request. @default 10000 */
        maxBatchSize: z.number().int().positive().default(10_000),
        /** Most ids in one GetTasks / WatchTasks / CancelTasks request. @default 100000 */
        maxIdsPerRequest: z.number().int().positive().default(100_000),
        /**
         * Calls per second each caller (user or endpoint) may make, with bursts up to `burst`;
         * beyond it calls answer RESOURCE_EXHAUSTED with a retry-after. 0 disables the limit.
         * @default 1000
         */
        callsPerSecond: z.number().nonnegative().default(1000),
        /** Burst size of the per-caller call limit. @default 2000 */
        callBurst: z.number().int().positive().default(2000),
      })
      .strict()
      .prefault({}),
    /**
     * Groups of users, for sharing with `group:NAME`: group name → member user names.
     * @default {}
     */
    groups: z.record(z.string().min(1), z.array(z.string().min(1))).default({}),
    /** Seconds a task and its result are kept after their last change. @default 604800 (7 days) */
    resultRetentionSeconds: z
      .number()
      .int()
      .positive()
      .default(7 * 24 * 3600),
    /**
     * Seconds a task past its retention still answers `expired` (its record kept, its result
     * and output no longer given) before it is gone and answers NOT_FOUND like an unknown id.
     * @default 86400 (1 day)
     */
    expiredTaskAnswerSeconds: z
      .number()
      .int()
      .nonnegative()
      .default(24 * 3600),
    /** Seconds NATS waits for an agent's ack before redelivering a task. @default 60 */
    taskAckWaitSeconds: z.number().int().positive().default(60),
    /** An endpoint with no heartbeat for this long is shown offline. @default 20 */
    endpointOfflineAfterSeconds: z.number().int().positive().default(20),
    /** Seconds to let in-flight calls finish on shutdown. @default 10 */
    shutdownGraceSeconds: z.number().nonnegative().default(10),
  })
  .strict();

export type BrokerConfigInput = z.input<typeof BrokerConfigSchema>;
export type BrokerConfig = Readonly<z.output<typeof BrokerConfigSchema>>;

/** Formats zod issues as `path.to.field: what was expected, got what was given`. */
export function describeIssues(error: z.ZodError): string {
  return describeIssuesOf(error);
}

/** Validates broker options; a bad field is INVALID_ARGUMENT naming its path. */
export function resolveBrokerConfig(input: unknown, source = "broker config"): BrokerConfig {
  const parsed = BrokerConfigSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) {
    throw new FabricError("INVALID_ARGUMENT", `${source} is invalid: ${describeIssues(parsed.error)}`);
  }
  return Object.freeze(parsed.data);
}

/** Reads a YAML (or JSON) broker config file. */
export function loadBrokerConfigFile(path: string): BrokerConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new FabricError("NOT_FOUND", `cannot read broker config ${path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new FabricError("INVALID_ARGUMENT", `${path} is not valid YAML: ${(err as Error).message}`);
  }
  return resolveBrokerConfig(doc ?? {}, path);
}
