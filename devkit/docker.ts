/**
 * Container engines for the demo, tests and benchmarks: the Docker daemon (installed with apt and
 * started when absent; stopped afterwards only if we started it) and a Podman API service on a
 * temporary socket with its own storage (always ours, always stopped).
 */
import { execFileSync, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import Docker from "dockerode";

import { ROOT } from "./processes.js";

/** Installs Debian packages when missing (idempotent; apt-get only when needed). */
export function ensureSystemPackages(...packages: string[]): void {
  execFileSync("bash", [path.join(ROOT, "scripts/ensure-system.sh"), ...packages], { stdio: "inherit" });
}

async function pingUntil(
  docker: Docker,
  proc: ChildProcess | undefined,
  timeoutMs: number,
  what: string,
  log: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await docker.ping();
      return;
    } catch (err) {
      if (proc && (proc.exitCode !== null || proc.signalCode !== null)) {
        throw new Error(
          `${what} exited (${proc.exitCode ?? proc.signalCode}) before answering. Log:\n${tail(log)}`,
          {
            cause: err,
          },
        );
      }
      if (Date.now() > deadline) {
        throw new Error(
          `${what} did not answer within ${timeoutMs} ms: ${(err as Error).message}. Log:\n${tail(log)}`,
          {
            cause: err,
          },
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, "utf8").slice(-3000);
  } catch {
    return "(no log)";
  }
}

async function stopChild(proc: ChildProcess, graceMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** A running container engine API. */
export interface ContainerEngine {
  readonly engine: "docker" | "podman";
  readonly socketPath: string;
  readonly docker: Docker;
  /** Whether this process started the engine (and so stops it). */
  readonly started: boolean;
  /** Stops the engine if we started it. */
  stop(): Promise<void>;
}

/**
 * The local Docker engine: installs docker.io if missing and starts dockerd if nothing answers on
 * /var/run/docker.sock. Only a daemon started here is stopped by `stop()`.
 */
export async function ensureDockerEngine(socketPath = "/var/run/docker.sock"): Promise<ContainerEngine> {
  const docker = new Docker({ socketPath });
  try {
    await docker.ping();
    return { engine: "docker", socketPath, docker, started: false, stop: async () => {} };
  } catch {
    // Not running: start it below.
  }
  ensureSystemPackages("docker.io");
  const dir = mkdtempSync(path.join(tmpdir(), "fabric-dockerd-"));
  const log = path.join(dir, "dockerd.log");
  const fd = openSync(log, "a");
  const proc = spawn("dockerd", ["--host", `unix://${socketPath}`], { stdio: ["ignore", fd, fd], cwd: dir });
  closeSync(fd);
  return engineStarted({ engine: "docker", what: "dockerd", socketPath, docker, proc, log }, 20_000, () =>
    rmSync(dir, { recursive: true, force: true }),
  );
}

/** An engine process this process started: what to wait for, and where. */
interface StartedEngine {
  readonly engine: ContainerEngine["engine"];
  /** The process, as its errors name it. */
  readonly what: string;
  readonly socketPath: string;
  readonly docker: Docker;
  readonly proc: ChildProcess;
  /** Its log file, quoted when it fails to answer. */
  readonly log: string;
}

/**
 * Waits for a started engine to answer its API (ending it if it exits or never answers) and
 * returns it as a {@link ContainerEngine} whose `stop()` ends it (SIGKILL after `graceMs`), then
 * runs `cleanUp`.
 */
async function engineStarted(
  started: StartedEngine,
  graceMs: number,
  cleanUp: () => void,
): Promise<ContainerEngine> {
  const { engine, what, socketPath, docker, proc, log } = started;
  try {
    await pingUntil(docker, proc, 60_000, what, log);
  } catch (err) {
    await stopChild(proc, 5_000);
    throw err;
  }
  return {
    engine,
    socketPath,
    docker,
    started: true,
    stop: async () => {
      await stopChild(proc, graceMs);
      cleanUp();
    },
  };
}

/**
 * The containers.conf this VM (and many HPC nodes) needs for Podman: cgroupfs, a file event log,
 * rlimits the kernel accepts, and the k8s-file log driver.
 */
export const PODMAN_CONTAINERS_CONF = `[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
`;

/**
 * A Podman API service of our own: installs podman if missing, then runs `podman system service`
 * on a socket in a temporary directory with its own storage, so nothing of the host's Podman is
 * touched. `stop()` ends the service and removes its storage.
 */
export async function startPodmanService(): Promise<ContainerEngine> {
  ensureSystemPackages("podman", "catatonit");
  const dir = mkdtempSync(path.join(tmpdir(), "fabric-podman-"));
  const conf = path.join(dir, "containers.conf");
  writeFileSync(conf, PODMAN_CONTAINERS_CONF);
  const root = path.join(dir, "root");
  const runroot = path.join(dir, "runroot");
  mkdirSync(root);
  mkdirSync(runroot);
  const socketPath = path.join(dir, "podman.sock");
  const log = path.join(dir, "podman.log");
  const fd = openSync(log, "a");
  const base = ["--root", root, "--runroot", runroot, "--tmpdir", path.join(dir, "tmp")];
  const env = { ...process.env, CONTAINERS_CONF: conf };
  const proc = spawn("podman", [...base, "system", "service", "--time=0", `unix://${socketPath}`], {
    stdio: ["ignore", fd, fd],
    env,
    // conmon writes files in its working directory (an empty `oom` when a container's memory
    // limit kills it): keep them in the temporary directory, not wherever the tests started.
    cwd: dir,
  });
  closeSync(fd);
  const docker = new Docker({ socketPath });
  const what = "podman system service";
  return engineStarted({ engine: "podman", what, socketPath, docker, proc, log }, 10_000, () => {
    // Its storage holds overlay mounts and layers: let podman itself remove them.
    try {
      execFileSync("podman", [...base, "system", "reset", "--force"], {
        env,
        stdio: "ignore",
        timeout: 60_000,
      });
    } catch {
      // Best effort; the directory removal below catches the rest.
    }
    rmSync(dir, { recursive: true, force: true });
  });
}

/** Removes the images carrying `label` (`key=value`). */
export async function removeImagesByLabel(docker: Docker, label: string): Promise<number> {
  const images = await docker.listImages({ filters: { label: [label] } });
  for (const img of images)
    await docker
      .getImage(img.Id)
      .remove({ force: true })
      .catch(() => undefined);
  return images.length;
}
