import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import path from "node:path";

import { FabricError, type Logger } from "../../common/index.js";
import type { BlockJobStatus, BlockLaunch, ExecutionProvider } from "../provider.js";

interface LocalJob {
  readonly child: ChildProcess;
  status: BlockJobStatus;
  readonly exited: Promise<void>;
}

/**
 * Blocks as processes on the agent's own machine: each block is one worker-manager process.
 * Its output goes to the block's log file (or is discarded).
 */
export class LocalProvider implements ExecutionProvider {
  readonly name = "local";
  private readonly jobs = new Map<string, LocalJob>();
  private readonly log: Logger;

  constructor(log: Logger) {
    this.log = log.child({ component: "endpoint.provider.local" });
  }

  async submitBlock(launch: BlockLaunch): Promise<string> {
    const [exe, ...args] = launch.command;
    if (!exe) throw new FabricError("INVALID_ARGUMENT", "a block needs a command");
    let fd: number | "ignore" = "ignore";
    if (launch.logFile) {
      mkdirSync(path.dirname(launch.logFile), { recursive: true });
      fd = openSync(launch.logFile, "a", 0o600);
    }
    let child: ChildProcess;
    try {
      child = spawn(exe, args, {
        env: { ...process.env, ...launch.env },
        stdio: ["ignore", fd, fd],
        detached: false,
      });
    } finally {
      // The child holds its own copy of the descriptor.
      if (typeof fd === "number") closeSync(fd);
    }
    const spawned = await new Promise<Error | undefined>((resolve) => {
      child.once("spawn", () => resolve(undefined));
      child.once("error", (err) => resolve(err));
    });
    if (spawned || child.pid === undefined) {
      throw new FabricError(
        "UNAVAILABLE",
        `cannot start block ${launch.blockId}: ${spawned?.message ?? "no pid"}`,
      );
    }
    const jobId = `local-${child.pid}`;
    const job: LocalJob = {
      child,
      status: { state: "running" },
      exited: new Promise((resolve) => {
        child.once("exit", (code, signal) => {
          job.status =
            code === 0
              ? { state: "completed", reason: "exited with code 0" }
              : { state: "failed", reason: signal ? `killed by ${signal}` : `exited with code ${code}` };
          this.log.info({ blockId: launch.blockId, jobId, code, signal }, "block process ended");
          resolve();
        });
      }),
    };
    this.jobs.set(jobId, job);
    this.log.info({ blockId: launch.blockId, jobId }, "block process started");
    return jobId;
  }

  async status(jobIds: readonly string[]): Promise<Map<string, BlockJobStatus>> {
    const out = new Map<string, BlockJobStatus>();
    for (const id of jobIds) out.set(id, this.jobs.get(id)?.status ?? { state: "unknown" });
    return out;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
  async cancel(jobId: string, graceMs = 5000): Promise<void> {
    const job = this.jobs.get(jobId);
    if (!job) return;
    if (job.child.exitCode === null && job.child.signalCode === null) {
      job.child.kill("SIGTERM");
      const timer = setTimeout(() => job.child.kill("SIGKILL"), graceMs);
      await job.exited;
      clearTimeout(timer);
      if (job.status.state === "failed") job.status = { state: "cancelled", reason: job.status.reason ?? "" };
    }
    this.jobs.delete(jobId);
  }
}
