import { FabricError } from "../../common/index.js";
import type { PbsProviderConfig } from "../config.js";
import type { BlockJobState, BlockJobStatus, BlockLaunch } from "../provider.js";
import { BatchProvider } from "./batch-provider.js";
import type { BatchProviderOptions } from "./batch-provider.js";
import { jobScript } from "./batch-script.js";
import type { LauncherConfig } from "./batch-script.js";

/** The PBS settings a job script is generated from. */
export type PbsScriptConfig = Pick<
  PbsProviderConfig,
  | "nodesPerBlock"
  | "walltime"
  | "workerInit"
  | "schedulerOptions"
  | "queue"
  | "account"
  | "cpusPerNode"
  | "gpusPerNode"
  | "memPerNode"
  | "selectOptions"
  | "launcher"
>;

/** The launcher a PBS block uses: the configured one, else mpiexec for several nodes. */
export function pbsLauncher(c: Pick<PbsScriptConfig, "launcher" | "nodesPerBlock">): LauncherConfig {
  return c.launcher ?? (c.nodesPerBlock > 1 ? { type: "mpiexec" } : { type: "single" });
}

/** The `select` statement: one chunk per node. */
export function pbsSelect(
  c: Pick<PbsScriptConfig, "nodesPerBlock" | "cpusPerNode" | "gpusPerNode" | "memPerNode" | "selectOptions">,
): string {
  const parts = [String(c.nodesPerBlock)];
  if (c.cpusPerNode) parts.push(`ncpus=${c.cpusPerNode}`);
  if (c.gpusPerNode) parts.push(`ngpus=${c.gpusPerNode}`);
  if (c.memPerNode) parts.push(`mem=${c.memPerNode}`);
  const extra = c.selectOptions.trim().replace(/^:/, "");
  if (extra) parts.push(extra);
  return parts.join(":");
}

/** The qsub script of one block. Pure: what it returns is what gets submitted. */
export function pbsScript(c: PbsScriptConfig, launch: BlockLaunch): string {
  const d: string[] = [`#PBS -N fabric-${launch.blockId}`];
  if (launch.logFile) d.push(`#PBS -o ${launch.logFile}`, "#PBS -j oe");
  d.push(`#PBS -l select=${pbsSelect(c)}`);
  if (c.nodesPerBlock > 1) d.push("#PBS -l place=scatter");
  d.push(`#PBS -l walltime=${c.walltime}`);
  if (c.queue) d.push(`#PBS -q ${c.queue}`);
  if (c.account) d.push(`#PBS -A ${c.account}`);
  // The job gets the agent's environment (PATH, the block's variables are exported below anyway).
  d.push("#PBS -V");
  return jobScript("#PBS", d, c, pbsLauncher(c), launch);
}

/** The job id qsub prints (`1234.server`). */
export function parseQsubOutput(stdout: string): string | undefined {
  return /^\s*(\d+(?:\[\d*\])?(?:\.[\w.-]+)?)\s*$/m.exec(stdout)?.[1];
}

