import { pino } from "pino";
import { describe, expect, it } from "vitest";

import { EndpointStatus } from "../../proto/index.js";
import { StatusReporter } from "./status.js";
import type { StatusReporterOptions } from "./status.js";

function reporter(over: Partial<StatusReporterOptions> = {}) {
  const published: EndpointStatus[] = [];
  const state = { stopping: false, queueReads: 0 };
  const r = new StatusReporter({
    endpointId: "e1",
    hostname: "login1",
    agentVersion: "0.1.0",
    provider: "slurm",
    heartbeatIntervalS: 5,
    startedAtMs: 100,
    log: pino({ level: "silent" }),
    canPublish: () => true,
    publish: async (bytes) => void published.push(EndpointStatus.decode(bytes)),
    readQueueLength: async () => void state.queueReads++,
    stopping: () => state.stopping,
    counts: () => ({ held: 3, queued: 7, running: 2 }),
    managers: () => [
      { workers: 4, assigned: 3 },
      // More tasks handed over than workers (the rest wait at the manager): none idle, not -6.
      { workers: 2, assigned: 8 },
      { workers: 2, assigned: 0 },
    ],
    blocks: () => [{ blockId: "b1", jobId: "j1", state: "connected", sinceMs: 5, reason: "" }],
    lastError: () => "sbatch: invalid partition",
    python: () => undefined,
    ...over,
  });
  return { r, published, state };
}

describe("StatusReporter", () => {
  it("counts tasks, managers, workers and blocks", () => {
    expect(reporter().r.build("online", 42)).toEqual({
      endpointId: "e1",
      atMs: 42,
      state: "online",
      hostname: "login1",
      agentVersion: "0.1.0",
      outstandingTasks: 10,
      runningTasks: 2,
      managers: 3,
      workers: 8,
      idleWorkers: 3,
      blocks: [{ blockId: "b1", jobId: "j1", state: "connected", sinceMs: 5, reason: "" }],
      provider: "slurm",
      lastError: "sbatch: invalid partition",
      heartbeatIntervalS: 5,
      startedAtMs: 100,
    });
  });

  it("reads the queue before an online status, and sends none once the agent stops", async () => {
    const { r, published, state } = reporter();
    await r.publish("online");
    expect(state.queueReads).toBe(1);
    expect(published.map((s) => s.state)).toEqual(["online"]);
    state.stopping = true;
    await r.publish("online");
    await r.publish("offline");
    expect(published.map((s) => s.state)).toEqual(["online", "offline"]);
    expect(state.queueReads).toBe(2);
  });

  it("publishes nothing while the bus is closed, and survives a failed publish", async () => {
    const closed = reporter({ canPublish: () => false });
    await closed.r.publish("online");
    expect(closed.published).toEqual([]);
    const failing = reporter({ publish: () => Promise.reject(new Error("no responders")) });
    await expect(failing.r.publish("offline")).resolves.toBeUndefined();
  });
});
