import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { hostname as nodeHostname, tmpdir } from "node:os";
import path from "node:path";

import Docker from "dockerode";

import { FabricError } from "../../common/lean.js";
import type { Logger } from "../../common/logger.js";
import type { ContainerConfig } from "./config.js";
import { MANAGED_LABEL, WORKER_SOCKET_IN_CONTAINER, workerContainerOptions } from "./docker-options.js";
import type { DockerEngine } from "./docker-options.js";
import type { LaunchedWorker, WorkerExit, WorkerLaunchRequest, WorkerLauncher } from "./launcher.js";

/** Default API sockets of the engines. */
export const DEFAULT_ENGINE_SOCKET: Readonly<Record<DockerEngine, string>> = {
  docker: "/var/run/docker.sock",
  podman: "/run/podman/podman.sock",
};

/** Options of a {@link DockerLauncher}. */
export interface DockerLauncherOptions {
  readonly engine: DockerEngine;
  readonly config: ContainerConfig;
  readonly managerId: string;
  readonly log: Logger;
  /** API socket. @default config.socket, else the engine's default */
  readonly socketPath?: string;
  /** Extra labels on every container (tests clean up by them). */
  readonly labels?: Readonly<Record<string, string>>;
  /** Parent of the per-container run directories. @default the system temp dir */
  readonly runRoot?: string;
}

interface DockerApiError {
  statusCode?: number;
  json?: { message?: string };
  message?: string;
}

function apiMessage(err: unknown): string {
  const e = err as DockerApiError;
  return (e.json?.message ?? e.message ?? String(err)).trim();
}

/** How much of a dead container's output its exit keeps (a fatal signal's report runs long). */
const LAST_OUTPUT_CHARS = 8000;

/** Last `max` characters of a container's combined output (the reason a worker died early). */
async function outputTail(container: Docker.Container, max = LAST_OUTPUT_CHARS): Promise<string> {
  try {
    const buf = await container.logs({ stdout: true, stderr: true, tail: 40, follow: false });
    // Non-TTY logs are multiplexed: 8-byte headers (stream, 0, 0, 0, size BE) before each chunk.
    const parts: Buffer[] = [];
    for (let off = 0; off + 8 <= buf.length;) {
      const size = buf.readUInt32BE(off + 4);
      parts.push(buf.subarray(off + 8, off + 8 + size));
      off += 8 + size;
    }
    const text = Buffer.concat(parts).toString("utf8");
    return text.length > max ? text.slice(-max) : text;
  } catch {
    return "";
  }
}

const V8_HEAP_OOM = /heap out of memory|Reached heap limit/;

const SIGNAL_NAMES: Readonly<Record<number, string>> = {
  1: "SIGHUP",
  2: "SIGINT",
  4: "SIGILL",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  11: "SIGSEGV",
  13: "SIGPIPE",
  15: "SIGTERM",
};

/**
 * How a container's main process ended, from its exit status (the engine reports a signal N as
 * 128 + N, as a shell does). Pure.
 */
export function describeStatus(code: number | undefined): string {
  if (code === undefined) return "ended (its exit status is unknown)";
  const signal = code > 128 ? SIGNAL_NAMES[code - 128] : undefined;
  if (!signal) return `exited with code ${code}`;
  if (["SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE"].includes(signal))
    return `crashed (${signal}: typically a fault in native code, such as a C extension)`;
  if (signal === "SIGABRT") return "aborted (SIGABRT: a C library gave up)";
  return `was killed (${signal})`;
}

/**
 * The file that counts OOM kills in the memory cgroup of process `pid` (cgroup v1
 * `memory.oom_control`, v2 `memory.events`), or undefined when it cannot be found (another PID
 * namespace, no memory controller).
 */
export function oomCounterFile(pid: number): string | undefined {
  try {
    const lines = readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n");
    const v1 = lines.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l));
    if (v1) return `/sys/fs/cgroup/memory${v1.slice(v1.lastIndexOf(":") + 1)}/memory.oom_control`;
    const v2 = lines.find((l) => l.startsWith("0::"));
    if (v2) return `/sys/fs/cgroup${v2.slice(3)}/memory.events`;
  } catch {
    // Not visible from here.
  }
  return undefined;
}

