import type { ContainerConfig } from "./config.js";
import type { WorkerLaunchRequest } from "./launcher.js";

/** Environment a worker needs inside the container; `--cleanenv` drops everything else. */
const PASSED_ENV = [
  "FABRIC_WORKER_ID",
  "FABRIC_SHELL_WALLTIME_S",
  "FABRIC_MAX_RESULT_BYTES",
  "FABRIC_LOG_LEVEL",
];

/**
 * The command line of a worker under Apptainer (or Singularity): an isolated container
 * (`--containall`: own PID, IPC and mount namespaces, no home, clean /tmp and /dev), no home
 * directory, a clean environment, only the configured binds (`:ro` unless writable), no network
 * unless allowed (`--net --network none`), a size-limited writable tmpfs, and memory, CPU and
 * pids limits (cgroups; needs apptainer ≥ 1.1 and cgroups v2 or a root-run v1 setup).
 * The worker (the Node.js worker, or for Python functions the Python runtime under the image's
 * interpreter) inherits fd 3 from the manager and speaks frames over it, as a bare process does.
 * Pure.
 */
export function apptainerWorkerCommand(cfg: ContainerConfig, req: WorkerLaunchRequest): string[] {
  const argv = [
    cfg.apptainer.executable,
    "exec",
    "--containall",
    "--no-home",
    "--cleanenv",
    "--no-privs",
    "--writable-tmpfs",
  ];
  for (const m of cfg.mounts) argv.push("--bind", `${m.source}:${m.target}:${m.readOnly ? "ro" : "rw"}`);
  if (!req.network) argv.push("--net", "--network", "none");
  argv.push(
    "--memory",
    `${cfg.limits.memoryMiB}M`,
    "--memory-swap",
    `${cfg.limits.memoryMiB}M`,
    "--cpus",
    String(cfg.limits.cpus),
    "--pids-limit",
    String(cfg.limits.pids),
  );
  for (const [k, v] of Object.entries(req.env)) {
    if (PASSED_ENV.includes(k)) argv.push("--env", `${k}=${v}`);
  }
  if (req.language === "python") argv.push(req.image, cfg.apptainer.python, cfg.apptainer.pythonRuntimePath);
  else argv.push(req.image, "node", cfg.apptainer.workerPath);
  return argv;
}
