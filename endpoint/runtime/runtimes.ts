import type { Logger } from "../../common/logger.js";
import { apptainerWorkerCommand } from "./apptainer.js";
import type { ContainerConfig } from "./config.js";
import { DockerLauncher } from "./docker-launcher.js";
import type { WorkerLauncher } from "./launcher.js";
import { ProcessLauncher } from "./process-launcher.js";

/** What a launcher needs besides the config. */
export interface WorkerLauncherContext {
  readonly managerId: string;
  readonly log: Logger;
  /** Extra labels on containers (tests clean up by them). */
  readonly labels?: Readonly<Record<string, string>>;
}

/**
 * The launcher of the configured runtime: undefined for `none` (the pool then runs bare worker
 * processes), Docker or Podman through dockerode, Apptainer through its command line.
 */
export function createWorkerLauncher(
  cfg: ContainerConfig,
  ctx: WorkerLauncherContext,
): WorkerLauncher | undefined {
  switch (cfg.runtime) {
    case "none":
      return undefined;
    case "docker":
    case "podman":
      return new DockerLauncher({
        engine: cfg.runtime,
        config: cfg,
        managerId: ctx.managerId,
        log: ctx.log,
        ...(ctx.labels ? { labels: ctx.labels } : {}),
      });
    case "apptainer":
      return new ProcessLauncher("apptainer", (req) => apptainerWorkerCommand(cfg, req));
  }
}
