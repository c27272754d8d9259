import { readFileSync } from "node:fs";
import path from "node:path";

import { parse as parseYaml } from "yaml";
import { z } from "zod";

import { nonNegativeInt, positiveInt } from "./config-fields.js";

import { FabricError, describeIssue } from "../common/index.js";
import { ContainerConfigSchema } from "./runtime/config.js";

/** Elastic scaling, shared by every provider. */
const scalingShape = {
  /**
   * Blocks started when the agent starts.
   * @default 1 (local), 0 (slurm, pbs)
   */
  initBlocks: nonNegativeInt().optional(),
  /**
   * Fewest blocks kept while idle (0 lets a batch endpoint shrink to nothing).
   * @default initBlocks (local), 0 (slurm, pbs)
   */
  minBlocks: nonNegativeInt().optional(),
  /**
   * Most blocks the agent ever runs at once.
   * @default 1
   */
  maxBlocks: positiveInt().default(1),
  /**
   * Worker processes per node.
   * @default 2
   */
  workersPerNode: positiveInt().default(2),
  /**
   * Share of the outstanding tasks to provision workers for: 1 = a worker per task (up to
   * maxBlocks), 0.5 = one worker per two tasks, 0 = never more than minBlocks (but at least one
   * block while tasks wait).
   * @default 1
   */
  parallelism: z
    .number({ error: "expected a number from 0 to 1" })
    .min(0, { error: "expected a number from 0 to 1" })
    .max(1, { error: "expected a number from 0 to 1" })
    .default(1),
  /**
   * Seconds a block may sit without tasks before it is cancelled (never below minBlocks).
   * @default 120
   */
  idleTimeoutSeconds: nonNegativeInt().default(120),
  /**
   * Tasks waiting while no block can start (every launch refused or failing, none connected) fail
   * with the scheduler's reason after this many seconds.
   * @default 300
   */
  failTasksWithoutBlocksAfterSeconds: positiveInt().default(300),
  /**
   * Seconds a running block's managers have to connect back before the block counts as failed.
   * @default 120
   */
  connectTimeoutSeconds: positiveInt().default(120),
  /**
   * Times a task whose block died is handed back to the queue to run again, before it fails.
   * @default 0
   */
  retriesOnBlockLoss: nonNegativeInt().default(0),
};

/**
 * A block on the agent's own machine: each block is one worker-manager process.
 */
export const LocalProviderConfigSchema = z.strictObject({
  type: z.literal("local", { error: 'expected "local"' }),
  ...scalingShape,
});

/** How a multi-node block starts one manager per node. */
export const LauncherConfigSchema = z.discriminatedUnion(
  "type",
  [
    z.strictObject({ type: z.literal("single") }),
    z.strictObject({
      type: z.literal("srun"),
      /** Extra `srun` options. */
      options: z.string({ error: "expected a string" }).optional(),
    }),
    z.strictObject({
      type: z.literal("mpiexec"),
      /**
       * Options placing one process per node.
       * @default "-ppn 1" (MPICH, Cray PALS); Open MPI wants "--map-by ppr:1:node"
       */
      options: z.string({ error: "expected a string" }).optional(),
    }),
  ],
  { error: 'expected a launcher type ("single", "srun" or "mpiexec")' },
);

const walltime = () =>
  z
    .string({ error: 'expected a walltime "HH:MM:SS"' })
    .regex(/^(\d+-)?\d+(:\d{1,2}){0,2}$/, { error: 'expected a walltime "HH:MM:SS" (or "D-HH:MM:SS")' });