/** PBS's JOB_EXEC_* codes (negative Exit_status): PBS itself could not run or ended the job. */
const execCodes: Readonly<Record<number, { state: BlockJobState; text: string }>> = {
  [-1]: { state: "failed", text: "JOB_EXEC_FAIL1: the job could not be started" },
  [-2]: {
    state: "failed",
    text: "JOB_EXEC_FAIL2: the job could not be started (after its files were set up)",
  },
  [-3]: { state: "failed", text: "JOB_EXEC_RETRY: the job could not be started; PBS retries it" },
  [-4]: { state: "node_failure", text: "JOB_EXEC_INITABT: the job was aborted on MoM initialization" },
  [-5]: { state: "node_failure", text: "JOB_EXEC_INITRST: the job was aborted on MoM initialization" },
  [-6]: { state: "node_failure", text: "JOB_EXEC_INITRMG: the job was aborted on MoM initialization" },
  [-7]: { state: "failed", text: "JOB_EXEC_BADRESRT: the job restart failed" },
  [-10]: { state: "failed", text: "JOB_EXEC_FAILUID: invalid user or group for the job" },
  [-11]: { state: "preempted", text: "JOB_EXEC_RERUN: the job was rerun" },
  [-12]: { state: "preempted", text: "JOB_EXEC_CHKP: the job was checkpointed and killed" },
  [-15]: { state: "preempted", text: "JOB_EXEC_QUERST: the job was requeued" },
  [-16]: { state: "failed", text: "JOB_EXEC_FAILHOOK_RERUN: a hook rejected the job" },
  [-17]: { state: "failed", text: "JOB_EXEC_FAILHOOK_DELETE: a hook rejected the job" },
  [-18]: { state: "failed", text: "JOB_EXEC_HOOK_RERUN: a hook requeued the job" },
  [-19]: { state: "cancelled", text: "JOB_EXEC_HOOK_DELETE: a hook deleted the job" },
  [-20]: { state: "node_failure", text: "JOB_EXEC_RERUN_MS_FAIL: lost the job's mother superior node" },
  [-22]: { state: "failed", text: "JOB_EXEC_HOOKERROR: a hook failed" },
  [-24]: { state: "failed", text: "JOB_EXEC_KILL_NCPUS_BURST: killed for using too many CPUs" },
  [-25]: { state: "failed", text: "JOB_EXEC_KILL_NCPUS_SUM: killed for using too many CPUs" },
  [-26]: { state: "out_of_memory", text: "JOB_EXEC_KILL_VMEM: killed for exceeding its vmem" },
  [-27]: { state: "out_of_memory", text: "JOB_EXEC_KILL_MEM: killed for exceeding its mem" },
  [-28]: { state: "timeout", text: "JOB_EXEC_KILL_CPUT: killed for exceeding its cput" },
  [-29]: { state: "timeout", text: "JOB_EXEC_KILL_WALLTIME: killed at its walltime" },
};

/** One job's attributes in `qstat -f -F json` output (the fields this provider reads). */
export interface PbsJobAttributes {
  readonly job_state?: string;
  readonly substate?: number;
  readonly Exit_status?: number | null;
  readonly comment?: string | null;
  readonly stime?: string | null;
  readonly [key: string]: unknown;
}

/**
 * Maps one job of `qstat -x -f -F json` to a block state. A finished job (F) is COMPLETED only
 * when its Exit_status is 0: a deleted job (substate 91, or no Exit_status) is CANCELLED, one PBS
 * killed at its walltime is TIMEOUT, any other non-zero status is FAILED with the status named.
 */
export function mapPbsJob(job: PbsJobAttributes): BlockJobStatus {
  const st = (job.job_state ?? "").toUpperCase();
  const comment = typeof job.comment === "string" ? job.comment : "";
  const exit = typeof job.Exit_status === "number" ? job.Exit_status : undefined;
  const startedAtMs = typeof job.stime === "string" ? Date.parse(job.stime) : NaN;
  const started = Number.isFinite(startedAtMs) ? { startedAtMs } : {};
  const withWhy = (state: BlockJobState, why: string): BlockJobStatus => {
    const reason = [why, comment].filter(Boolean).join("; ");
    return { state, native: st, ...(reason ? { reason } : {}), ...started };
  };
  switch (st) {
    case "Q":
    case "T":
    case "W":
      return { state: "pending", native: st, ...(comment ? { reason: comment } : {}) };
    case "H":
      return withWhy("held", exit !== undefined && exit !== 0 ? `held after Exit_status ${exit}` : "held");
    case "R":
    case "E":
    case "B":
    case "S":
    case "U":
      return withWhy("running", "");
    case "M":
      return withWhy("missing", "moved to another PBS server");
    case "F":
    case "X": {
      if (job.substate === 91) return withWhy("cancelled", "deleted (qdel)");
      if (exit === undefined)
        return withWhy("cancelled", "finished without running (deleted before it started)");
      if (exit === 0) return withWhy("completed", "Exit_status 0");
      if (exit < 0) {
        const known = execCodes[exit];
        return withWhy(known?.state ?? "failed", `Exit_status ${exit}${known ? ` (${known.text})` : ""}`);
      }
      if (exit > 256) {
        const sig = exit - 256;
        if (/walltime/i.test(comment)) return withWhy("timeout", `killed by signal ${sig} at its walltime`);
        if (/\bmem\b|memory/i.test(comment)) return withWhy("out_of_memory", `killed by signal ${sig}`);
        if (/delet/i.test(comment)) return withWhy("cancelled", `killed by signal ${sig} (deleted)`);
        return withWhy("failed", `Exit_status ${exit}: killed by signal ${sig}`);
      }
      return withWhy("failed", `Exit_status ${exit}: the job script exited with code ${exit}`);
    }
    default:
      return withWhy("unknown", `job_state ${st || "(none)"}`);
  }
}

