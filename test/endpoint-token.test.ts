import { readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";

import { runCli, type EndpointProcess } from "../devkit/index.js";
import { useFabric } from "./support/fabric-suite.js";

/**
 * Looks for `needle` in the worker's environment and in every file under `home`: what a function
 * on a bare endpoint (the owner's OS user) can read.
 */
const snoopSource = `
function snoop(home, needle) {
  const fs = require("node:fs");
  const path = require("node:path");
  const envHits = Object.entries(process.env)
    .filter(([, v]) => typeof v === "string" && v.includes(needle))
    .map(([k]) => k);
  const fileHits = [];
  const read = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        read.push(path.relative(home, p));
        if (fs.readFileSync(p, "latin1").includes(needle)) fileHits.push(path.relative(home, p));
      }
    }
  };
  walk(home);
  // The initial environment of every process above this worker (its manager, the agent), which
  // this OS user may read: what unsetting a variable in a running process does not erase.
  for (let pid = process.ppid, up = 0; pid > 1 && up < 8; up++) {
    let environ;
    try {
      environ = fs.readFileSync("/proc/" + pid + "/environ", "latin1");
    } catch {
      break;
    }
    if (environ.includes(needle)) envHits.push("/proc/" + pid + "/environ");
    const stat = fs.readFileSync("/proc/" + pid + "/stat", "latin1");
    pid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  }
  return { envHits, fileHits, read };
}`;

interface Snoop {
  envHits: string[];
  fileHits: string[];
  read: string[];
}

/** The JWT's signature: unique to the token, and no use on its own if a test log shows it. */
const signatureOf = (token: string) => token.split(".").at(-1)!;

describe("the owner's user token after an endpoint registers", () => {
  const stack = useFabric();
  let home: string;
  let snoop: string;

  beforeAll(async () => {
    home = path.join(stack.fabric.dir, "home-alice");
    snoop = await stack.client.registerFunction({ source: snoopSource, entryPoint: "snoop" });
  });

  afterAll(async () => {
    await runCli("endpoint/cli.js", ["stop", "by-env"], home).catch(() => undefined);
  });

  const dirOf = (name: string) => path.join(home, "endpoints", name);
  const configOf = (name: string) => readFileSync(path.join(dirOf(name), "config.yaml"), "utf8");
  const snoopOn = async (endpointId: string, token: string) =>
    stack.client.waitForResult<Snoop>(await stack.client.run(snoop, endpointId, [home, signatureOf(token)]), {
      timeoutMs: 30_000,
    });

  let ep: EndpointProcess;

  it("`configure --token`: once registered, config.yaml holds no token and a function finds it nowhere", async () => {
    ep = await stack.fabric.startEndpoint("alice", "by-flag", { workers: 1 });
    const token = ep.opts.token;
    const text = configOf("by-flag");
    expect(text).not.toContain(token);
    const doc = parse(text) as Record<string, unknown>;
    expect(doc).not.toHaveProperty("token");
    // The rest of the file is kept, still private.
    expect(doc["broker"]).toBe(stack.fabric.broker.address);
    expect(statSync(path.join(dirOf("by-flag"), "config.yaml")).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(dirOf("by-flag"), "credentials.json")).mode & 0o777).toBe(0o600);

    const seen = await snoopOn(ep.endpointId(), token);
    expect(seen.read).toContain(path.join("endpoints", "by-flag", "config.yaml"));
    expect(seen.envHits).toEqual([]);
    expect(seen.fileHits).toEqual([]);
  });

  it("a token left in the config of a registered endpoint (older versions kept it) is removed at start", async () => {
    await ep.stop();
    const id = ep.endpointId();
    const token = await stack.fabric.broker.token("alice");
    const file = path.join(dirOf("by-flag"), "config.yaml");
    writeFileSync(file, `# beamline 7\n${readFileSync(file, "utf8")}token: ${token}\n`);
    await ep.launch();
    expect(ep.endpointId()).toBe(id);
    expect(configOf("by-flag")).not.toContain(token);
    expect(configOf("by-flag")).toMatch(/^# beamline 7\n/); // the rest of the file survives the rewrite
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect((await snoopOn(id, token)).fileHits).toEqual([]);
  });

  it("re-registration: with credentials.json gone, `configure --force --token` registers again", async () => {
    await ep.stop();
    const oldId = ep.endpointId();
    rmSync(path.join(dirOf("by-flag"), "credentials.json"));
    const token = await stack.fabric.broker.token("alice");
    await runCli(
      "endpoint/cli.js",
      [
        "configure",
        "by-flag",
        "--broker",
        stack.fabric.broker.address,
        "--token",
        token,
        "--workers",
        "1",
        "--force",
      ],
      home,
    );
    await ep.launch();
    expect(ep.endpointId()).not.toBe(oldId);
    expect(configOf("by-flag")).not.toContain(token);
    const seen = await snoopOn(ep.endpointId(), token);
    expect(seen.envHits).toEqual([]);
    expect(seen.fileHits).toEqual([]);
  });

  it("FABRIC_TOKEN with `start --detach`: registers, and neither the worker nor the processes above it hold it", async () => {
    await ep.stop();
    const token = await stack.fabric.broker.token("alice");
    const cli = (...args: string[]) => runCli("endpoint/cli.js", args, home);
    await cli("configure", "by-env", "--broker", stack.fabric.broker.address, "--workers", "1");
    // The detached agent inherits this process's environment, as from the owner's shell.
    process.env["FABRIC_TOKEN"] = token;
    try {
      await cli("start", "by-env", "--detach");
    } finally {
      delete process.env["FABRIC_TOKEN"];
    }
    const status = JSON.parse(await cli("status", "by-env", "--json")) as { endpointId: string };
    expect(status.endpointId).toMatch(/^[0-9a-f-]{36}$/);
    const seen = await snoopOn(status.endpointId, token);
    expect(seen.envHits).toEqual([]);
    expect(seen.fileHits).toEqual([]);
    await cli("stop", "by-env");
  });
});
