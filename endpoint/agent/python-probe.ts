/**
 * Which Python the endpoint's workers get: the agent runs `python.executable` once at start, after
 * the provider's `workerInit` (so `module load` and `conda activate` count), and reports what it
 * found in its status. The broker checks a Python function's minimum version against it when a
 * task is submitted.
 */
import { execFile } from "node:child_process";

import type { PythonInfo } from "../../proto/index.js";

/** Prints what the status reports, as one line of JSON. Standard library only. */
const PROBE = [
  "import json, pkgutil, sys",
  "names = set(sys.builtin_module_names) | {m.name for m in pkgutil.iter_modules()}",
  "print(json.dumps({'version': '%d.%d.%d' % tuple(sys.version_info[:3]), 'executable': sys.executable,",
  "  'implementation': sys.implementation.name, 'modules': sorted(n for n in names if not n.startswith('_'))}))",
].join("\n");

/** Most module names reported (a status stays small whatever the site installed). */
const MAX_MODULES = 2000;

/** How long the probe may take (a cold `module load` on a shared file system can be slow). */
const PROBE_TIMEOUT_MS = 30_000;

/** Options of {@link probePython}. */
export interface PythonProbeOptions {
  /** The interpreter to run: a name on PATH or a path. */
  readonly executable: string;
  /** Shell lines run first (the provider's `workerInit`), "" for none. */
  readonly workerInit: string;
  readonly timeoutMs?: number;
}

/** The interpreter `executable` is, or why there is none (`problem`). Never rejects. */
export function probePython(o: PythonProbeOptions): Promise<PythonInfo> {
  const none = (problem: string): PythonInfo => ({
    version: "",
    executable: "",
    implementation: "",
    problem,
    modules: [],
  });
  // `exec "$0"` runs the interpreter the shell resolves after workerInit, with no quoting of ours.
  const script = `${o.workerInit.trim() ? `${o.workerInit.trimEnd()}\n` : ""}exec "$0" -c "$1"`;
  return new Promise((resolve) => {
    execFile(
      "/bin/sh",
      ["-c", script, o.executable, PROBE],
      { timeout: o.timeoutMs ?? PROBE_TIMEOUT_MS, maxBuffer: 4 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) {
          const why = (stderr.trim().split("\n").pop() ?? "") || err.message;
          resolve(none(`cannot run the Python interpreter ${JSON.stringify(o.executable)}: ${why}`));
          return;
        }
        try {
          const p = JSON.parse(stdout.trim().split("\n").pop() ?? "") as Record<string, unknown>;
          if (typeof p["version"] !== "string") throw new Error("no version");
          resolve({
            version: p["version"],
            executable: typeof p["executable"] === "string" ? p["executable"] : "",
            implementation: typeof p["implementation"] === "string" ? p["implementation"] : "",
            problem: "",
            modules: Array.isArray(p["modules"])
              ? p["modules"].filter((m): m is string => typeof m === "string").slice(0, MAX_MODULES)
              : [],
          });
        } catch {
          resolve(none(`${JSON.stringify(o.executable)} did not answer as a Python interpreter`));
        }
      },
    );
  });
}
