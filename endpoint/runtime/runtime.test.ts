import { describe, expect, it } from "vitest";

import { resolveConfig } from "../config.js";
import { apptainerWorkerCommand } from "./apptainer.js";
import { describeStatus } from "./docker-launcher.js";
import { ContainerConfigSchema, resolveContainerConfig } from "./config.js";
import { MANAGED_LABEL, networkAllowed, workerContainerOptions } from "./docker-options.js";
import type { WorkerContainerSpec } from "./docker-options.js";

const spec = (over: Partial<WorkerContainerSpec> = {}): WorkerContainerSpec => ({
  engine: "docker",
  image: "fabric-worker:0.1.0",
  name: "fabric-m1-0",
  hostname: "fabric-0-node1",
  network: false,
  runDir: "/tmp/fabric-run-x/c0",
  env: { FABRIC_WORKER_ID: "m1/w0", FABRIC_WORKER_SOCKET: "/fabric/run/worker.sock" },
  managerId: "m1",
  ...over,
});

describe("container config", () => {
  it("defaults to bare processes and hardened container settings", () => {
    const c = resolveContainerConfig({});
    expect(c).toMatchObject({
      runtime: "none",
      image: "fabric-worker:0.1.0",
      shellImage: "fabric-worker-shell:0.1.0",
      user: "65534:65534",
      limits: { memoryMiB: 512, cpus: 1, pids: 256, tmpfsMiB: 64 },
      mounts: [],
      network: { policy: "on-request", mode: "bridge" },
      pool: { keepWarm: 1, idleSeconds: 300 },
    });
    expect(resolveConfig({ broker: "b:1" }).container.runtime).toBe("none");
  });

  it("names the bad field's path in the endpoint config", () => {
    const bad = () =>
      resolveConfig({
        broker: "b:1",
        container: {
          runtime: "lxc",
          user: "0:0",
          limits: { memoryMiB: 4 },
          mounts: [{ source: "data", target: "/data" }],
        },
      });
    expect(bad).toThrow(/container\.runtime: expected one of "none", "docker", "podman", "apptainer"/);
    expect(bad).toThrow(/container\.user: expected a non-root user/);
    expect(bad).toThrow(/container\.limits\.memoryMiB: expected at least 16 MiB/);
    expect(bad).toThrow(/container\.mounts\.0\.source: expected an absolute path/);
    expect(() => resolveConfig({ broker: "b:1", container: { runtime: "docker", sockett: "/x" } })).toThrow(
      /container: unknown field sockett/,
    );
  });

  it("mounts are read-only unless the config says otherwise", () => {
    const c = ContainerConfigSchema.parse({
      mounts: [
        { source: "/a", target: "/a" },
        { source: "/b", target: "/b", readOnly: false },
      ],
    });
    expect(c.mounts.map((m) => m.readOnly)).toEqual([true, false]);
  });
});

describe("network policy", () => {
  it("gives a network only where the endpoint's policy allows it", () => {
    const at = (policy: string) => resolveContainerConfig({ network: { policy } });
    expect(networkAllowed(at("on-request"), false)).toBe(false);
    expect(networkAllowed(at("on-request"), true)).toBe(true);
    expect(networkAllowed(at("deny"), true)).toBe(false);
    expect(networkAllowed(at("allow"), false)).toBe(true);
  });
});

describe("docker create options", () => {
  const cfg = resolveContainerConfig({
    runtime: "docker",
    limits: { memoryMiB: 256, cpus: 1.5, pids: 100, tmpfsMiB: 32 },
    mounts: [
      { source: "/data/run42", target: "/data" },
      { source: "/scratch/out", target: "/out", readOnly: false },
    ],
  });

  it("are hardened: no network, read-only root, tmpfs scratch, no capabilities, no-new-privileges, non-root, limits", () => {
    const o = workerContainerOptions(cfg, spec());
    expect(o.User).toBe("65534:65534");
    expect(o.NetworkDisabled).toBe(true);
    expect(o.Labels).toMatchObject({ [MANAGED_LABEL]: "true", "org.fabric.manager": "m1" });
    expect(o.HostConfig).toMatchObject({
      NetworkMode: "none",
      ReadonlyRootfs: true,
      Tmpfs: { "/tmp": "rw,nosuid,nodev,size=32m,mode=1777" },
      CapDrop: ["ALL"],
      SecurityOpt: ["no-new-privileges"],
      Privileged: false,
      Memory: 256 * 1024 * 1024,
      MemorySwap: 256 * 1024 * 1024,
      NanoCpus: 1_500_000_000,
      PidsLimit: 100,
      Init: true,
    });
    expect(o.HostConfig?.CapAdd).toBeUndefined();
  });

  it("mount only the run directory and the configured paths, read-only unless configured", () => {
    const o = workerContainerOptions(cfg, spec());
    expect(o.HostConfig?.Mounts).toEqual([
      { Type: "bind", Source: "/tmp/fabric-run-x/c0", Target: "/fabric/run", ReadOnly: true },
      { Type: "bind", Source: "/data/run42", Target: "/data", ReadOnly: true },
      { Type: "bind", Source: "/scratch/out", Target: "/out", ReadOnly: false },
    ]);
    expect(o.HostConfig?.Binds).toBeUndefined();
    const all = JSON.stringify(o);
    expect(all).not.toMatch(/docker\.sock|podman\.sock/);
  });

  it("pass only the worker's environment", () => {
    expect(workerContainerOptions(cfg, spec()).Env).toEqual([
      "FABRIC_WORKER_ID=m1/w0",
      "FABRIC_WORKER_SOCKET=/fabric/run/worker.sock",
    ]);
  });

  it("join the configured network only when allowed", () => {
    const o = workerContainerOptions(cfg, spec({ network: true }));
    expect(o.NetworkDisabled).toBe(false);
    expect(o.HostConfig?.NetworkMode).toBe("bridge");
  });

  it("set the rlimits Podman needs, and only for Podman", () => {
    expect(workerContainerOptions(cfg, spec()).HostConfig?.Ulimits).toBeUndefined();
    expect(workerContainerOptions(cfg, spec({ engine: "podman" })).HostConfig?.Ulimits).toEqual([
      { Name: "nofile", Soft: 20000, Hard: 20000 },
      { Name: "nproc", Soft: 32768, Hard: 32768 },
    ]);
  });
});

