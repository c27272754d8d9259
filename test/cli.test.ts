import { spawnSync } from "node:child_process";
import { existsSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { distEntry, runCli } from "../devkit/index.js";
import { useFabric } from "./support/fabric-suite.js";

/** The CLIs as users type them: `fabric-endpoint ...` and `fabric ...`, against real services. */
describe("command lines", () => {
  const stack = useFabric({ user: "carol" });
  let home: string;
  let broker: string;
  let token: string;

  beforeAll(async () => {
    home = path.join(stack.fabric.dir, "home-cli");
    broker = stack.fabric.broker.address;
    token = await stack.fabric.broker.token("carol");
  });

  afterAll(async () => {
    await runCli("endpoint/cli.js", ["stop", "lab"], home).catch(() => undefined);
  });

  const endpoint = (...args: string[]) => runCli("endpoint/cli.js", args, home);
  const fabric = (...args: string[]) => runCli("sdk/cli.js", args, home);

  it("fabric-endpoint: configure, start --detach, status, list, stop, delete", async () => {
    await endpoint("configure", "lab", "--broker", broker, "--token", token, "--workers", "1");
    const config = path.join(home, "endpoints", "lab", "config.yaml");
    expect(statSync(config).mode & 0o777).toBe(0o600);
    // An existing config is never overwritten by accident.
    await expect(endpoint("configure", "lab", "--broker", broker)).rejects.toThrow(/exists|--force/);

    const started = await endpoint("start", "lab", "--detach");
    expect(started).toMatch(/\d+/);
    const creds = path.join(home, "endpoints", "lab", "credentials.json");
    expect(statSync(creds).mode & 0o777).toBe(0o600);

    const status = JSON.parse(await endpoint("status", "lab", "--json")) as {
      local: string;
      endpointId: string;
      broker: { connection: string; workers?: number } | null;
    };
    expect(status.local).toBe("running");
    expect(status.endpointId).toMatch(/^[0-9a-f-]{36}$/);
    expect(status.broker?.connection).toBe("online");

    // Its log, for people (time, level, message; no JSON), and as the JSON lines it is.
    const readable = await endpoint("logs", "lab");
    expect(readable).toMatch(/INFO.*endpoint ready/);
    expect(readable).not.toMatch(/^\{"level"/m);
    const last = (await endpoint("logs", "lab", "--json", "-n", "2")).trim().split("\n");
    expect(last).toHaveLength(2);
    for (const l of last) expect(() => JSON.parse(l) as unknown).not.toThrow();

    const list = JSON.parse(await endpoint("list", "--json")) as Array<{ name: string; state: string }>;
    expect(list).toContainEqual(expect.objectContaining({ name: "lab", state: "running" }));

    // The user CLI sees the same endpoint and runs a shell function on it.
    await fabric("configure", "--broker", broker, "--token", token);
    expect(statSync(path.join(home, "client.json")).mode & 0o777).toBe(0o600);
    const eps = JSON.parse(await fabric("endpoint", "list", "--json")) as Array<{ id: string }>;
    expect(eps.map((e) => e.id)).toContain(status.endpointId);
    const { functionId } = JSON.parse(
      await fabric("function", "register-shell", "echo hi {who}", "--json"),
    ) as {
      functionId: string;
    };
    const out = await fabric(
      "run",
      functionId,
      "--endpoint",
      status.endpointId,
      "--kwargs",
      '{"who":"carol"}',
      "--wait",
      "--json",
    );
    expect(out).toContain("hi carol");
    const fns = JSON.parse(await fabric("function", "list", "--json")) as Array<{ id: string }>;
    expect(fns.map((f) => f.id)).toContain(functionId);

    await endpoint("stop", "lab");
    const after = JSON.parse(await endpoint("status", "lab", "--json")) as { local: string };
    expect(after.local).toBe("stopped");

    // Its own credentials may not delete it: the owner's token does.
    await expect(endpoint("delete", "lab")).rejects.toThrow(/needs its owner's user token/);
    await endpoint("delete", "lab", "--token", token);
    expect(existsSync(path.join(home, "endpoints", "lab"))).toBe(false);
    const gone = JSON.parse(await fabric("endpoint", "list", "--json")) as Array<{ id: string }>;
    expect(gone.map((e) => e.id)).not.toContain(status.endpointId);
  }, 120_000);

  it("fabric run --wait on a failing function: the task id, its code, the traceback and stderr", async () => {
    await fabric("configure", "--broker", broker, "--token", token);
    const ep = await stack.fabric.startEndpoint("carol", "cli-fail", { workers: 1 });
    const fn = await stack.client.registerFunction({
      source: "function boom() { console.error('about to fail'); throw new TypeError('boom'); }",
      entryPoint: "boom",
    });
    const err = await fabric("run", fn, "--endpoint", ep.endpointId(), "--wait").catch(
      (e: Error) => e.message,
    );
    expect(err).toMatch(/error: FUNCTION_FAILED: task [0-9a-f-]{36} failed \(function_error\): boom/);
    expect(err).toMatch(/TypeError: boom\n\s+at boom/);
    expect(err).toContain("about to fail");
    expect(err).toMatch(/fabric task status [0-9a-f-]{36}/);
    // With --json the failure is a JSON document on stdout.
    const json = await fabric("run", fn, "--endpoint", ep.endpointId(), "--wait", "--json").catch(
      (e: Error) => e.message,
    );
    const doc = JSON.parse(json.slice(json.indexOf("{"), json.lastIndexOf("}") + 1)) as {
      error: { code: string; reason: string; remote: { type: string } };
      taskId: string;
    };
    expect(doc.error).toMatchObject({
      code: "FUNCTION_FAILED",
      reason: "function_error",
      remote: { type: "TypeError" },
    });
    expect(doc.taskId).toMatch(/^[0-9a-f-]{36}$/);
    await ep.stop();
  }, 60_000);

  it("fabric-endpoint start --detach returns when the agent is not ready in time, saying where it is", async () => {
    const deadHome = path.join(stack.fabric.dir, "home-dead");
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, [distEntry("endpoint/cli.js"), ...args], {
        encoding: "utf8",
        env: { ...process.env, FABRIC_HOME: deadHome },
        timeout: 30_000,
      });
    // A broker address nothing listens on: the agent keeps trying, never ready.
    expect(cli("configure", "nowhere", "--broker", "127.0.0.1:1", "--token", token).status).toBe(0);
    const t0 = Date.now();
    const started = cli("start", "nowhere", "--detach", "--timeout", "2");
    try {
      expect(Date.now() - t0).toBeLessThan(15_000);
      expect(started.status).toBe(1);
      expect(started.stderr).toMatch(
        /error: DEADLINE_EXCEEDED: the agent \(pid \d+\) is not ready after 2 s/,
      );
      expect(started.stderr).toMatch(
        /endpoint nowhere: pid \d+ \(still running: `fabric-endpoint stop nowhere` stops it\), log \S+agent\.log/,
      );
    } finally {
      expect(cli("stop", "nowhere").status).toBe(0);
    }
  }, 60_000);

  it("all three commands: --version, and usage errors alike (one line, exit 2)", async () => {
    for (const entry of ["sdk/cli.js", "endpoint/cli.js", "cloud/cli.js"]) {
      expect(await runCli(entry, ["--version"], home)).toMatch(/^fabric(-endpoint|-broker)? \d+\.\d+\.\d+/);
      const out = spawnSync(process.execPath, [distEntry(entry), "frobnicate"], { encoding: "utf8" });
      expect(out.status, entry).toBe(2);
      expect(out.stderr.trim(), entry).toMatch(/^error: INVALID_ARGUMENT: unknown command 'frobnicate'$/);
    }
  });

  it("fabric-broker token never makes a key: a mistyped keyFile fails, naming the file", async () => {
    const dir = path.join(stack.fabric.dir, "no-key");
    const config = path.join(stack.fabric.dir, "mistyped.yaml");
    writeFileSync(config, `listen: 127.0.0.1:0\nauth:\n  keyFile: ${dir}/brokr.pem\n`);
    const out = spawnSync(process.execPath, [distEntry("cloud/cli.js"), "token", "-c", config, "-u", "x"], {
      encoding: "utf8",
    });
    expect(out.status).toBe(1);
    expect(out.stdout).toBe("");
    expect(out.stderr).toContain(
      `error: FAILED_PRECONDITION: the broker's signing key ${dir}/brokr.pem does not exist`,
    );
    expect(existsSync(dir)).toBe(false);
  });

  it("fabric: errors are one clear line and a non-zero exit", async () => {
    await fabric("configure", "--broker", broker, "--token", token);
    const err = await fabric("task", "status", "00000000-0000-4000-8000-000000000000").catch(
      (e: Error) => e.message,
    );
    expect(err).toMatch(/error: NOT_FOUND: task 00000000-0000-4000-8000-000000000000 not found/);
    expect(err).not.toMatch(/\n\s+at /);
  });
});
