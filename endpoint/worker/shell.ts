import { spawn } from "node:child_process";

import { FabricError, type ShellOutcome, setLongTimeout } from "../../common/lean.js";

/** Largest stdout or stderr a shell function keeps (each); the rest is dropped with a note. */
export const DEFAULT_SHELL_OUTPUT_CAP_BYTES = 1024 * 1024;

/** Quotes one value for POSIX `sh`: inside single quotes nothing is special, and `'` becomes `'\''`. */
export function quoteShellArg(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

function stringOf(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  // Objects and arrays travel as their JSON text: still one quoted argument.
  return JSON.stringify(value);
}

/**
 * Fills `{name}` placeholders from `kwargs`, each value shell-quoted so no argument can inject
 * commands. `{{` and `}}` stand for literal braces. A placeholder without a value is INVALID_ARGUMENT.
 */
export function fillCommandTemplate(template: string, kwargs: Readonly<Record<string, unknown>>): string {
  const missing: string[] = [];
  const out = template.replace(
    /\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}/g,
    (match, name: string | undefined) => {
      if (match === "{{") return "{";
      if (match === "}}") return "}";
      const key = name!;
      if (!Object.hasOwn(kwargs, key) || kwargs[key] === undefined || kwargs[key] === null) {
        missing.push(key);
        return match;
      }
      return quoteShellArg(stringOf(kwargs[key]));
    },
  );
  if (missing.length > 0) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      `the command template needs a value for ${missing.map((m) => `{${m}}`).join(", ")}: pass it as a keyword argument`,
      { reason: "invalid_task" },
    );
  }
  return out;
}

/** How one shell command ended. */
export interface ShellRun extends ShellOutcome {
  /** Whether the walltime was reached and the command's process group killed. */
  readonly timedOut: boolean;
}

/** Collects up to `cap` bytes of a stream, counting what it drops. */
class CappedBuffer {
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  private dropped = 0;

  constructor(private readonly cap: number) {}

  push(chunk: Buffer): void {
    const room = this.cap - this.kept;
    if (room <= 0) {
      this.dropped += chunk.length;
      return;
    }
    const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
    this.chunks.push(part);
    this.kept += part.length;
    this.dropped += chunk.length - part.length;
  }

  text(): string {
    const s = Buffer.concat(this.chunks, this.kept).toString("utf8");
    return this.dropped > 0 ? `${s}\n[... ${this.dropped} more bytes truncated ...]\n` : s;
  }
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is already gone
  }
}

/** Process groups of running shell commands, so a terminating worker can take them along. */
const runningGroups = new Set<number>();

/** Kills every running shell command's process group (called when the worker is told to stop). */
export function killRunningShellCommands(): void {
  for (const pid of runningGroups) killGroup(pid, "SIGKILL");
}

/**
 * Runs `command` with `/bin/sh -c` in its own process group, capturing stdout and stderr (each
 * capped). At the walltime the whole group is killed, so children of the command die too.
 */
export function runShellCommand(
  command: string,
  options: { walltimeS: number; outputCapBytes?: number; cwd?: string; env?: NodeJS.ProcessEnv },
): Promise<ShellRun> {
  const cap = options.outputCapBytes ?? DEFAULT_SHELL_OUTPUT_CAP_BYTES;
  return new Promise((resolve) => {
    const stdout = new CappedBuffer(cap);
    const stderr = new CappedBuffer(cap);
    const child = spawn("/bin/sh", ["-c", command], {
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      cwd: options.cwd,
      env: options.env ?? process.env,
    });
    const pid = child.pid;
    if (pid !== undefined) runningGroups.add(pid);
    let timedOut = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let spawnError: Error | undefined;
    let settled = false;
    let streamsOpen = 2;

    const finish = () => {
      if (settled || exit === undefined) return;
      settled = true;
      walltimeTimer.clear();
      clearTimeout(drainTimer);
      if (pid !== undefined) runningGroups.delete(pid);
      let err = stderr.text();
      if (spawnError) err += `${err ? "\n" : ""}cannot run /bin/sh: ${spawnError.message}`;
      resolve({
        exitCode: exit.code ?? (exit.signal ? 128 : 127),
        stdout: stdout.text(),
        stderr: err,
        ...(exit.signal ? { signal: exit.signal } : {}),
        timedOut,
      });
    };

    child.stdout.on("data", (c: Buffer) => stdout.push(c));
    child.stderr.on("data", (c: Buffer) => stderr.push(c));
    const onClose = () => {
      streamsOpen -= 1;
      if (streamsOpen === 0) finish();
    };
    child.stdout.on("close", onClose);
    child.stderr.on("close", onClose);

    // A walltime may be up to 30 days, past what setTimeout can wait.
    const walltimeTimer = setLongTimeout(() => {
      timedOut = true;
      killGroup(pid, "SIGKILL");
    }, options.walltimeS * 1000);
    let drainTimer: NodeJS.Timeout | undefined;

    child.on("error", (err) => {
      spawnError = err;
      exit ??= { code: 127, signal: null };
      streamsOpen = 0;
      finish();
    });
    child.on("exit", (code, signal) => {
      exit = { code, signal };
      // Like a batch step: whatever the command left running in its group ends with it, so
      // nothing keeps our pipes open or outlives the task.
      killGroup(pid, "SIGKILL");
      // A process that escaped the group (setsid) may still hold the pipes: do not wait forever.
      drainTimer = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        streamsOpen = 0;
        finish();
      }, 2000);
      if (streamsOpen === 0) finish();
    });
  });
}
