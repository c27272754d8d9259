import { readFileSync } from "node:fs";

import { parse as parseYaml } from "yaml";
import { z } from "zod";

import { FabricError } from "../common/errors.js";

/** A positive integer field, with an error message that names what was expected. */
const positiveInt = () =>
  z
    .number({ error: "expected a positive integer" })
    .int({ error: "expected a positive integer" })
    .positive({ error: "expected a positive integer" });

/** A non-negative integer field. */
const nonNegativeInt = () =>
  z
    .number({ error: "expected a non-negative integer" })
    .int({ error: "expected a non-negative integer" })
    .nonnegative({ error: "expected a non-negative integer" });

/**
 * A block on the agent's own machine: each block is one worker-manager process.
 * Other providers (slurm, pbs) join the {@link ProviderConfigSchema} union with their own `type`.
 */
export const LocalProviderConfigSchema = z
  .strictObject({
    type: z.literal("local", { error: 'expected "local"' }),
    /**
     * Blocks started when the agent starts, and kept alive.
     * @default 1
     */
    initBlocks: nonNegativeInt().default(1),
    /**
     * Most blocks the agent ever runs at once.
     * @default 1
     */
    maxBlocks: positiveInt().default(1),
    /**
     * Worker processes per block (per node).
     * @default 2
     */
    workersPerNode: positiveInt().default(2),
  })
  .refine((p) => p.initBlocks <= p.maxBlocks, {
    error: "expected initBlocks to be at most maxBlocks",
    path: ["initBlocks"],
  });

/** How the agent gets compute: a union on `type`, so batch-scheduler providers can be added. */
export const ProviderConfigSchema = z.discriminatedUnion("type", [LocalProviderConfigSchema], {
  error: 'expected a provider type ("local")',
});

/** The endpoint's `config.yaml`. */
export const EndpointConfigSchema = z.strictObject({
  /** The broker's gRPC address, `host:port` (or `tls://host:port`). */
  broker: z
    .string({ error: 'expected a "host:port" string' })
    .regex(/^((https|tls|http|grpc):\/\/)?[^\s:/]+(:\d+)?$/, { error: 'expected a "host:port" address' }),
  /** The user's JWT, used only to register the endpoint the first time. `FABRIC_TOKEN` overrides it. */
  token: z.string({ error: "expected a string" }).optional(),
  /**
   * What this endpoint is, for people.
   * @default ""
   */
  description: z.string({ error: "expected a string" }).default(""),
  /**
   * Seconds between heartbeats (status messages to the broker, manager heartbeats).
   * @default 5
   */
  heartbeatIntervalSeconds: positiveInt().default(5),
  /**
   * Where blocks of workers come from.
   * @default { type: "local", initBlocks: 1, maxBlocks: 1, workersPerNode: 2 }
   */
  provider: ProviderConfigSchema.default({ type: "local", initBlocks: 1, maxBlocks: 1, workersPerNode: 2 }),
  /** Where the agent listens for its worker managers, which connect back to it. */
  managerListen: z
    .strictObject({
      /**
       * Interface to listen on; use an address compute nodes can reach when blocks run elsewhere.
       * @default "127.0.0.1"
       */
      host: z.string({ error: "expected a host name or address" }).min(1).default("127.0.0.1"),
      /**
       * TCP port; 0 lets the system choose.
       * @default 0
       */
      port: nonNegativeInt().max(65535, { error: "expected a port number (0-65535)" }).default(0),
    })
    .prefault({}),
  /** Shell functions. */
  shell: z
    .strictObject({
      /**
       * Walltime of a shell function that does not set its own.
       * @default 3600
       */
      defaultWalltimeSeconds: positiveInt().default(3600),
    })
    .prefault({}),
  /** Payload limits. */
  limits: z
    .strictObject({
      /**
       * Results larger than this go through the object store instead of inline.
       * @default 262144
       */
      inlinePayloadBytes: positiveInt().default(262_144),
      /**
       * Results larger than this fail with RESOURCE_EXHAUSTED (result_too_large).
       * @default 10485760
       */
      maxResultBytes: positiveInt().default(10_485_760),
    })
    .prefault({}),
  /**
   * Tasks pulled beyond the idle workers, so a worker finds its next task waiting.
   * @default the number of workers (initBlocks × workersPerNode, at least 1)
   */
  prefetch: nonNegativeInt().optional(),
  /**
   * Seconds stop() lets running tasks finish before it gives them back to the queue.
   * @default 10
   */
  stopGraceSeconds: nonNegativeInt().default(10),
});

/** The config file as written. */
export type EndpointConfigInput = z.input<typeof EndpointConfigSchema>;

/** The resolved, frozen configuration the agent runs with (defaults applied, env merged). */
export type EndpointConfig = Readonly<
  Omit<z.output<typeof EndpointConfigSchema>, "prefetch"> & {
    /** Resolved: never undefined. */
    prefetch: number;
  }
>;

/** The provider part of the config. */
export type ProviderConfig = z.output<typeof ProviderConfigSchema>;

function describeValue(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "string") return JSON.stringify(v);
  if (v === null || typeof v === "number" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return "a list";
  return `a ${typeof v}`;
}

function formatIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.length > 0 ? issue.path.map(String).join(".") : "(top level)";
  if (issue.code === "unrecognized_keys") {
    const at = issue.path.length > 0 ? `${path}: ` : "";
    return `${at}unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}`;
  }
  const input = "input" in issue ? issue.input : undefined;
  // A missing value reads better than "got nothing".
  if (input === undefined && issue.code === "invalid_type") return `${path}: required, ${issue.message}`;
  return `${path}: ${issue.message}, got ${describeValue(input)}`;
}

/**
 * Validates a parsed config document and resolves it: defaults applied, `FABRIC_TOKEN` merged,
 * result frozen. Throws a {@link FabricError} (INVALID_ARGUMENT) listing each bad field by path.
 */
export function resolveConfig(
  doc: unknown,
  env: NodeJS.ProcessEnv = process.env,
  source = "config",
): EndpointConfig {
  const parsed = EndpointConfigSchema.safeParse(doc ?? {}, { reportInput: true });
  if (!parsed.success) {
    const lines = parsed.error.issues.map(formatIssue);
    throw new FabricError("INVALID_ARGUMENT", `${source} is invalid:\n  ${lines.join("\n  ")}`);
  }
  const c = parsed.data;
  const workers = c.provider.initBlocks * c.provider.workersPerNode;
  const token = env["FABRIC_TOKEN"] || c.token;
  const resolved = {
    ...c,
    ...(token ? { token } : {}),
    prefetch: c.prefetch ?? Math.max(1, workers),
    provider: Object.freeze({ ...c.provider }),
    managerListen: Object.freeze({ ...c.managerListen }),
    shell: Object.freeze({ ...c.shell }),
    limits: Object.freeze({ ...c.limits }),
  };
  return Object.freeze(resolved);
}

/** Reads and resolves a YAML config file; errors name the file and each bad field. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): EndpointConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "ENOENT") throw new FabricError("NOT_FOUND", `no config file at ${file}`);
    throw new FabricError("FAILED_PRECONDITION", `cannot read ${file}: ${e.message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new FabricError("INVALID_ARGUMENT", `${file} is not valid YAML: ${(err as Error).message}`);
  }
  return resolveConfig(doc, env, file);
}
