import { spawn } from "node:child_process";

import { FabricError, setLongTimeout } from "../../common/index.js";

/** What a finished scheduler command printed. */
export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of {@link runSchedulerCommand}. */
export interface CommandOptions {
  /** Kill the command (its whole process group) after this long. */
  readonly timeoutMs: number;
  /** Environment for the command. @default process.env */
  readonly env?: NodeJS.ProcessEnv;
  /** Bytes kept of each output stream. @default 4 MiB */
  readonly maxOutputBytes?: number;
}

/** The last meaningful line of a command's error output, for a person to read in a status. */
export function errorLine(r: CommandResult): string {
  const lines = `${r.stderr}\n${r.stdout}`
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  // Slurm prints "sbatch: error: ..." lines; the last one carries the verdict.
  const errors = lines.filter((l) => /error|fatal|invalid|denied|unknown|not/i.test(l));
  return (errors.length > 0 ? errors : lines).slice(-2).join("; ") || `exited with code ${r.code}`;
}

/**
 * Runs one scheduler command (sbatch, squeue, qsub, ...) with a deadline. Resolves with its exit
 * code and output whatever the code; rejects with a {@link FabricError} only when the command
 * cannot be run (not installed: FAILED_PRECONDITION) or did not finish in time
 * (DEADLINE_EXCEEDED). Never leaves the command running.
 */
export function runSchedulerCommand(argv: readonly string[], opts: CommandOptions): Promise<CommandResult> {
  const [exe, ...args] = argv;
  if (!exe) return Promise.reject(new FabricError("INVALID_ARGUMENT", "empty scheduler command"));
  const cap = opts.maxOutputBytes ?? 4 * 1024 * 1024;
  const shown = argv.join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn(exe, args, {
      env: opts.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so a timeout kills whatever it started too.
      detached: true,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      if (stdout.length < cap) stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      if (stderr.length < cap) stderr += d.toString();
    });
    let timedOut = false;
    // commandTimeoutSeconds is the endpoint owner's to set, without an upper bound.
    const timer = setLongTimeout(() => {
      timedOut = true;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    }, opts.timeoutMs);
    child.once("error", (err: NodeJS.ErrnoException) => {
      timer.clear();
      reject(
        err.code === "ENOENT"
          ? new FabricError(
              "FAILED_PRECONDITION",
              `\`${exe}\` was not found on PATH: is the scheduler's client installed (or its module loaded) on this host?`,
            )
          : new FabricError("UNAVAILABLE", `cannot run \`${shown}\`: ${err.message}`),
      );
    });
    child.once("close", (code, signal) => {
      timer.clear();
      if (timedOut) {
        reject(
          new FabricError(
            "DEADLINE_EXCEEDED",
            `\`${shown}\` did not answer within ${Math.round(opts.timeoutMs / 1000)} s (the scheduler may be overloaded or down)`,
          ),
        );
        return;
      }
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}