describe("container exit statuses", () => {
  it("name the signal behind 128 + N, a native crash, and a plain exit code", () => {
    expect(describeStatus(3)).toBe("exited with code 3");
    expect(describeStatus(137)).toBe("was killed (SIGKILL)");
    expect(describeStatus(139)).toBe(
      "crashed (SIGSEGV: typically a fault in native code, such as a C extension)",
    );
    expect(describeStatus(134)).toBe("aborted (SIGABRT: a C library gave up)");
    expect(describeStatus(200)).toBe("exited with code 200");
    expect(describeStatus(undefined)).toBe("ended (its exit status is unknown)");
  });
});

describe("apptainer command line", () => {
  const cfg = resolveContainerConfig({
    runtime: "apptainer",
    limits: { memoryMiB: 1024, cpus: 2, pids: 128 },
    mounts: [
      { source: "/gpfs/beamline", target: "/data" },
      { source: "/scratch/u1", target: "/out", readOnly: false },
    ],
  });
  const req = {
    id: "m/w0",
    image: "/sw/images/fabric-worker.sif",
    network: false,
    env: {
      FABRIC_WORKER_ID: "m/w0",
      FABRIC_MAX_RESULT_BYTES: "1024",
      FABRIC_BLOCK_SECRET: "never",
      HOME: "/root",
    },
  };

  it("isolates the worker: containall, no home, clean env, no privileges, binds, no network, limits", () => {
    // As a shell would show it, one part a line: no argument holds a space, so the words are the argv.
    const argv = apptainerWorkerCommand(cfg, req);
    expect(argv.filter((a) => a.includes(" "))).toEqual([]);
    expect(argv.join(" ")).toBe(
      [
        "apptainer exec --containall --no-home --cleanenv --no-privs --writable-tmpfs",
        "--bind /gpfs/beamline:/data:ro --bind /scratch/u1:/out:rw",
        "--net --network none",
        "--memory 1024M --memory-swap 1024M --cpus 2 --pids-limit 128",
        "--env FABRIC_WORKER_ID=m/w0 --env FABRIC_MAX_RESULT_BYTES=1024",
        "/sw/images/fabric-worker.sif node /fabric/worker/endpoint/worker/main.js",
      ].join(" "),
    );
  });

  it("passes no secret and grants a network only when allowed", () => {
    const argv = apptainerWorkerCommand(cfg, { ...req, network: true });
    expect(argv.join(" ")).not.toMatch(/SECRET|HOME=/);
    expect(argv).not.toContain("--net");
    const singularity = apptainerWorkerCommand(
      resolveContainerConfig({ apptainer: { executable: "singularity" } }),
      req,
    );
    expect(singularity[0]).toBe("singularity");
  });

  it("runs a Python worker as the image's interpreter on the runtime it ships, isolated the same way", () => {
    const image = "/sw/images/fabric-worker-python.sif";
    const argv = apptainerWorkerCommand(cfg, { ...req, image, language: "python" });
    expect(argv.slice(-3)).toEqual([image, "python3", "/fabric/worker/fabric_runtime.py"]);
    expect(argv.slice(0, 7)).toEqual(apptainerWorkerCommand(cfg, req).slice(0, 7));
    expect(argv).toContain("--containall");
    const own = apptainerWorkerCommand(
      resolveContainerConfig({
        runtime: "apptainer",
        apptainer: { python: "/opt/conda/bin/python", pythonRuntimePath: "/opt/fabric/fabric_runtime.py" },
      }),
      { ...req, image, language: "python" },
    );
    expect(own.slice(-2)).toEqual(["/opt/conda/bin/python", "/opt/fabric/fabric_runtime.py"]);
    expect(() =>
      resolveContainerConfig({ runtime: "apptainer", apptainer: { pythonRuntimePath: "relative.py" } }),
    ).toThrow(/expected an absolute path/);
  });
});
