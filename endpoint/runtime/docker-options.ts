import type { ContainerCreateOptions } from "dockerode";

import type { ContainerConfig } from "./config.js";

/** Label on every container the fabric creates (cleanup finds them by it). */
export const MANAGED_LABEL = "org.fabric.managed";
/** Label naming the manager that owns a container. */
export const MANAGER_LABEL = "org.fabric.manager";
/** Where the manager's per-container run directory (holding the worker socket) is mounted. */
export const RUN_DIR_IN_CONTAINER = "/fabric/run";
/** The worker's socket inside the container. */
export const WORKER_SOCKET_IN_CONTAINER = `${RUN_DIR_IN_CONTAINER}/worker.sock`;

/** The Docker-compatible engines driven through dockerode. */
export type DockerEngine = "docker" | "podman";

/** What one container is for. */
export interface WorkerContainerSpec {
  readonly engine: DockerEngine;
  readonly image: string;
  /** Container name (unique per node). */
  readonly name: string;
  /** Short host name the function sees. */
  readonly hostname: string;
  /** Whether this container gets a network. */
  readonly network: boolean;
  /** Host directory holding the worker socket, mounted read-only at {@link RUN_DIR_IN_CONTAINER}. */
  readonly runDir: string;
  /** The worker's environment: only what the worker needs, never the manager's own. */
  readonly env: Readonly<Record<string, string>>;
  /** Labels added to the managed ones (tests use them for cleanup). */
  readonly labels?: Readonly<Record<string, string>>;
  readonly managerId: string;
}

/**
 * Whether a function gets a network under the endpoint's policy.
 * @param requested the function was registered asking for network access
 */
export function networkAllowed(cfg: ContainerConfig, requested: boolean): boolean {
  if (cfg.network.policy === "allow") return true;
  if (cfg.network.policy === "deny") return false;
  return requested;
}

/**
 * The create options of a hardened worker container: no network unless allowed, read-only root
 * with a size-limited tmpfs at /tmp, every capability dropped, no-new-privileges, a non-root user,
 * memory (without swap), CPU and pids limits, and only the mounts the config names (read-only
 * unless it says otherwise) plus the read-only run directory holding the worker's socket. Pure.
 */
export function workerContainerOptions(
  cfg: ContainerConfig,
  spec: WorkerContainerSpec,
): ContainerCreateOptions {
  const memory = cfg.limits.memoryMiB * 1024 * 1024;
  const mounts = [
    { Type: "bind" as const, Source: spec.runDir, Target: RUN_DIR_IN_CONTAINER, ReadOnly: true },
    ...cfg.mounts.map((m) => ({
      Type: "bind" as const,
      Source: m.source,
      Target: m.target,
      ReadOnly: m.readOnly,
    })),
  ];
  return {
    name: spec.name,
    Image: spec.image,
    Hostname: spec.hostname,
    User: cfg.user,
    WorkingDir: "/tmp",
    Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
    Labels: { ...spec.labels, [MANAGED_LABEL]: "true", [MANAGER_LABEL]: spec.managerId },
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    OpenStdin: false,
    Tty: false,
    NetworkDisabled: !spec.network,
    HostConfig: {
      NetworkMode: spec.network ? cfg.network.mode : "none",
      ReadonlyRootfs: true,
      Tmpfs: { "/tmp": `rw,nosuid,nodev,size=${cfg.limits.tmpfsMiB}m,mode=1777` },
      CapDrop: ["ALL"],
      SecurityOpt: ["no-new-privileges"],
      Privileged: false,
      Memory: memory,
      MemorySwap: memory,
      NanoCpus: Math.round(cfg.limits.cpus * 1e9),
      PidsLimit: cfg.limits.pids,
      // A real init as PID 1 reaps the orphans of shell functions and forwards signals.
      Init: true,
      Mounts: mounts,
      // This VM (and many HPC nodes) refuse Podman's default rlimits; Docker's come from its daemon.
      ...(spec.engine === "podman"
        ? {
            Ulimits: [
              { Name: "nofile", Soft: 20000, Hard: 20000 },
              { Name: "nproc", Soft: 32768, Hard: 32768 },
            ],
          }
        : {}),
      LogConfig:
        spec.engine === "docker"
          ? { Type: "json-file", Config: { "max-size": "1m", "max-file": "1" } }
          : { Type: "k8s-file", Config: {} },
      AutoRemove: false,
      RestartPolicy: { Name: "no" },
    },
  };
}