/** Fields every batch-scheduler provider has. */
const batchShape = {
  ...scalingShape,
  /**
   * Nodes in one block (one batch job); one worker manager runs on each.
   * @default 1
   */
  nodesPerBlock: positiveInt().default(1),
  /**
   * Walltime of each block's job.
   * @default "01:00:00"
   */
  walltime: walltime().default("01:00:00"),
  /**
   * Shell lines run in the job before the managers start (`module load ...`, `source env/bin/activate`).
   * @default ""
   */
  workerInit: z.string({ error: "expected shell lines (a string)" }).default(""),
  /**
   * Raw scheduler directives added to the job script, one per line (`#SBATCH`/`#PBS` optional).
   * @default ""
   */
  schedulerOptions: z.string({ error: "expected directive lines (a string)" }).default(""),
  /**
   * Managers stop taking new tasks this many seconds before their job's walltime ends.
   * @default 60
   */
  drainBeforeWalltimeSeconds: nonNegativeInt().default(60),
  /**
   * Deadline of every scheduler command (sbatch, squeue, qsub, ...).
   * @default 30
   */
  commandTimeoutSeconds: positiveInt().default(30),
  /**
   * Seconds between job-status queries.
   * @default 2
   */
  statusIntervalSeconds: z
    .number({ error: "expected a number of seconds" })
    .positive({ error: "expected a number of seconds" })
    .default(2),
};

/** Blocks as Slurm jobs (`sbatch`), one worker manager per node. */
export const SlurmProviderConfigSchema = z.strictObject({
  type: z.literal("slurm", { error: 'expected "slurm"' }),
  ...batchShape,
  /** `--partition`. */
  partition: z.string({ error: "expected a partition name" }).min(1).optional(),
  /** `--account`. */
  account: z.string({ error: "expected an account name" }).min(1).optional(),
  /** `--qos`. */
  qos: z.string({ error: "expected a QOS name" }).min(1).optional(),
  /** `--constraint` (node features). */
  constraint: z.string({ error: "expected a constraint" }).min(1).optional(),
  /** Cores for each node's manager and workers (`--cpus-per-task`, one task per node). */
  coresPerNode: positiveInt().optional(),
  /** Memory per node (`--mem`), e.g. "16G". */
  memPerNode: z
    .string({ error: 'expected a size like "16G"' })
    .regex(/^\d+[KMGT]?$/i, { error: 'expected a size like "16G"' })
    .optional(),
  /** GPUs per node (`--gpus-per-node`). */
  gpusPerNode: positiveInt().optional(),
  /**
   * Whole nodes (`--exclusive`).
   * @default false
   */
  exclusive: z.boolean({ error: "expected true or false" }).default(false),
  /**
   * How managers start on the block's nodes.
   * @default { type: "srun" } when nodesPerBlock > 1, else { type: "single" }
   */
  launcher: LauncherConfigSchema.optional(),
});

/** Blocks as PBS Pro / OpenPBS jobs (`qsub`), one worker manager per node. */
export const PbsProviderConfigSchema = z.strictObject({
  type: z.literal("pbs", { error: 'expected "pbs"' }),
  ...batchShape,
  /** `-q`. */
  queue: z.string({ error: "expected a queue name" }).min(1).optional(),
  /** `-A`. */
  account: z.string({ error: "expected an account name" }).min(1).optional(),
  /** `ncpus` of each select chunk (node). */
  cpusPerNode: positiveInt().optional(),
  /** `ngpus` of each select chunk. */
  gpusPerNode: positiveInt().optional(),
  /** `mem` of each select chunk, e.g. "16gb". */
  memPerNode: z
    .string({ error: 'expected a size like "16gb"' })
    .regex(/^\d+[kmgt]?b?$/i, { error: 'expected a size like "16gb"' })
    .optional(),
  /** More `:key=value` resources of each chunk, e.g. "system=polaris" or ":mpiprocs=4". */
  selectOptions: z.string({ error: "expected select resources" }).default(""),
  /**
   * How managers start on the block's nodes.
   * @default { type: "mpiexec" } when nodesPerBlock > 1, else { type: "single" }
   */
  launcher: LauncherConfigSchema.optional(),
});

