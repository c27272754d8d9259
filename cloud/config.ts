import { readFileSync } from "node:fs";

import { parse as parseYaml } from "yaml";
import { z } from "zod";

import { FabricError } from "../common/errors.js";

const MiB = 1024 * 1024;

/** Options of the cloud broker. Parse files, env and flags once with {@link resolveBrokerConfig}. */
export const BrokerConfigSchema = z
  .object({
    /**
     * Address the gRPC server listens on.
     * @default "127.0.0.1:50051"
     */
    listen: z.string().min(1).default("127.0.0.1:50051"),
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
      })
      .strict()
      .prefault({}),
    /** Seconds a task and its result are kept after their last change. @default 604800 (7 days) */
    resultRetentionSeconds: z
      .number()
      .int()
      .positive()
      .default(7 * 24 * 3600),
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

/** Formats zod issues as `path.to.field: what was expected` lines. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length > 0 ? issue.path.join(".") : "(root)"}: ${issue.message}`)
    .join("; ");
}

/** Validates broker options; a bad field is INVALID_ARGUMENT naming its path. */
export function resolveBrokerConfig(input: unknown, source = "broker config"): BrokerConfig {
  const parsed = BrokerConfigSchema.safeParse(input);
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
