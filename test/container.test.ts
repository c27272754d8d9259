/**
 * Functions in containers, on the real engines: Docker (dockerd started if absent) and Podman
 * (its Docker-compatible API service on a temporary socket). The worker images are built offline
 * from this host's node, tagged and labelled for this run, and removed afterwards with every
 * container the run created. Each hardening property is proved by a function that tries to
 * break it.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { hostname, networkInterfaces, tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  ensureDockerEngine,
  removeImagesByLabel,
  startPodmanService,
  type ContainerEngine,
  ensureWorkerImages,
} from "../devkit/index.js";
import {
  resolveContainerConfig,
  removeContainersByLabel,
  type ContainerConfig,
} from "../endpoint/internal.js";
import { jsItem, PoolHarness, resultOf, shellItem, until } from "./support/container-pool.js";

const RUN = `${process.pid}-${Date.now().toString(36)}`;
const TEST_LABEL_KEY = "org.fabric.test";
const TEST_LABEL = `${TEST_LABEL_KEY}=${RUN}`;

const engines: Array<{ name: "docker" | "podman"; start: () => Promise<ContainerEngine> }> = [
  { name: "docker", start: () => ensureDockerEngine() },
  { name: "podman", start: () => startPodmanService() },
];

describe.each(engines)("functions in $name containers", ({ name, start }) => {
  let engine: ContainerEngine;
  let config: ContainerConfig;
  let harness: PoolHarness;
  let dir: string;
  const pools: PoolHarness[] = [];

  function newPool(size: number, overrides: Record<string, unknown> = {}): PoolHarness {
    const cfg = resolveContainerConfig({ ...configDoc(), ...overrides });
    const p = new PoolHarness(size, cfg, { [TEST_LABEL_KEY]: RUN });
    pools.push(p);
    return p;
  }

  let configDoc: () => Record<string, unknown>;

  beforeAll(async () => {
    engine = await start();
    const tags = await ensureWorkerImages({
      docker: engine.docker,
      tags: { js: `fabric-test-worker:${RUN}`, shell: `fabric-test-worker-shell:${RUN}` },
      labels: { [TEST_LABEL_KEY]: RUN },
    });
    dir = mkdtempSync(path.join(tmpdir(), "fabric-container-test-"));
    mkdirSync(path.join(dir, "data"));
    writeFileSync(path.join(dir, "data", "input.txt"), "beamline 7 calibration\n");
    mkdirSync(path.join(dir, "out"));
    chmodSync(path.join(dir, "out"), 0o777);
    writeFileSync(path.join(dir, "host-secret.txt"), "not for functions\n");
    configDoc = () => ({
      runtime: name,
      socket: engine.socketPath,
      image: tags.js,
      shellImage: tags.shell,
      limits: { memoryMiB: 128, cpus: 1, pids: 64, tmpfsMiB: 16 },
      mounts: [
        { source: path.join(dir, "data"), target: "/data" },
        { source: path.join(dir, "out"), target: "/out", readOnly: false },
      ],
      pool: { keepWarm: 1, idleSeconds: 2 },
    });
    config = resolveContainerConfig(configDoc());
    harness = newPool(2);
  }, 240_000);

  afterAll(async () => {
    for (const p of pools) await p.stop().catch(() => undefined);
    if (engine) {
      await removeContainersByLabel(engine.docker, TEST_LABEL).catch(() => undefined);
      await removeImagesByLabel(engine.docker, TEST_LABEL).catch(() => undefined);
      await engine.stop();
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it("runs a function in its container: the container's filesystem, hostname and user, not the host's", async () => {
    const o = await harness.one(
      jsItem(
        `function whereAmI() {
          const fs = require("node:fs"), os = require("node:os");
          return { hostname: os.hostname(), debian: fs.existsSync("/etc/debian_version"), root: fs.readdirSync("/").sort(), uid: process.getuid(), gid: process.getgid() };
        }`,
        "whereAmI",
      ),
    );
    const r = resultOf(o) as { hostname: string; debian: boolean; root: string[]; uid: number; gid: number };
    expect(r.hostname).not.toBe(hostname());
    expect(r.hostname).toMatch(/^fabric-/);
    expect(existsSync("/etc/debian_version")).toBe(true);
    expect(r.debian).toBe(false);
    expect(r.root).toContain("fabric");
    expect(r.root).not.toContain("home");
    expect(r).toMatchObject({ uid: 65534, gid: 65534 });
    // A shell function runs in the shell image, under the same rules.
    const sh = await harness.one(
      shellItem("id -u; hostname; test -e /etc/debian_version && echo host || echo container"),
    );
    const out = (resultOf(sh) as { stdout: string }).stdout.split("\n");
    expect(out[0]).toBe("65534");
    expect(out[1]).not.toBe(hostname());
    expect(out[2]).toBe("container");
  });

  it("keeps containers warm, reuses them, spreads tasks across the pool and shrinks when idle", async () => {
    const hostOf = jsItem.bind(null, "function host() { return require('node:os').hostname(); }", "host");
    const a = await harness.one(hostOf());
    const b = await harness.one(hostOf());
    expect(resultOf(a)).toBe(resultOf(b));
    expect(a.workerId).toBe(b.workerId);

    // Two tasks that only finish once both are running: they must be on two containers at once.
    const meet = () =>
      jsItem(
        `async function meet(dir, tag) {
          const fs = require("node:fs"), host = require("node:os").hostname();
          fs.writeFileSync(dir + "/" + tag + "-" + host, "");
          for (let i = 0; i < 600; i++) {
            if (fs.readdirSync(dir).filter((f) => f.startsWith(tag + "-")).length >= 2) return { host, together: true };
            await new Promise((r) => setTimeout(r, 50));
          }
          return { host, together: false };
        }`,
        "meet",
        ["/out", `meet-${name}`],
      );
    const outs = await harness.run([meet(), meet()]);
    const met = outs.map((o) => resultOf(o) as { host: string; together: boolean });
    expect(met.map((m) => m.together)).toEqual([true, true]);
    expect(new Set(met.map((m) => m.host)).size).toBe(2);
    expect((await harness.containers(engine.docker)).length).toBe(2);
    // idleSeconds is 2: the pool shrinks back to keepWarm (1) container.
    await until(
      async () => (await harness.containers(engine.docker)).length === 1,
      20_000,
      "the idle container to go",
    );
    const again = await harness.one(hostOf());
    expect(again.ok).toBe(true);
  });

  it("fails a task with a clear error when its image is missing, and keeps serving others", async () => {
    const o = await harness.one(
      jsItem("function f() { return 1; }", "f", [], { containerImage: "fabric-test-missing:nope" }),
    );
    expect(o.ok).toBe(false);
    expect(o.error).toMatchObject({ code: "FAILED_PRECONDITION" });
    expect(o.error?.message).toMatch(/container image fabric-test-missing:nope is not present on node/);
    expect(resultOf(await harness.one(jsItem("function f() { return 2; }", "f")))).toBe(2);
  });

  it("fails the task of a container that dies, with a reason, and replaces the container", async () => {
    const o = await harness.one(jsItem("function die() { process.exit(3); }", "die"));
    expect(o.error).toMatchObject({ code: "UNAVAILABLE", reason: "worker_lost" });
    expect(o.error?.message).toMatch(/worker container .* exited with code 3/);
    expect(resultOf(await harness.one(jsItem("function ok() { return 'ok'; }", "ok")))).toBe("ok");
  });

  describe("hardened by default", () => {
    it("a read-only root: writing to / fails, /tmp is a small scratch tmpfs", async () => {
      const o = await harness.one(
        jsItem(
          `function vandal() {
            const fs = require("node:fs");
            const tryIt = (f) => { try { f(); return "ok"; } catch (e) { return e.code; } };
            return {
              root: tryIt(() => fs.writeFileSync("/evil.txt", "x")),
              bin: tryIt(() => fs.writeFileSync("/usr/bin/node", "x")),
              worker: tryIt(() => fs.writeFileSync("/fabric/worker/endpoint/worker/main.js", "x")),
              scratch: tryIt(() => fs.writeFileSync("/tmp/small.txt", "fine")),
              flood: tryIt(() => fs.writeFileSync("/tmp/big.bin", Buffer.alloc(32 * 1024 * 1024, 1))),
            };
          }`,
          "vandal",
        ),
      );
      expect(resultOf(o)).toEqual({
        root: "EROFS",
        bin: "EROFS",
        worker: "EROFS",
        scratch: "ok",
        flood: "ENOSPC",
      });
      expect(existsSync("/evil.txt")).toBe(false);
    });

    it("no network: connecting to the host fails", async () => {
      let connections = 0;
      const server = net.createServer((s) => {
        connections++;
        s.destroy();
      });
      await new Promise<void>((r) => server.listen(0, "0.0.0.0", r));
      const port = (server.address() as net.AddressInfo).port;
      const addrs = Object.values(networkInterfaces())
        .flat()
        .filter((i) => i && i.family === "IPv4" && !i.internal)
        .map((i) => i!.address);
      const probe = `async function probe(addrs, port) {
        const net = require("node:net");
        const out = {};
        for (const a of addrs) {
          out[a] = await new Promise((resolve) => {
            const s = net.connect({ host: a, port, timeout: 3000 });
            s.on("connect", () => { s.destroy(); resolve("connected"); });
            s.on("timeout", () => { s.destroy(); resolve("timeout"); });
            s.on("error", (e) => resolve(e.code));
          });
        }
        out.interfaces = Object.keys(require("node:os").networkInterfaces());
        return out;
      }`;
      try {
        expect(addrs.length).toBeGreaterThan(0);
        const o = await harness.one(jsItem(probe, "probe", [addrs, port]));
        const r = resultOf(o) as Record<string, unknown>;
        for (const a of addrs) expect(r[a]).not.toBe("connected");
        expect(r["interfaces"]).toEqual(["lo"]);
        expect(connections).toBe(0);
        if (name === "docker") {
          // The control: a function registered with network access does reach the host.
          const gateway = networkInterfaces()["docker0"]?.find((i) => i.family === "IPv4")?.address;
          if (gateway) {
            const withNet = await harness.one(jsItem(probe, "probe", [[gateway], port], { network: true }));
            expect((resultOf(withNet) as Record<string, unknown>)[gateway]).toBe("connected");
            expect(connections).toBe(1);
          }
        }
      } finally {
        server.close();
      }
    });

    it("no host files: only the configured mounts are visible, read-only unless configured writable, and no engine socket or agent secret", async () => {
      const secretFile = path.join(dir, "host-secret.txt");
      process.env["FABRIC_BLOCK_SECRET"] = "manager-secret";
      try {
        const o = await harness.one(
          jsItem(
            `function snoop(secretFile) {
              const fs = require("node:fs");
              const tryIt = (f) => { try { return f(); } catch (e) { return e.code; } };
              return {
                secret: tryIt(() => fs.readFileSync(secretFile, "utf8")),
                shadow: tryIt(() => fs.readFileSync("/etc/shadow", "utf8")),
                dockerSock: fs.existsSync("/var/run/docker.sock") || fs.existsSync("/run/docker.sock") || fs.existsSync("/run/podman/podman.sock"),
                data: tryIt(() => fs.readFileSync("/data/input.txt", "utf8")),
                dataWrite: tryIt(() => { fs.writeFileSync("/data/input.txt", "tampered"); return "ok"; }),
                outWrite: tryIt(() => { fs.writeFileSync("/out/result.txt", "written by the function"); return "ok"; }),
                env: Object.keys(process.env).filter((k) => /SECRET|TOKEN|CREDENTIAL/.test(k)),
              };
            }`,
            "snoop",
            [secretFile],
          ),
        );
        expect(resultOf(o)).toEqual({
          secret: "ENOENT",
          shadow: "ENOENT",
          dockerSock: false,
          data: "beamline 7 calibration\n",
          dataWrite: "EROFS",
          outWrite: "ok",
          env: [],
        });
      } finally {
        delete process.env["FABRIC_BLOCK_SECRET"];
      }
      expect(readFileSync(path.join(dir, "data", "input.txt"), "utf8")).toBe("beamline 7 calibration\n");
      expect(readFileSync(path.join(dir, "out", "result.txt"), "utf8")).toBe("written by the function");
    });

    it("no privileges: every capability dropped, no-new-privileges, not root, setuid refused", async () => {
      const o = await harness.one(
        jsItem(
          `function escalate() {
            const fs = require("node:fs");
            const status = fs.readFileSync("/proc/self/status", "utf8");
            const field = (n) => (status.match(new RegExp("^" + n + ":\\\\s*(.*)$", "m")) || [])[1];
            const tryIt = (f) => { try { f(); return "ok"; } catch (e) { return e.code || e.message; } };
            return {
              capEff: field("CapEff"), capBnd: field("CapBnd"), noNewPrivs: field("NoNewPrivs"),
              setuid: tryIt(() => process.setuid(0)),
              chown: tryIt(() => fs.chownSync("/tmp", 0, 0)),
              uid: process.getuid(),
            };
          }`,
          "escalate",
        ),
      );
      expect(resultOf(o)).toEqual({
        capEff: "0000000000000000",
        capBnd: "0000000000000000",
        noNewPrivs: "1",
        setuid: "EPERM",
        chown: "EPERM",
        uid: 65534,
      });
    });

    it("a pids limit: a fork bomb hits it and fails, and the next task runs", async () => {
      const o = await harness.one(
        shellItem("i=0; while [ $i -lt 1000 ]; do sleep 30 & i=$((i+1)); done; echo reached $i", 20),
      );
      expect(o.ok).toBe(false);
      expect(o.error?.reason).toBe("shell_exit_nonzero");
      expect(o.error?.shell?.stderr).toMatch(/can't fork|Resource temporarily unavailable/);
      expect(o.error?.shell?.stdout).not.toMatch(/reached 1000/);
      const after = await harness.one(shellItem("echo still alive"));
      expect((resultOf(after) as { stdout: string }).stdout).toBe("still alive\n");
    });

    it("a memory limit: allocating past it fails the task with 'out of memory', and the container is replaced", async () => {
      const o = await harness.one(
        jsItem(
          "function hog() { const keep = []; for (;;) keep.push(Buffer.alloc(8 * 1024 * 1024, 1)); }",
          "hog",
        ),
        90_000,
      );
      expect(o.ok).toBe(false);
      expect(o.error).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "out_of_memory" });
      expect(o.error?.message).toMatch(/out of memory/);
      expect(o.error?.message).toMatch(/128 MiB/);
      expect(resultOf(await harness.one(jsItem("function ok() { return 'ok'; }", "ok")))).toBe("ok");
    });
  });

  it("removes its containers when the pool stops", async () => {
    const p = newPool(1);
    expect(resultOf(await p.one(jsItem("function one() { return 1; }", "one")))).toBe(1);
    expect((await p.containers(engine.docker)).length).toBe(1);
    await p.stop();
    expect(await p.containers(engine.docker)).toEqual([]);
    expect(config.runtime).toBe(name);
  });
});
