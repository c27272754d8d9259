import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { describe, expect, it } from "vitest";

import { loadConfig, resolveConfig, scalingOf } from "./config.js";

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("expected an error");
}

describe("endpoint config", () => {
  it("applies defaults and freezes the result", () => {
    const c = resolveConfig({ broker: "localhost:7000" }, {});
    expect(c.heartbeatIntervalSeconds).toBe(5);
    expect(c.provider).toMatchObject({ type: "local", maxBlocks: 1, workersPerNode: 2 });
    expect(scalingOf(c.provider)).toMatchObject({
      initBlocks: 1,
      minBlocks: 1,
      maxBlocks: 1,
      workersPerBlock: 2,
    });
    expect(c.managerListen).toEqual({ host: "127.0.0.1", port: 0 });
    expect(c.shell.defaultWalltimeSeconds).toBe(3600);
    expect(c.limits).toEqual({ inlinePayloadBytes: 262144, maxResultBytes: 10485760 });
    expect(c.prefetch).toBeUndefined(); // sized from task run times (agent/queue-sizing.ts)
    expect(c.workerQueueDepth).toBeUndefined();
    expect(c.stopGraceSeconds).toBe(10);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.provider)).toBe(true);
  });

  it("takes TLS files for the broker and NATS, NATS trusting the broker's CA unless told otherwise", () => {
    const c = resolveConfig({ broker: "grpcs://broker:443", brokerTls: { caFile: "/etc/site-ca.pem" } }, {});
    expect(c.brokerTls).toEqual({ caFile: "/etc/site-ca.pem" });
    expect(c.natsTls).toEqual({ caFile: "/etc/site-ca.pem" });
    expect(resolveConfig({ broker: "h:1" }, {}).natsTls).toEqual({});
    const own = resolveConfig({ broker: "h:1", natsTls: { caFile: "/nats-ca.pem" } }, {});
    expect(own.natsTls).toEqual({ caFile: "/nats-ca.pem" });
    expect(messageOf(() => resolveConfig({ broker: "h:1", brokerTls: { caFile: "ca.pem" } }, {}))).toMatch(
      /brokerTls\.caFile: expected the absolute path of a PEM file/,
    );
    expect(messageOf(() => resolveConfig({ broker: "h:1", natsTls: { certFile: "/c.pem" } }, {}))).toMatch(
      /natsTls\.keyFile: certFile and keyFile go together/,
    );
  });

  it("lets FABRIC_TOKEN override the file's token", () => {
    expect(resolveConfig({ broker: "h:1", token: "file" }, { FABRIC_TOKEN: "env" }).token).toBe("env");
    expect(resolveConfig({ broker: "h:1", token: "file" }, {}).token).toBe("file");
  });

  it("names the path of a bad field and what was expected", () => {
    const msg = messageOf(() =>
      resolveConfig({ broker: "h:1", provider: { type: "local", workersPerNode: "two" } }, {}),
    );
    expect(msg).toContain('provider.workersPerNode: expected a positive integer, got "two"');
    expect(msg).not.toMatch(/at .*\.ts:\d+/);
  });

  it("reports a missing broker, unknown fields, unknown provider types and inconsistent blocks", () => {
    expect(messageOf(() => resolveConfig({}, {}))).toContain("broker: required");
    expect(messageOf(() => resolveConfig({ broker: "h:1", limits: { foo: 1 } }, {}))).toContain(
      "limits: unknown field foo",
    );
    expect(messageOf(() => resolveConfig({ broker: "h:1", provider: { type: "sge" } }, {}))).toContain(
      "provider.type",
    );
    expect(
      messageOf(() => resolveConfig({ broker: "h:1", provider: { type: "local", initBlocks: 3 } }, {})),
    ).toContain("provider.initBlocks: expected initBlocks to be at most maxBlocks");
    expect(messageOf(() => resolveConfig({ broker: "h:1", managerListen: { port: 70000 } }, {}))).toContain(
      "managerListen.port",
    );
  });

  it("loads YAML files and names the file in errors", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "fabric-config-"));
    const good = path.join(dir, "good.yaml");
    writeFileSync(
      good,
      "broker: localhost:7000\nprovider:\n  type: local\n  workersPerNode: 4\nprefetch: 0\n",
    );
    const c = loadConfig(good, {});
    expect(c.provider.workersPerNode).toBe(4);
    expect(c.prefetch).toBe(0);
    const bad = path.join(dir, "bad.yaml");
    writeFileSync(bad, "broker: [unclosed\n");
    expect(messageOf(() => loadConfig(bad, {}))).toContain(`${bad} is not valid YAML`);
    expect(messageOf(() => loadConfig(path.join(dir, "none.yaml"), {}))).toContain("no config file");
    rmSync(dir, { recursive: true, force: true });
  });
});

describe("batch-scheduler provider configs", () => {
  it("resolves a Slurm provider with scale-to-zero defaults", () => {
    const c = resolveConfig(
      {
        broker: "h:1",
        provider: { type: "slurm", partition: "debug", maxBlocks: 4, nodesPerBlock: 2, workersPerNode: 8 },
      },
      {},
    );
    expect(c.provider).toMatchObject({
      type: "slurm",
      partition: "debug",
      walltime: "01:00:00",
      exclusive: false,
    });
    expect(scalingOf(c.provider)).toMatchObject({
      initBlocks: 0,
      minBlocks: 0,
      maxBlocks: 4,
      workersPerBlock: 16,
    });
  });

  it("names the bad field of a batch provider", () => {
    const msg = (doc: unknown) => {
      try {
        resolveConfig(doc, {});
        return "";
      } catch (err) {
        return (err as Error).message;
      }
    };
    expect(msg({ broker: "h:1", provider: { type: "slurm", walltime: "forever" } })).toContain(
      'provider.walltime: expected a walltime "HH:MM:SS"',
    );
    expect(
      msg({ broker: "h:1", provider: { type: "pbs", nodesPerBlock: 2, launcher: { type: "single" } } }),
    ).toContain("provider.launcher: expected a multi-node launcher");
    expect(msg({ broker: "h:1", provider: { type: "pbs", launcher: { type: "srun" } } })).toContain(
      "provider.launcher",
    );
    expect(msg({ broker: "h:1", provider: { type: "slurm", parallelism: 2 } })).toContain(
      "provider.parallelism: expected a number from 0 to 1",
    );
    expect(msg({ broker: "h:1", provider: { type: "slurm", maxBlocks: 1, minBlocks: 2 } })).toContain(
      "provider.minBlocks",
    );
  });
});

describe("config errors say what was given", () => {
  const msg = (doc: unknown) => {
    try {
      resolveConfig(doc, {});
    } catch (err) {
      return (err as Error).message;
    }
    return "";
  };
  it("names a mistyped provider type, a wrong value and a missing one", () => {
    expect(msg({ broker: "h:1", provider: { type: "slrum" } })).toContain(
      'provider.type: expected a provider type ("local", "slurm" or "pbs"), got "slrum"',
    );
    expect(msg({ broker: "h:1", provider: { type: "slurm", maxBlocks: "x" } })).toContain(
      'provider.maxBlocks: expected a positive integer, got "x"',
    );
    expect(msg({ broker: "h:1", provider: {} })).toContain("provider.type: required");
    expect(msg({ broker: "h:1", provider: { type: "local" }, python: [] })).toContain(
      "python: expected a mapping, got a list",
    );
  });
});