/** The `oom_kill` count in a cgroup's counter file (0 when unreadable). */
export function readOomKills(file: string | undefined): number {
  if (!file) return 0;
  try {
    const m = /^oom_kill (\d+)$/m.exec(readFileSync(file, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * Workers in containers of a Docker-compatible engine (Docker, or Podman through its
 * Docker-compatible API socket). Each container runs one long-lived worker that connects back to
 * the manager over a unix socket in a per-container run directory (mounted read-only): the frames
 * never pass through the engine, and what a function prints cannot reach the protocol.
 */
export class DockerLauncher implements WorkerLauncher {
  readonly runtime: DockerEngine;
  readonly docker: Docker;
  private readonly log: Logger;
  private readonly runRoot: string;
  private seq = 0;

  constructor(private readonly opts: DockerLauncherOptions) {
    this.runtime = opts.engine;
    this.docker = new Docker({
      socketPath: opts.socketPath ?? opts.config.socket ?? DEFAULT_ENGINE_SOCKET[opts.engine],
    });
    this.log = opts.log.child({ component: `endpoint.runtime.${opts.engine}` });
    const root = opts.runRoot ?? tmpdir();
    mkdirSync(root, { recursive: true });
    this.runRoot = mkdtempSync(path.join(root, "fabric-run-"));
    chmodSync(this.runRoot, 0o711);
  }

  async launch(req: WorkerLaunchRequest): Promise<LaunchedWorker> {
    const n = this.seq++;
    const suffix = `${this.opts.managerId}-${n}`.replace(/[^A-Za-z0-9_.-]/g, "-");
    const runDir = path.join(this.runRoot, `c${n}`);
    mkdirSync(runDir, { mode: 0o711 });
    chmodSync(runDir, 0o711);
    const sockPath = path.join(runDir, "worker.sock");
    const server = net.createServer();
    const cleanupDir = () => rmSync(runDir, { recursive: true, force: true });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(sockPath, () => resolve());
    });
    // The worker runs as a non-root user: it must be able to connect.
    chmodSync(sockPath, 0o666);
    const connected = new Promise<net.Socket>((resolve) => server.once("connection", resolve));

    const options = workerContainerOptions(this.opts.config, {
      engine: this.opts.engine,
      image: req.image,
      name: `fabric-${suffix}`,
      hostname: `fabric-${n}-${nodeHostname().split(".")[0]!.slice(0, 20)}`.slice(0, 63),
      network: req.network,
      runDir,
      env: { ...req.env, FABRIC_WORKER_SOCKET: WORKER_SOCKET_IN_CONTAINER },
      managerId: this.opts.managerId,
      ...(this.opts.labels ? { labels: this.opts.labels } : {}),
    });
    let container: Docker.Container;
    try {
      container = await this.docker.createContainer(options);
    } catch (err) {
      server.close();
      cleanupDir();
      const e = err as DockerApiError;
      if (e.statusCode === 404) {
        throw new FabricError(
          "FAILED_PRECONDITION",
          `container image ${req.image} is not present on node ${nodeHostname()} (${this.runtime}): build it there (containers/build-offline.sh) or pull it`,
          { reason: "invalid_task", cause: err },
        );
      }
      throw new FabricError(
        "UNAVAILABLE",
        `cannot create a ${this.runtime} container from ${req.image}: ${apiMessage(err)}`,
        {
          reason: "worker_lost",
          cause: err,
        },
      );
    }
    const remove = async () => {
      await container.remove({ force: true }).catch((err: unknown) => {
        if ((err as DockerApiError).statusCode !== 404) {
          this.log.warn({ container: options.name, err: apiMessage(err) }, "cannot remove container");
        }
      });
      cleanupDir();
    };
    let waited: Promise<{ StatusCode: number }>;
    try {
      await container.start();
      waited = container.wait() as Promise<{ StatusCode: number }>;
    } catch (err) {
      server.close();
      await remove();
      throw new FabricError(
        "UNAVAILABLE",
        `cannot start a ${this.runtime} container from ${req.image}: ${apiMessage(err)}`,
        {
          reason: "worker_lost",
          cause: err,
        },
      );
    }

    // Podman on cgroup v1 never sets OOMKilled: read the kernel's own counter of the container's
    // memory cgroup when the worker's link drops, before the engine removes the cgroup.
    let oomFile: string | undefined;
    let oomSeen = false;
    const exitInfo = async (statusCode: number | undefined): Promise<WorkerExit> => {
      let oom = oomSeen;
      try {
        const info = await container.inspect();
        oom ||= info.State.OOMKilled;
        statusCode ??= info.State.ExitCode;
      } catch {
        // Already gone: the status code is all we know.
      }
      const tail = (await outputTail(container)).trim();
      if (!oom && V8_HEAP_OOM.test(tail)) oom = true;
      const description = oom
        ? `ran out of memory (the container's limit is ${this.opts.config.limits.memoryMiB} MiB)`
        : describeStatus(statusCode);
      return {
        description,
        outOfMemory: oom,
        ...(tail ? { lastOutput: tail.slice(-LAST_OUTPUT_CHARS) } : {}),
      };
    };

    const timeoutMs = this.opts.config.pool.startTimeoutSeconds * 1000;
    let timer: NodeJS.Timeout | undefined;
    const link = await Promise.race([
      connected,
      waited.then(
        (r) => ({ early: r.StatusCode }) as const,
        (err: unknown) => ({ early: undefined, err }) as const,
      ),
      new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    server.close();
    if (!(link instanceof net.Socket)) {
      const why =
        link === "timeout"
          ? `its worker did not connect within ${timeoutMs / 1000} s`
          : await exitInfo(link.early).then(
              (exit) =>
                `it ${exit.description} before its worker connected${exit.lastOutput ? `: ${exit.lastOutput.split("\n").slice(-3).join(" | ")}` : ""}`,
            );
      await remove();
      throw new FabricError(
        "UNAVAILABLE",
        `a ${this.runtime} container from ${req.image} failed to start: ${why}`,
        {
          reason: "worker_lost",
        },
      );
    }
    link.once("close", () => {
      if (readOomKills(oomFile) > 0) oomSeen = true;
    });
    container.inspect().then(
      (info) => {
        if (info.State.Pid > 0) oomFile = oomCounterFile(info.State.Pid);
      },
      () => undefined,
    );
    this.log.debug(
      { workerId: req.id, container: options.name, image: req.image },
      "container worker connected",
    );

    const exited = waited
      .then(
        (r) => exitInfo(r.StatusCode),
        () => exitInfo(undefined),
      )
      .then(async (exit) => {
        link.destroy();
        await remove();
        return exit;
      });
    const kill = () => {
      container.kill({ signal: "SIGKILL" }).catch(() => undefined);
    };
    return {
      id: req.id,
      link,
      exited,
      kill,
      stop: async (graceMs) => {
        // Closing the link tells the worker to exit; the engine kills what lingers.
        link.end();
        await container.stop({ t: Math.ceil(graceMs / 1000) }).catch(() => undefined);
        await exited;
      },
    };
  }

  /** Whether the engine answers. */
  async ping(): Promise<void> {
    try {
      await this.docker.ping();
    } catch (err) {
      throw new FabricError("UNAVAILABLE", `the ${this.runtime} engine does not answer: ${apiMessage(err)}`, {
        cause: err,
      });
    }
  }

  async close(): Promise<void> {
    rmSync(this.runRoot, { recursive: true, force: true });
  }
}

/** Removes every container carrying `label` (`key=value` or `key`), running or not. */
export async function removeContainersByLabel(
  docker: Docker,
  label: string = MANAGED_LABEL,
): Promise<number> {
  const list = await docker.listContainers({ all: true, filters: { label: [label] } });
  await Promise.all(
    list.map((c) =>
      docker
        .getContainer(c.Id)
        .remove({ force: true })
        .catch(() => undefined),
    ),
  );
  return list.length;
}
