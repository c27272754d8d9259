import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterEach, describe, expect, it } from "vitest";

import type { Client } from "./client.js";
import { parseArgsOption, parseKwargsOption, parseSeconds, runCli } from "./cli-program.js";

function io(env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    io: { stdout: (s: string) => void out.push(s), stderr: (s: string) => void err.push(s), env },
  };
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("option parsing", () => {
  it("parses --args and --kwargs, refusing the wrong JSON shape", () => {
    expect(parseArgsOption('[1, "a"]')).toEqual([1, "a"]);
    expect(parseArgsOption(undefined)).toBeUndefined();
    expect(() => parseArgsOption('{"a": 1}')).toThrow(/JSON array/);
    expect(() => parseArgsOption("[1,")).toThrow(/not valid JSON/);
    expect(parseKwargsOption('{"file": "a"}')).toEqual({ file: "a" });
    expect(() => parseKwargsOption("[1]")).toThrow(/JSON object/);
    expect(() => parseKwargsOption("null")).toThrow(/JSON object/);
  });

  it("parses seconds", () => {
    expect(parseSeconds("--timeout", "2.5")).toBe(2.5);
    expect(() => parseSeconds("--timeout", "0")).toThrow(/positive/);
    expect(() => parseSeconds("--timeout", "soon")).toThrow(/positive/);
  });
});

describe("runCli", () => {
  it("a usage error is one line on stderr and exit code 2", async () => {
    const t = io();
    expect(await runCli(["run", "f1"], t.io)).toBe(2);
    expect(t.err.join("")).toMatch(/^error: INVALID_ARGUMENT: .*--endpoint/);
    expect(t.err.join("").trim().split("\n")).toHaveLength(1);
  });

  it("bad --args JSON is a usage error, before anything is sent", async () => {
    const t = io({ FABRIC_BROKER: "127.0.0.1:1" });
    expect(await runCli(["run", "f1", "--endpoint", "e1", "--args", "{"], t.io)).toBe(2);
    expect(t.err.join("")).toMatch(/^error: INVALID_ARGUMENT: --args is not valid JSON/);
  });

  it("an unknown command is a usage error", async () => {
    const t = io();
    expect(await runCli(["frobnicate"], t.io)).toBe(2);
    expect(t.err.join("")).toMatch(/^error: INVALID_ARGUMENT: unknown command/);
  });

  it("--help succeeds", async () => {
    const t = io();
    expect(await runCli(["--help"], t.io)).toBe(0);
    expect(t.out.join("")).toMatch(/Usage: fabric/);
  });

  it("without a configured broker says how to configure one, exit 1", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "fabric-cli-"));
    dirs.push(home);
    const t = io({ FABRIC_HOME: home });
    expect(await runCli(["function", "list"], t.io)).toBe(1);
    expect(t.err.join("")).toMatch(
      /^error: FAILED_PRECONDITION: no broker configured: run `fabric configure/,
    );
  });

  it("an unreachable broker is one UNAVAILABLE line, no stack trace", async () => {
    const t = io({ FABRIC_BROKER: "127.0.0.1:1", FABRIC_TOKEN: "x", FABRIC_HOME: "/nonexistent" });
    expect(await runCli(["endpoint", "list"], t.io)).toBe(1);
    const err = t.err.join("");
    expect(err).toMatch(/^error: UNAVAILABLE: /);
    expect(err).not.toMatch(/\n\s+at /);
  });

  it("configure writes client.json with mode 0600", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "fabric-cli-"));
    dirs.push(home);
    const t = io({ FABRIC_HOME: path.join(home, "sub") });
    expect(await runCli(["configure", "--broker", "b:50051", "--token", "tok"], t.io)).toBe(0);
    const file = path.join(home, "sub", "client.json");
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({ broker: "b:50051", token: "tok" });
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it("configure refuses TLS files with a plaintext address, and a CA file it cannot read, writing nothing", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "fabric-cli-"));
    dirs.push(home);
    const t = io({ FABRIC_HOME: home });
    const ca = path.join(home, "missing-ca.pem");
    expect(await runCli(["configure", "--broker", "b:50051", "--token", "t", "--ca-file", ca], t.io)).toBe(1);
    expect(t.err.join("")).toMatch(
      /^error: INVALID_ARGUMENT: TLS files \(caFile\) are set but .* write it grpcs:/,
    );
    expect(
      await runCli(["configure", "--broker", "grpcs://b:50051", "--token", "t", "--ca-file", ca], t.io),
    ).toBe(1);
    expect(t.err.join("")).toMatch(/FAILED_PRECONDITION: caFile: cannot read .*missing-ca\.pem/);
    expect(() => statSync(path.join(home, "client.json"))).toThrow();
  });

  it("commands with only --json print what the call returned, as text or as JSON", async () => {
    const calls: unknown[][] = [];
    const client = {
      deleteFunction: async (id: string) => void calls.push(["deleteFunction", id]),
      deleteEndpoint: async (id: string) => void calls.push(["deleteEndpoint", id]),
      cancel: async (ids: string[]) => {
        calls.push(["cancel", ids]);
        return [];
      },
      close: () => undefined,
    };
    const run = async (...argv: string[]) => {
      const t = io();
      const code = await runCli(argv, { ...t.io, connect: () => client as unknown as Client });
      return { code, out: t.out.join(""), err: t.err.join("") };
    };
    expect(await run("function", "delete", "f1")).toEqual({ code: 0, out: "deleted function f1\n", err: "" });
    const deleted = await run("endpoint", "delete", "e1", "--json");
    expect(JSON.parse(deleted.out)).toEqual({ endpointId: "e1", deleted: true });
    expect(JSON.parse((await run("task", "cancel", "t1", "t2", "--json")).out)).toEqual([]);
    expect(calls).toEqual([
      ["deleteFunction", "f1"],
      ["deleteEndpoint", "e1"],
      ["cancel", ["t1", "t2"]],
    ]);
  });
});