/**
 * Parses `qstat -x -f -F json` output (and the "Unknown Job Id" lines qstat prints on stderr).
 * Ids qstat does not know map to MISSING.
 */
export function parseQstatJson(
  stdout: string,
  stderr: string,
  asked: readonly string[],
): Map<string, BlockJobStatus> {
  const out = new Map<string, BlockJobStatus>();
  let jobs: Record<string, PbsJobAttributes> = {};
  if (stdout.trim()) {
    // PBS versions before 2021 could print bare "inf"/"nan" values; keep the parse robust.
    const doc = JSON.parse(stdout.replace(/:\s*(inf|nan)\s*([,}])/gi, ":null$2")) as {
      Jobs?: Record<string, PbsJobAttributes>;
    };
    jobs = doc.Jobs ?? {};
  }
  const byShortId = new Map<string, string>();
  for (const id of Object.keys(jobs)) byShortId.set(id.split(".")[0]!, id);
  for (const id of asked) {
    const key = jobs[id] ? id : byShortId.get(id.split(".")[0]!);
    const job = key ? jobs[key] : undefined;
    if (job) out.set(id, mapPbsJob(job));
    else {
      const unknown = new RegExp(`Unknown Job Id ${id.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`, "i").test(
        stderr,
      );
      out.set(id, {
        state: "missing",
        reason: unknown ? "PBS says: Unknown Job Id (its history has expired)" : "not in qstat's answer",
      });
    }
  }
  return out;
}

/** Options of a {@link PbsProvider}. */
export type PbsProviderOptions = BatchProviderOptions<
  PbsScriptConfig & Pick<PbsProviderConfig, "commandTimeoutSeconds">
>;

/**
 * Blocks as PBS Pro / OpenPBS jobs: `qsub` to submit, `qstat -x -f -F json` for states (with
 * Exit_status, so a failed or deleted job never reads as completed), `qdel` to cancel.
 */
export class PbsProvider extends BatchProvider<PbsScriptConfig> {
  constructor(opts: PbsProviderOptions) {
    super(
      {
        name: "pbs",
        scriptSuffix: ".pbs",
        submit: (file) => ["qsub", file],
        jobIdOf: parseQsubOutput,
        cancel: (jobId) => ["qdel", jobId],
        alreadyEnded: /unknown job id|job has finished|request invalid for state/i,
      },
      opts,
    );
  }

  protected override script(launch: BlockLaunch): string {
    return pbsScript(this.opts.config, launch);
  }

  protected override async jobStates(jobIds: readonly string[]): Promise<Map<string, BlockJobStatus>> {
    // qstat exits non-zero when any id is unknown, yet still answers for the others.
    const r = await this.query(["qstat", "-x", "-f", "-F", "json", ...jobIds], /unknown job id/i);
    try {
      return parseQstatJson(r.stdout, r.stderr, jobIds);
    } catch (err) {
      throw new FabricError("UNAVAILABLE", `cannot parse qstat's JSON: ${(err as Error).message}`);
    }
  }
}
