/**
 * What every batch-scheduler provider does the same way: write a block's job script (mode 0600:
 * it holds the block secret), submit it and remove it, ask for job states, cancel, each command
 * with a deadline and each failure a FabricError quoting the scheduler. A scheduler (slurm-provider.ts,
 * pbs-provider.ts) adds its commands, its script and how it reads job states.
 */
import { chmodSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { FabricError, type Logger } from "../../common/index.js";
import type { BlockJobStatus, BlockLaunch, ExecutionProvider } from "../provider.js";
import { errorLine, runSchedulerCommand } from "./scheduler-command.js";
import type { CommandResult } from "./scheduler-command.js";

/** Options of a batch-scheduler provider. */
export interface BatchProviderOptions<C> {
  /** The provider's config section (the parts the scheduler reads, and the command deadline). */
  readonly config: C & { readonly commandTimeoutSeconds: number };
  readonly log: Logger;
  /**
   * Where job scripts are written (briefly: they are removed once submitted).
   * @default the block log's folder, else the OS temp dir
   */
  readonly scriptDir?: string;
  /** Environment of the scheduler commands (and so of the jobs). @default process.env */
  readonly env?: NodeJS.ProcessEnv;
}

/** The commands that submit and cancel jobs on one scheduler. */
export interface SchedulerCommands {
  /** The provider's name, also in its log component ("slurm", "pbs"). */
  readonly name: string;
  /** File ending of job scripts (".sbatch"). */
  readonly scriptSuffix: string;
  /** argv that submits the job script at `file`. */
  submit(file: string): string[];
  /** The job id in what the submit command printed. */
  jobIdOf(stdout: string): string | undefined;
  /** argv that cancels a job. */
  cancel(jobId: string): string[];
  /** What the cancel command prints for a job that has ended already: no failure. */
  readonly alreadyEnded: RegExp;
}

/** A provider whose blocks are batch jobs of one scheduler. */
export abstract class BatchProvider<C> implements ExecutionProvider {
  readonly name: string;
  protected readonly log: Logger;
  private readonly timeoutMs: number;

  protected constructor(
    private readonly commands: SchedulerCommands,
    protected readonly opts: BatchProviderOptions<C>,
  ) {
    this.name = commands.name;
    this.log = opts.log.child({ component: `endpoint.provider.${commands.name}` });
    this.timeoutMs = opts.config.commandTimeoutSeconds * 1000;
  }

  /** The job script of one block. */
  protected abstract script(launch: BlockLaunch): string;

  /** States of jobs (never called with no ids); see {@link ExecutionProvider.status}. */
  protected abstract jobStates(jobIds: readonly string[]): Promise<Map<string, BlockJobStatus>>;

  /** Runs one scheduler command with the provider's deadline and environment. */
  protected run(argv: string[]): Promise<CommandResult> {
    return runSchedulerCommand(argv, {
      timeoutMs: this.timeoutMs,
      ...(this.opts.env ? { env: this.opts.env } : {}),
    });
  }

  /**
   * Runs a status command. It failing is UNAVAILABLE, unless all it says is that some job is
   * unknown (`unknownJob`, matched on stderr): schedulers answer for the others then.
   */
  protected async query(argv: string[], unknownJob: RegExp): Promise<CommandResult> {
    const r = await this.run(argv);
    if (r.code !== 0 && !unknownJob.test(r.stderr)) {
      throw new FabricError("UNAVAILABLE", `${argv[0]} failed: ${errorLine(r)}`);
    }
    return r;
  }

  async submitBlock(launch: BlockLaunch): Promise<string> {
    const dir = this.opts.scriptDir ?? (launch.logFile ? path.dirname(launch.logFile) : tmpdir());
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${launch.blockId}${this.commands.scriptSuffix}`);
    writeFileSync(file, this.script(launch), { mode: 0o600 });
    chmodSync(file, 0o600);
    try {
      const argv = this.commands.submit(file);
      const r = await this.run(argv);
      const jobId = r.code === 0 ? this.commands.jobIdOf(r.stdout) : undefined;
      if (!jobId) {
        const why = `${argv[0]} refused the block: ${errorLine(r)}`;
        this.log.error({ blockId: launch.blockId, code: r.code, stderr: r.stderr.trim() }, why);
        throw new FabricError("FAILED_PRECONDITION", why);
      }
      this.log.info({ blockId: launch.blockId, jobId }, "block submitted");
      return jobId;
    } finally {
      // The scheduler keeps its own copy; ours holds the block secret.
      rmSync(file, { force: true });
    }
  }

  async status(jobIds: readonly string[]): Promise<Map<string, BlockJobStatus>> {
    if (jobIds.length === 0) return new Map();
    return this.jobStates(jobIds);
  }

  async cancel(jobId: string): Promise<void> {
    const argv = this.commands.cancel(jobId);
    const r = await this.run(argv);
    if (r.code !== 0 && !this.commands.alreadyEnded.test(r.stderr)) {
      throw new FabricError("UNAVAILABLE", `${argv[0]} ${jobId} failed: ${errorLine(r)}`);
    }
    this.log.info({ jobId }, "block cancelled");
  }
}
