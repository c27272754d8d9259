/**
 * The CLIs outside a checkout: `npm pack`, then `npm install -g` of the tarball into a temporary
 * prefix, and the installed `fabric-broker`, `fabric-endpoint` and `fabric` run a task end to end
 * against a real nats-server, from a directory that is not the checkout.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { NatsServer, ROOT, freePort } from "../devkit/index.js";

describe("installed from the packed tarball", () => {
  let dir: string;
  let prefix: string;
  let nats: NatsServer | undefined;
  let broker: ChildProcess | undefined;
  const env = () => ({ ...process.env, FABRIC_HOME: path.join(dir, "home"), FABRIC_LOG_LEVEL: "info" });
  const bin = (name: string) => path.join(prefix, "bin", name);
  const run = (name: string, args: string[], extra: NodeJS.ProcessEnv = {}) => {
    const out = spawnSync(bin(name), args, {
      cwd: dir,
      encoding: "utf8",
      env: { ...env(), ...extra },
      timeout: 60_000,
    });
    if (out.status !== 0)
      throw new Error(`${name} ${args.join(" ")} failed (${out.status}):\n${out.stdout}\n${out.stderr}`);
    return out.stdout;
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "fabric-install-"));
    prefix = path.join(dir, "prefix");
    const packed = spawnSync("npm", ["pack", "--pack-destination", dir, "--loglevel=error"], {
      cwd: ROOT,
      encoding: "utf8",
    });
    if (packed.status !== 0) throw new Error(`npm pack failed:\n${packed.stderr}`);
    const tarball = readdirSync(dir).find((f) => f.endsWith(".tgz"));
    if (!tarball) throw new Error("npm pack made no tarball");
    const installed = spawnSync(
      "npm",
      [
        "install",
        "-g",
        "--prefix",
        prefix,
        path.join(dir, tarball),
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
      ],
      { cwd: dir, encoding: "utf8", timeout: 240_000 },
    );
    if (installed.status !== 0) throw new Error(`npm install -g failed:\n${installed.stderr}`);
  }, 300_000);

  afterAll(async () => {
    if (dir) spawnSync(bin("fabric-endpoint"), ["stop", "inst"], { env: env(), timeout: 40_000 });
    broker?.kill("SIGTERM");
    await nats?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("gives working fabric, fabric-endpoint and fabric-broker anywhere", async () => {
    for (const name of ["fabric", "fabric-endpoint", "fabric-broker"])
      expect(run(name, ["--version"]).trim()).toMatch(new RegExp(`^${name} \\d+\\.\\d+\\.\\d+`));

    nats = await NatsServer.start({ storeDir: path.join(dir, "nats") });
    const port = await freePort();
    const config = path.join(dir, "broker.yaml");
    writeFileSync(
      config,
      `listen: 127.0.0.1:${port}\nauth:\n  keyFile: ${path.join(dir, "key.pem")}\nnats:\n  servers: ["${nats.url}"]\n`,
    );
    const b = spawn(bin("fabric-broker"), ["start", "-c", config], {
      cwd: dir,
      env: env(),
      stdio: ["ignore", "ignore", "pipe"],
    });
    broker = b;
    let log = "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the installed broker is not ready:\n${log}`)), 30_000);
      b.stderr.on("data", (d: Buffer) => {
        log += d.toString();
        if (log.includes('"broker ready"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      b.on("exit", (code) => reject(new Error(`the installed broker exited (${code}):\n${log}`)));
    });
    const token = run("fabric-broker", ["token", "-c", config, "-u", "inst"]).trim();
    const address = `127.0.0.1:${port}`;
    run("fabric-endpoint", ["configure", "inst", "--broker", address, "--token", token, "--workers", "1"]);
    run("fabric-endpoint", ["start", "inst", "--detach"]);
    const status = JSON.parse(run("fabric-endpoint", ["status", "inst", "--json"])) as { endpointId: string };
    const user = { FABRIC_BROKER: address, FABRIC_TOKEN: token };
    const { functionId } = JSON.parse(
      run("fabric", ["function", "register-shell", "echo installed {x}", "--json"], user),
    ) as {
      functionId: string;
    };
    const out = run(
      "fabric",
      ["run", functionId, "--endpoint", status.endpointId, "--kwargs", '{"x":"ok"}', "--wait"],
      user,
    );
    expect(out).toContain("installed ok");
  }, 120_000);
});