/** How the agent gets compute: a union on `type`. */
export const ProviderConfigSchema = z
  .discriminatedUnion(
    "type",
    [LocalProviderConfigSchema, SlurmProviderConfigSchema, PbsProviderConfigSchema],
    {
      error: 'expected a provider type ("local", "slurm" or "pbs")',
    },
  )
  .superRefine((p, ctx) => {
    const init = p.initBlocks ?? (p.type === "local" ? 1 : 0);
    if (init > p.maxBlocks) {
      ctx.addIssue({
        code: "custom",
        message: "expected initBlocks to be at most maxBlocks",
        path: ["initBlocks"],
        input: init,
      });
    }
    if (p.minBlocks !== undefined && p.minBlocks > p.maxBlocks) {
      ctx.addIssue({
        code: "custom",
        message: "expected minBlocks to be at most maxBlocks",
        path: ["minBlocks"],
        input: p.minBlocks,
      });
    }
    if (p.type !== "local" && p.launcher?.type === "single" && p.nodesPerBlock > 1) {
      ctx.addIssue({
        code: "custom",
        message: `expected a multi-node launcher ("srun" or "mpiexec") for nodesPerBlock ${p.nodesPerBlock}`,
        path: ["launcher"],
        input: "single",
      });
    }
    if (p.type === "pbs" && p.launcher?.type === "srun") {
      ctx.addIssue({
        code: "custom",
        message: 'expected "single" or "mpiexec" on PBS',
        path: ["launcher"],
        input: "srun",
      });
    }
  });

/** Scaling numbers with the per-provider defaults applied. */
export interface ResolvedScaling {
  readonly initBlocks: number;
  readonly minBlocks: number;
  readonly maxBlocks: number;
  /** Workers one block brings: workersPerNode × nodesPerBlock. */
  readonly workersPerBlock: number;
  readonly parallelism: number;
  readonly idleTimeoutMs: number;
}

/** The scaling policy of a provider config, defaults resolved (local keeps initBlocks alive; batch scales to 0). */
export function scalingOf(p: z.output<typeof ProviderConfigSchema>): ResolvedScaling {
  const local = p.type === "local";
  const initBlocks = Math.min(p.initBlocks ?? (local ? 1 : 0), p.maxBlocks);
  return {
    initBlocks,
    minBlocks: Math.min(p.minBlocks ?? (local ? initBlocks : 0), p.maxBlocks),
    maxBlocks: p.maxBlocks,
    workersPerBlock: p.workersPerNode * (local ? 1 : p.nodesPerBlock),
    parallelism: p.parallelism,
    idleTimeoutMs: p.idleTimeoutSeconds * 1000,
  };
}

/** An absolute path to a PEM file (the agent may start from any directory). */
const pemPath = () =>
  z
    .string({ error: "expected the absolute path of a PEM file" })
    .refine((p) => path.isAbsolute(p), { error: "expected the absolute path of a PEM file" });

/** TLS files towards a server (the broker, or NATS). */
const clientTlsSchema = z
  .strictObject({
    /**
     * PEM bundle of the CAs the server's certificate must chain to.
     * @default Node's trusted roots
     */
    caFile: pemPath().optional(),
    /** PEM client certificate, for a server that requires one (mTLS). Needs `keyFile`. */
    certFile: pemPath().optional(),
    /** PEM private key of `certFile`. */
    keyFile: pemPath().optional(),
  })
  .refine((t) => (t.certFile === undefined) === (t.keyFile === undefined), {
    error: "certFile and keyFile go together",
    path: ["keyFile"],
  });

