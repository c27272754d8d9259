import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { SlurmCluster, slurmProviderConfig, untilValue } from "../devkit/index.js";
import type { EndpointReport } from "../sdk/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { failureOf } from "./support/outcomes.js";

/** Polls `probe` until it returns a value (not undefined); a probe that throws is polled again. */
const until = <T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs?: number) =>
  untilValue(what, probe, timeoutMs, true);

const slurmProvider = (extra: Record<string, unknown> = {}) =>
  slurmProviderConfig({ idleTimeoutSeconds: 3, commandTimeoutSeconds: 10, ...extra });

describe("Slurm provider against a real one-node Slurm", () => {
  let slurm: SlurmCluster;

  // The cluster starts before the fabric and stops after it.
  beforeAll(async () => {
    slurm = await SlurmCluster.start({ cpus: 2 });
    // Endpoint agents inherit this: their sbatch/squeue talk to the test cluster.
    process.env["SLURM_CONF"] = slurm.confFile;
  }, 120_000);

  afterAll(async () => {
    await slurm?.stop();
  }, 60_000);

  const stack = useFabric({ user: "sam" });
  /** Starts sam's endpoint `name`, its blocks jobs of the test cluster (`provider` over slurmProvider). */
  const startOnSlurm = (name: string, provider: Record<string, unknown> = {}) =>
    stack.fabric.startEndpoint("sam", name, {
      extra: { heartbeatIntervalSeconds: 1, provider: slurmProvider(provider) },
    });

  const report = async (endpointId: string): Promise<EndpointReport | undefined> =>
    (await stack.client.getEndpoint(endpointId)).status.last;

  it("cold-starts from 0 blocks, scales out to maxBlocks under load, never above, and scales in to 0 when idle", async () => {
    const ep = await startOnSlurm("elastic", {
      maxBlocks: 2,
      workerInit: "export FABRIC_TEST_INIT=module-loaded",
    });
    const endpointId = ep.endpointId();
    expect(slurm.jobs("PENDING,RUNNING")).toEqual([]);

    // Cold start: no block until a task arrives; then one block runs it. worker-init ran first.
    const echo = await stack.client.registerShellFunction("echo $FABRIC_TEST_INIT; echo $SLURM_JOB_ID", {
      walltimeSeconds: 30,
    });
    const first = await stack.client.run(echo, endpointId, []);
    const out = await stack.client.waitForResult<{ exitCode: number; stdout: string }>(first, {
      timeoutMs: 60_000,
    });
    const [init, jobId] = out.stdout.trim().split("\n");
    expect(init).toBe("module-loaded");
    expect(jobId).toMatch(/^\d+$/);
    const r1 = await until("a connected block in status", async () => {
      const r = await report(endpointId);
      return r?.blocks.some((b) => b.jobId === jobId && b.state === "connected") ? r : undefined;
    });
    expect(r1.provider).toBe("slurm");
    expect(r1.workers).toBe(1);

    // Load: 6 tasks of 2 s each want 6 workers; maxBlocks 2 caps it at two jobs running at once.
    const sleeper = await stack.client.registerShellFunction("sleep 2; echo $SLURM_JOB_ID", {
      walltimeSeconds: 30,
    });
    const batch = await stack.client.submitBatch(
      Array.from({ length: 6 }, () => ({ functionId: sleeper, endpointId })),
    );
    let maxRunning = 0;
    const done = Promise.all(
      batch.taskIds.map((id) => stack.client.waitForResult<{ stdout: string }>(id, { timeoutMs: 90_000 })),
    );
    let finished = false;
    void done.finally(() => (finished = true));
    while (!finished) {
      maxRunning = Math.max(maxRunning, slurm.jobs("RUNNING").length);
      expect(slurm.jobs("PENDING,RUNNING").length).toBeLessThanOrEqual(2);
      await new Promise((r) => setTimeout(r, 200));
    }
    const results = await done;
    expect(maxRunning).toBe(2);
    expect(new Set(results.map((r) => r.stdout.trim())).size).toBe(2); // the tasks ran in two jobs

    // Idle for idleTimeoutSeconds: every block is cancelled; status says so.
    await until(
      "scale-in to 0 blocks",
      () => (slurm.jobs("PENDING,RUNNING").length === 0 ? true : undefined),
      30_000,
    );
    const idle = await until("status with no live block", async () => {
      const r = await report(endpointId);
      return r && r.blocks.every((b) => b.state === "ended") && r.workers === 0 ? r : undefined;
    });
    expect(idle.blocks.some((b) => /idle/.test(b.reason))).toBe(true);
    await ep.stop();
  }, 150_000);

  it("a block cancelled with scancel fails its running task with the job and its state; with retries it runs again", async () => {
    const ep = await startOnSlurm("scancel", { retriesOnBlockLoss: 0 });
    const endpointId = ep.endpointId();
    const long = await stack.client.registerShellFunction("sleep 60", { walltimeSeconds: 120 });
    const taskId = await stack.client.run(long, endpointId, []);
    await until(
      "the task running",
      async () => ((await stack.client.getTask(taskId)).state === "running" ? true : undefined),
      60_000,
    );
    const [jobId] = slurm.jobs("RUNNING");
    expect(jobId).toBeDefined();
    expect(slurm.command(["scancel", jobId!]).code).toBe(0);
    const failure = await failureOf(stack.client.waitForResult(taskId, { timeoutMs: 30_000 }));
    expect(failure.reason).toBe("worker_lost");
    expect(failure.message).toContain(`slurm job ${jobId}`);
    expect(failure.message).toMatch(/cancelled/i);
    await ep.stop();

    const retrying = await startOnSlurm("scancel-retry", { retriesOnBlockLoss: 1 });
    const quickAfterFirst = await stack.client.registerShellFunction(
      // The first attempt waits to be cancelled; a rerun (in a new job) answers at once.
      "if [ -e {mark} ]; then echo second; else touch {mark}; sleep 60; fi",
      { walltimeSeconds: 120 },
    );
    const mark = `${stack.fabric.dir}/mark-${Date.now()}`;
    const t2 = await stack.client.run(quickAfterFirst, retrying.endpointId(), [], { mark });
    await until(
      "the task running",
      async () => ((await stack.client.getTask(t2)).state === "running" ? true : undefined),
      60_000,
    );
    const [job2] = slurm.jobs("RUNNING");
    expect(slurm.command(["scancel", job2!]).code).toBe(0);
    const out = await stack.client.waitForResult<{ stdout: string }>(t2, { timeoutMs: 60_000 });
    expect(out.stdout.trim()).toBe("second");
    expect((await stack.client.getTask(t2)).attempts).toBe(2);
    await retrying.stop();
  }, 150_000);

  it("a bad partition shows as a clear error in status and fails the tasks after the bound, without a hang", async () => {
    const ep = await startOnSlurm("bad-partition", {
      partition: "no-such-partition",
      failTasksWithoutBlocksAfterSeconds: 4,
    });
    const endpointId = ep.endpointId();
    const fn = await stack.client.registerShellFunction("echo never", { walltimeSeconds: 30 });
    const taskId = await stack.client.run(fn, endpointId, []);
    const r = await until("the scheduler's error in status", async () => {
      const rep = await report(endpointId);
      return rep && /invalid partition/i.test(rep.lastError) ? rep : undefined;
    });
    expect(r.lastError).toMatch(/sbatch refused the block: .*invalid partition/i);
    const err = await failureOf(stack.client.waitForResult(taskId, { timeoutMs: 30_000 }));
    expect(err.reason).toBe("no_capacity");
    expect(err.message).toMatch(/invalid partition/i);
    expect(slurm.jobs()).not.toContain(undefined);
    await ep.stop();
  }, 90_000);
});
