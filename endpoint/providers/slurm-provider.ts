import type { SlurmProviderConfig } from "../config.js";
import type { BlockJobState, BlockJobStatus, BlockLaunch } from "../provider.js";
import { BatchProvider } from "./batch-provider.js";
import type { BatchProviderOptions } from "./batch-provider.js";
import { jobScript } from "./batch-script.js";
import type { LauncherConfig } from "./batch-script.js";
import { errorLine } from "./scheduler-command.js";

/** The Slurm settings a job script is generated from. */
export type SlurmScriptConfig = Pick<
  SlurmProviderConfig,
  | "nodesPerBlock"
  | "walltime"
  | "workerInit"
  | "schedulerOptions"
  | "partition"
  | "account"
  | "qos"
  | "constraint"
  | "coresPerNode"
  | "memPerNode"
  | "gpusPerNode"
  | "exclusive"
  | "launcher"
>;

/** The launcher a Slurm block uses: the configured one, else srun for several nodes. */
export function slurmLauncher(c: Pick<SlurmScriptConfig, "launcher" | "nodesPerBlock">): LauncherConfig {
  return c.launcher ?? (c.nodesPerBlock > 1 ? { type: "srun" } : { type: "single" });
}

/** The sbatch script of one block. Pure: what it returns is what gets submitted. */
export function slurmScript(c: SlurmScriptConfig, launch: BlockLaunch): string {
  const d: string[] = [`#SBATCH --job-name=fabric-${launch.blockId}`];
  if (launch.logFile) d.push(`#SBATCH --output=${launch.logFile}`);
  d.push(`#SBATCH --nodes=${c.nodesPerBlock}`, "#SBATCH --ntasks-per-node=1");
  if (c.coresPerNode) d.push(`#SBATCH --cpus-per-task=${c.coresPerNode}`);
  if (c.memPerNode) d.push(`#SBATCH --mem=${c.memPerNode}`);
  if (c.gpusPerNode) d.push(`#SBATCH --gpus-per-node=${c.gpusPerNode}`);
  d.push(`#SBATCH --time=${c.walltime}`);
  if (c.partition) d.push(`#SBATCH --partition=${c.partition}`);
  if (c.account) d.push(`#SBATCH --account=${c.account}`);
  if (c.qos) d.push(`#SBATCH --qos=${c.qos}`);
  if (c.constraint) d.push(`#SBATCH --constraint=${c.constraint}`);
  if (c.exclusive) d.push("#SBATCH --exclusive");
  // The job inherits the agent's environment (sbatch's default), which carries SLURM_CONF and PATH.
  d.push("#SBATCH --export=ALL");
  return jobScript("#SBATCH", d, c, slurmLauncher(c), launch);
}

/** The job id in sbatch's output (`Submitted batch job 123` or, with --parsable, `123` / `123;cluster`). */
export function parseSbatchOutput(stdout: string): string | undefined {
  const m = /Submitted batch job (\d+)/.exec(stdout) ?? /^\s*(\d+)(?:;\S+)?\s*$/m.exec(stdout);
  return m?.[1];
}

/** Slurm's long and short state names → block states. */
const slurmStates: Readonly<Record<string, BlockJobState>> = {
  PENDING: "pending",
  PD: "pending",
  CONFIGURING: "pending",
  CF: "pending",
  REQUEUED: "pending",
  RQ: "pending",
  REQUEUE_FED: "pending",
  RF: "pending",
  REQUEUE_HOLD: "held",
  RH: "held",
  RESV_DEL_HOLD: "held",
  RD: "held",
  RUNNING: "running",
  R: "running",
  COMPLETING: "running",
  CG: "running",
  SIGNALING: "running",
  SI: "running",
  STAGE_OUT: "running",
  SO: "running",
  RESIZING: "running",
  RS: "running",
  SUSPENDED: "running",
  S: "running",
  STOPPED: "running",
  ST: "running",
  COMPLETED: "completed",
  CD: "completed",
  FAILED: "failed",
  F: "failed",
  BOOT_FAIL: "node_failure",
  BF: "node_failure",
  SPECIAL_EXIT: "failed",
  SE: "failed",
  CANCELLED: "cancelled",
  CA: "cancelled",
  REVOKED: "cancelled",
  RV: "cancelled",
  TIMEOUT: "timeout",
  TO: "timeout",
  DEADLINE: "timeout",
  DL: "timeout",
  NODE_FAIL: "node_failure",
  NF: "node_failure",
  PREEMPTED: "preempted",
  PR: "preempted",
  OUT_OF_MEMORY: "out_of_memory",
  OOM: "out_of_memory",
};

/**
 * Maps a Slurm state (`squeue` `%T`/`%t`, or `sacct` State such as `CANCELLED by 1000`) and its
 * reason to a block state. A pending job whose reason says it is held is HELD.
 */