/** The endpoint's `config.yaml`. */
export const EndpointConfigSchema = z.strictObject({
  /** The broker's gRPC address: `host:port` (plaintext) or `grpcs://host:port` (TLS). */
  broker: z
    .string({ error: 'expected a "host:port" string' })
    .regex(/^((grpcs|https|tls|http|grpc):\/\/)?[^\s:/]+(:\d+)?$/, {
      error: 'expected a "host:port" or "grpcs://host:port" address',
    }),
  /**
   * TLS towards the broker (a `grpcs://` address): the CA to verify it with, and a client
   * certificate if the broker requires one.
   * @default {} (Node's trusted roots, no client certificate)
   */
  brokerTls: clientTlsSchema.prefault({}),
  /**
   * TLS towards NATS, used when the servers the broker hands out are `tls://…` or a field is set.
   * The broker does not hand out a CA: the endpoint's owner decides whom to trust.
   * @default { caFile: brokerTls.caFile } (one site CA is the usual case), else Node's trusted roots
   */
  natsTls: clientTlsSchema.optional(),
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
  heartbeatIntervalSeconds: positiveInt().max(3600, { message: "at most 3600 (an hour)" }).default(5),
  /**
   * Where blocks of workers come from.
   * @default { type: "local", initBlocks: 1, maxBlocks: 1, workersPerNode: 2 }
   */
  provider: ProviderConfigSchema.prefault({ type: "local" }),
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
  /** Python functions. */
  python: z
    .strictObject({
      /**
       * The interpreter Python functions run in: a name looked up on PATH after the provider's
       * `workerInit` (so `module load` or `conda activate` there choose it), or a path.
       * @default "python3"
       */
      executable: z.string({ error: "expected an interpreter name or path" }).min(1).default("python3"),
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
   * @default sized from task run times (see agent/queue-sizing.ts): twice the workers, at least 16, for
   * long tasks; up to 1,024 for very short ones
   */
  prefetch: nonNegativeInt().optional(),
  /**
   * Tasks handed to each worker at once: 1 waits for a result before sending the next; more keep
   * tasks queued at its manager, hiding the round trip for short tasks. A queued task waits behind
   * a long one only within the same manager, whose free workers take it first.
   * @default sized from task run times: 2 for tasks of 10 ms or more, up to 32 for very short ones
   */
  workerQueueDepth: positiveInt().optional(),
  /**
   * Seconds stop() lets running tasks finish before it gives them back to the queue.
   * @default 10
   */
  stopGraceSeconds: nonNegativeInt().default(10),
  /**
   * Where functions run: bare worker processes (`runtime: none`, the default) or warm, hardened
   * containers (docker, podman, apptainer). See endpoint/runtime/config.ts.
   * @default { runtime: "none" }
   */
  container: ContainerConfigSchema.prefault({}),
});

/** The config file as written. */
export type EndpointConfigInput = z.input<typeof EndpointConfigSchema>;

/** The resolved, frozen configuration the agent runs with (defaults applied, env merged). */
export type EndpointConfig = Readonly<z.output<typeof EndpointConfigSchema>>;

/** The provider part of the config. */
export type ProviderConfig = z.output<typeof ProviderConfigSchema>;
/** A Slurm provider's resolved config. */
export type SlurmProviderConfig = z.output<typeof SlurmProviderConfigSchema>;
/** A PBS provider's resolved config. */
export type PbsProviderConfig = z.output<typeof PbsProviderConfigSchema>;

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
    const lines = parsed.error.issues.map(describeIssue);
    throw new FabricError("INVALID_ARGUMENT", `${source} is invalid:\n  ${lines.join("\n  ")}`);
  }
  const c = parsed.data;
  const token = env["FABRIC_TOKEN"] || c.token;
  const resolved = {
    ...c,
    ...(token ? { token } : {}),
    provider: Object.freeze({ ...c.provider }),
    managerListen: Object.freeze({ ...c.managerListen }),
    shell: Object.freeze({ ...c.shell }),
    python: Object.freeze({ ...c.python }),
    limits: Object.freeze({ ...c.limits }),
    container: Object.freeze({ ...c.container }),
    brokerTls: Object.freeze({ ...c.brokerTls }),
    natsTls: Object.freeze(c.natsTls ?? (c.brokerTls.caFile ? { caFile: c.brokerTls.caFile } : {})),
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
