import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { describe, expect, it } from "vitest";

import { fillCommandTemplate, quoteShellArg, runShellCommand } from "./shell.js";

describe("shell templates", () => {
  it("quotes values so they can never inject commands", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "fabric-shell-"));
    const canary = path.join(dir, "pwned");
    const evil = [
      `'; touch ${canary}; '`,
      `$(touch ${canary})`,
      `\`touch ${canary}\``,
      `a" ; touch ${canary} ; "`,
      "x\ntouch " + canary,
    ];
    for (const value of evil) {
      const cmd = fillCommandTemplate("printf '%s' {x}", { x: value });
      const run = await runShellCommand(cmd, { walltimeS: 10 });
      expect(run.exitCode).toBe(0);
      expect(run.stdout).toBe(value);
    }
    expect(existsSync(canary)).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it("quotes single quotes as '\\''", () => {
    expect(quoteShellArg("it's")).toBe(`'it'\\''s'`);
    expect(fillCommandTemplate("echo {a} {b} {{literal}}", { a: 1, b: { k: "v" } })).toBe(
      `echo '1' '{"k":"v"}' {literal}`,
    );
  });

  it("names a placeholder without a value", () => {
    expect(() => fillCommandTemplate("cp {src} {dst}", { src: "a" })).toThrow(/\{dst\}/);
    try {
      fillCommandTemplate("cp {src}", {});
    } catch (err) {
      expect(err).toMatchObject({ code: "INVALID_ARGUMENT", reason: "invalid_task" });
    }
  });
});

/** Whether a process exists and is not a zombie waiting for its reaper. */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

describe("runShellCommand", () => {
  it("captures exit code, stdout and stderr", async () => {
    const run = await runShellCommand("echo out; echo err >&2; exit 3", { walltimeS: 10 });
    expect(run).toMatchObject({ exitCode: 3, stdout: "out\n", stderr: "err\n", timedOut: false });
  });

  it("kills the whole process group at the walltime", async () => {
    const started = Date.now();
    // A background child prints its pid; it must die with the command, not outlive it.
    const run = await runShellCommand("sleep 30 & echo $!; sleep 30", { walltimeS: 1 });
    expect(Date.now() - started).toBeLessThan(5000);
    expect(run.timedOut).toBe(true);
    expect(run.signal).toBe("SIGKILL");
    const childPid = Number(run.stdout.trim());
    expect(childPid).toBeGreaterThan(0);
    expect(isRunning(childPid)).toBe(false);
  });

  it("caps output and says so", async () => {
    const run = await runShellCommand("head -c 5000 /dev/zero | tr '\\0' a", {
      walltimeS: 10,
      outputCapBytes: 1000,
    });
    expect(run.stdout.startsWith("a".repeat(1000))).toBe(true);
    expect(run.stdout).toContain("4000 more bytes truncated");
  });
});
