/**
 * Pieces every batch-scheduler job script shares: quoting, walltimes, the worker-init lines, the
 * block's environment, and the launcher line that starts one worker manager per node.
 */
import type { BlockLaunch } from "../provider.js";

/** Quotes a word for POSIX sh (single quotes; safe for any content). */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_./:=@%+,-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Seconds as a scheduler walltime, `HH:MM:SS` (hours may exceed 24). */
export function formatWalltime(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  return `${String(hh).padStart(2, "0")}:${String(mm).padStart(2, "0")}:${String(ss).padStart(2, "0")}`;
}

/**
 * Parses a walltime as schedulers write it: `SS`, `MM:SS`, `HH:MM:SS` or `D-HH:MM:SS` (Slurm).
 * Returns seconds, or undefined when it is not one.
 */
export function parseWalltime(text: string): number | undefined {
  const m = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(text.trim());
  if (!m) return undefined;
  const days = Number(m[1] ?? 0);
  const parts = [m[2], m[3], m[4]].filter((p): p is string => p !== undefined).map(Number);
  let secs = 0;
  for (const p of parts) secs = secs * 60 + p;
  // With a day part, Slurm reads "D-HH" and "D-HH:MM" as hours first.
  if (m[1] !== undefined) {
    const [h = 0, mi = 0, s = 0] = parts;
    secs = h * 3600 + mi * 60 + s;
  }
  if (parts.some((p) => !Number.isFinite(p))) return undefined;
  return days * 86_400 + secs;
}

/** How a multi-node block starts its managers: one per node. */
export type LauncherConfig =
  | { readonly type: "single" }
  | { readonly type: "srun"; readonly options?: string | undefined }
  | { readonly type: "mpiexec"; readonly options?: string | undefined };

/**
 * The line that starts the worker manager(s) of a block of `nodes` nodes.
 * - `single`: the manager runs on the batch job's first node (one node per block);
 * - `srun`: `srun` starts one manager per node (Slurm);
 * - `mpiexec`: `mpiexec -n NODES` with one process per node (`-ppn 1` unless `options` say otherwise).
 */
export function launcherLine(launcher: LauncherConfig, nodes: number, command: readonly string[]): string {
  const cmd = command.map(shellQuote).join(" ");
  switch (launcher.type) {
    case "single":
      return `exec ${cmd}`;
    case "srun":
      return `exec srun --nodes=${nodes} --ntasks=${nodes} --ntasks-per-node=1 --kill-on-bad-exit=0 ${launcher.options ? `${launcher.options} ` : ""}${cmd}`;
    case "mpiexec":
      return `exec mpiexec -n ${nodes} ${launcher.options ?? "-ppn 1"} ${cmd}`;
  }
}

/** What goes after the scheduler directives in every job script. */
export interface ScriptBody {
  readonly launch: BlockLaunch;
  /** Shell lines run before the managers start (`module load ...`, activating an environment). */
  readonly workerInit: string;
  readonly launcher: LauncherConfig;
  readonly nodes: number;
  /** Extra environment (scheduler-specific), exported after the block's own. */
  readonly extraEnv?: Readonly<Record<string, string>>;
}

/**
 * The body of a job script: a header comment, worker-init, the block's environment (exported,
 * so the launcher passes it to every node's manager) and the launcher line. The script holds the
 * block secret: write it with mode 0600.
 */
export function scriptBody(b: ScriptBody): string {
  const lines: string[] = [];
  lines.push(`# fabric block ${b.launch.blockId}: ${b.nodes} node(s), one worker manager per node`);
  if (b.workerInit.trim()) {
    lines.push("# worker init", b.workerInit.trimEnd());
  }
  const env = { ...b.launch.env, ...b.extraEnv };
  for (const [k, v] of Object.entries(env)) lines.push(`export ${k}=${shellQuote(v)}`);
  lines.push(launcherLine(b.launcher, b.nodes, b.launch.command));
  return `${lines.join("\n")}\n`;
}

/** Raw scheduler options as directive lines: each non-empty line gets `prefix` unless it has it. */
export function directiveLines(prefix: string, raw: string): string[] {
  return raw
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .map((l) => (l.startsWith(prefix) ? l : `${prefix} ${l}`));
}

/** The settings of a block that every scheduler's job script is made from. */
export interface BatchScriptSettings {
  readonly nodesPerBlock: number;
  readonly walltime: string;
  readonly workerInit: string;
  /** Raw scheduler options, one per line (see {@link directiveLines}). */
  readonly schedulerOptions: string;
}

/**
 * A whole job script: `#!/bin/bash`, the scheduler's `directives`, the raw `schedulerOptions` as
 * directives with `prefix`, then the body, which also exports the block's walltime in seconds
 * (FABRIC_BLOCK_WALLTIME_S). Pure: what it returns is what gets submitted.
 */
export function jobScript(
  prefix: string,
  directives: readonly string[],
  c: BatchScriptSettings,
  launcher: LauncherConfig,
  launch: BlockLaunch,
): string {
  const d = ["#!/bin/bash", ...directives, ...directiveLines(prefix, c.schedulerOptions)];
  const body = scriptBody({
    launch,
    workerInit: c.workerInit,
    launcher,
    nodes: c.nodesPerBlock,
    extraEnv: { FABRIC_BLOCK_WALLTIME_S: String(parseWalltime(c.walltime) ?? 0) },
  });
  return `${d.join("\n")}\n\n${body}`;
}
