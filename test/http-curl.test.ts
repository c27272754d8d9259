/**
 * docs/http.md's walk-through with curl cannot rot: its blocks marked `<!-- curl-walkthrough -->`
 * run in order, in one bash, exactly as written, against a real broker (HTTP API on) with one
 * online endpoint of alice's. The shell gets what a reader has: `API` (the broker's address),
 * `fabric-broker` on the PATH (this checkout's) and `broker.yaml` (the broker's config) in the
 * working directory. The last line it prints must be the task's result, 5.
 */
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LocalFabric, ROOT, distEntry, freePort } from "../devkit/index.js";
import { markedBlocksOf } from "./support/doc-blocks.js";

const DOC = path.join(ROOT, "docs", "http.md");

/** Whether `cmd` is on the PATH. */
function have(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Runs `script` in bash; resolves with its exit code and output (killed after `timeoutMs`). */
function runBash(
  script: string,
  opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", script], { cwd: opts.cwd, env: opts.env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe("docs/http.md: the walk-through with curl", () => {
  let stack: LocalFabric;
  let api: string;
  const dir = mkdtempSync(path.join(tmpdir(), "http-curl-"));

  beforeAll(async () => {
    for (const cmd of ["curl", "jq"])
      if (!have(cmd))
        throw new Error(
          `${cmd} is not installed: bash scripts/ensure-system.sh curl jq (scripts/test.sh does)`,
        );
    const port = await freePort();
    stack = await LocalFabric.start({
      name: "http-curl",
      brokerConfig: { http: { listen: `127.0.0.1:${port}` } },
    });
    api = `http://127.0.0.1:${port}`;
    await stack.startEndpoint("alice", "curl-walkthrough", { workers: 1 });
    // What the reader has: `fabric-broker` on the PATH, the broker's config as broker.yaml.
    mkdirSync(path.join(dir, "bin"));
    const cli = path.join(dir, "bin", "fabric-broker");
    writeFileSync(cli, `#!/bin/sh\nexec "${process.execPath}" "${distEntry("cloud/cli.js")}" "$@"\n`);
    chmodSync(cli, 0o755);
    symlinkSync(stack.broker.configFile, path.join(dir, "broker.yaml"));
  }, 90_000);

  afterAll(async () => {
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs the marked blocks in order in one bash and prints the result, 5", async () => {
    const blocks = markedBlocksOf(readFileSync(DOC, "utf8"), "docs/http.md", "curl-walkthrough");
    // Token and endpoint, register and submit, wait for the result: at least those three steps.
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    for (const b of blocks) expect(b.lang, `docs/http.md:${b.line}`).toBe("sh");
    const script = ["set -euo pipefail", ...blocks.map((b) => b.code)].join("\n");
    const { code, stdout, stderr } = await runBash(script, {
      cwd: dir,
      env: { ...process.env, PATH: `${path.join(dir, "bin")}:${process.env["PATH"] ?? ""}`, API: api },
      timeoutMs: 60_000,
    });
    const shown = `exit ${code}\nstdout:\n${stdout}\nstderr:\n${stderr}`;
    expect(code, shown).toBe(0);
    expect(stdout.trim().split("\n").at(-1), shown).toBe("5");
  }, 90_000);
});