export function mapSlurmState(native: string, reason = ""): BlockJobStatus {
  const word = native.trim().split(/\s+/)[0]?.replace(/\+$/, "").toUpperCase() ?? "";
  let state: BlockJobState = slurmStates[word] ?? "unknown";
  const r = reason.trim() === "None" || reason.trim() === "(null)" ? "" : reason.trim();
  if (state === "pending" && /held|hold/i.test(r)) state = "held";
  const by = /\bby (\d+)/.exec(native)?.[1];
  const parts = [native.trim()];
  if (r) parts.push(r);
  if (by !== undefined && !r) parts.push(`by uid ${by}`);
  return { state, native: word, ...(parts.length > 0 ? { reason: parts.join(": ") } : {}) };
}

/** Slurm prints local times without a zone (`2026-11-22T04:32:30`), or `N/A`/`Unknown`. */
function parseSlurmTime(text: string | undefined): number | undefined {
  if (!text || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/.test(text)) return undefined;
  const ms = new Date(text).getTime();
  return Number.isFinite(ms) ? ms : undefined;
}

/** Parses `squeue -h -t all -o '%i|%T|%r|%S'` output. */
export function parseSqueue(stdout: string): Map<string, BlockJobStatus> {
  const out = new Map<string, BlockJobStatus>();
  for (const line of stdout.split("\n")) {
    const [id, st, reason, start] = line.trim().split("|");
    if (!id || !st) continue;
    const s = mapSlurmState(st, reason ?? "");
    const startedAtMs = s.state === "pending" || s.state === "held" ? undefined : parseSlurmTime(start);
    out.set(id, { ...s, ...(startedAtMs !== undefined ? { startedAtMs } : {}) });
  }
  return out;
}

/** Parses `sacct -n -X -P -o JobIDRaw,State,ExitCode,Start` output. */
export function parseSacct(stdout: string): Map<string, BlockJobStatus> {
  const out = new Map<string, BlockJobStatus>();
  for (const line of stdout.split("\n")) {
    const [id, st, exit, start] = line.trim().split("|");
    if (!id || !st || id.includes(".")) continue;
    const s = mapSlurmState(st);
    const exitNote =
      exit && exit !== "0:0" && s.state !== "running" && s.state !== "pending" ? `exit ${exit}` : "";
    const reason = [s.reason, exitNote].filter(Boolean).join(", ");
    const startedAtMs = parseSlurmTime(start);
    out.set(id, {
      ...s,
      ...(reason ? { reason } : {}),
      ...(startedAtMs !== undefined ? { startedAtMs } : {}),
    });
  }
  return out;
}

/** Options of a {@link SlurmProvider}. */
export type SlurmProviderOptions = BatchProviderOptions<
  SlurmScriptConfig & Pick<SlurmProviderConfig, "commandTimeoutSeconds">
>;

/**
 * Blocks as Slurm batch jobs. Submits with `sbatch --parsable`, asks `sacct` for states where
 * accounting exists and `squeue -t all` otherwise, cancels with `scancel`. Every command has a
 * deadline, and every failure becomes a FabricError whose message quotes Slurm's own reason.
 */
export class SlurmProvider extends BatchProvider<SlurmScriptConfig> {
  /** undefined until sacct was tried; false once it said there is no accounting. */
  private sacctWorks: boolean | undefined;

  constructor(opts: SlurmProviderOptions) {
    super(
      {
        name: "slurm",
        scriptSuffix: ".sbatch",
        submit: (file) => ["sbatch", "--parsable", file],
        jobIdOf: parseSbatchOutput,
        cancel: (jobId) => ["scancel", jobId],
        alreadyEnded: /invalid job id|already completing or completed/i,
      },
      opts,
    );
  }

  protected override script(launch: BlockLaunch): string {
    return slurmScript(this.opts.config, launch);
  }

  protected override async jobStates(jobIds: readonly string[]): Promise<Map<string, BlockJobStatus>> {
    const out = new Map<string, BlockJobStatus>();
    if (this.sacctWorks !== false) {
      const r = await this.run([
        "sacct",
        "-n",
        "-X",
        "-P",
        "-j",
        jobIds.join(","),
        "-o",
        "JobIDRaw,State,ExitCode,Start",
      ]);
      if (r.code === 0) {
        this.sacctWorks = true;
        for (const [id, s] of parseSacct(r.stdout)) if (jobIds.includes(id)) out.set(id, s);
      } else {
        this.sacctWorks = false;
        this.log.info({ why: errorLine(r) }, "sacct is not usable here; using squeue -t all for job states");
      }
    }
    const rest = jobIds.filter((id) => !out.has(id));
    if (rest.length === 0) return out;
    const r = await this.query(
      ["squeue", "-h", "-t", "all", "-j", rest.join(","), "-o", "%i|%T|%r|%S"],
      /invalid job id/i,
    );
    const seen = parseSqueue(r.stdout);
    for (const id of rest) {
      out.set(
        id,
        seen.get(id) ?? {
          state: "missing",
          reason: "the job is no longer known to Slurm (it ended long ago, or slurmctld lost it)",
        },
      );
    }
    return out;
  }
}
