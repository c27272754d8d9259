import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { untilValue as until } from "../devkit/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { failureOf } from "./support/outcomes.js";

const standinBin = path.join(path.dirname(fileURLToPath(import.meta.url)), "support", "pbs");

/** Jobs the stand-in knows, as `{ id, state }`. */
function standinJobs(
  dir: string,
): Array<{ id: string; state: string; Exit_status?: number; substate: number }> {
  return readdirSync(dir)
    .filter((f) => /^\d+\.json$/.test(f))
    .map(
      (f) =>
        JSON.parse(readFileSync(path.join(dir, f), "utf8")) as {
          id: string;
          state: string;
          substate: number;
        },
    );
}

describe("PBS provider end to end, through the qsub/qstat/qdel stand-in", () => {
  let jobsDir: string;

  // The stand-in's jobs directory is made before the fabric starts and cleared after it stops.
  beforeAll(async () => {
    jobsDir = mkdtempSync(path.join(tmpdir(), "fabric-pbs-"));
    // The agent (a child of this process) finds the stand-in's qsub/qstat/qdel first on PATH.
    process.env["PATH"] = `${standinBin}:${process.env["PATH"]}`;
    process.env["PBS_STANDIN_DIR"] = jobsDir;
  });

  afterAll(async () => {
    // Nothing may outlive the test: delete whatever the stand-in still runs.
    const live = jobsDir ? standinJobs(jobsDir).filter((j) => j.state !== "F") : [];
    for (const j of live) spawnSync(path.join(standinBin, "qdel"), [j.id], { env: process.env });
    if (jobsDir) rmSync(jobsDir, { recursive: true, force: true });
  }, 60_000);

  const stack = useFabric({ user: "pat" });
  /** Starts pat's endpoint `name`, its blocks jobs of the stand-in (`provider` fields over the defaults here). */
  const startOnPbs = (name: string, provider: Record<string, unknown>) =>
    stack.fabric.startEndpoint("pat", name, {
      extra: {
        heartbeatIntervalSeconds: 1,
        provider: { type: "pbs", initBlocks: 0, maxBlocks: 1, statusIntervalSeconds: 0.5, ...provider },
      },
    });

  it("runs tasks in a PBS job (PBS_JOBID, PBS_NODEFILE), fails the task of a qdel'd job naming it, and scales in to 0", async () => {
    const ep = await startOnPbs("pbs", {
      workersPerNode: 2,
      cpusPerNode: 2,
      queue: "workq",
      walltime: "00:10:00",
      idleTimeoutSeconds: 3,
      workerInit: "export FABRIC_INIT_RAN=yes",
    });
    const endpointId = ep.endpointId();
    const env = await stack.client.registerShellFunction(
      "echo $PBS_JOBID $FABRIC_INIT_RAN; cat $PBS_NODEFILE",
      { walltimeSeconds: 30 },
    );
    const out = await stack.client.waitForResult<{ stdout: string }>(
      await stack.client.run(env, endpointId, []),
      { timeoutMs: 60_000 },
    );
    const [first, node] = out.stdout.trim().split("\n");
    const [jobId, init] = first!.split(" ");
    expect(jobId).toMatch(/^\d+\.standin$/);
    expect(init).toBe("yes");
    expect(node).toBeTruthy();

    // qdel the running block while a task runs on it: the task fails naming the job and "cancelled".
    const long = await stack.client.registerShellFunction("sleep 60", { walltimeSeconds: 120 });
    const taskId = await stack.client.run(long, endpointId, []);
    await until("the task running", async () =>
      (await stack.client.getTask(taskId)).state === "running" ? true : undefined,
    );
    const r = spawnSync(path.join(standinBin, "qdel"), [jobId!], { env: process.env });
    expect(r.status).toBe(0);
    const err = await failureOf(stack.client.waitForResult(taskId, { timeoutMs: 30_000 }));
    expect(err.message).toContain(`pbs job ${jobId}`);
    expect(err.message).toMatch(/cancelled.*deleted/);

    // Idle: the scaler brings it to 0 blocks; every job the stand-in ran has finished (F).
    const again = await stack.client.waitForResult<{ stdout: string }>(
      await stack.client.run(env, endpointId, []),
      { timeoutMs: 60_000 },
    );
    expect(again.stdout.split(" ")[0]).not.toBe(jobId);
    await until(
      "no PBS job left running",
      () => (standinJobs(jobsDir).every((j) => j.state === "F") ? true : undefined),
      30_000,
    );
    const report = await until("status with no live block", async () => {
      const last = (await stack.client.getEndpoint(endpointId)).status.last;
      return last && last.blocks.length > 0 && last.blocks.every((b) => b.state === "ended")
        ? last
        : undefined;
    });
    expect(report.provider).toBe("pbs");
    expect(report.blocks.some((b) => /idle/.test(b.reason))).toBe(true);
    await ep.stop();
  }, 150_000);

  it("a block killed at its walltime reads as timeout and its task fails with reason walltime", async () => {
    const ep = await startOnPbs("pbs-walltime", {
      workersPerNode: 1,
      walltime: "00:00:06",
      drainBeforeWalltimeSeconds: 0,
    });
    const long = await stack.client.registerShellFunction("sleep 60", { walltimeSeconds: 120 });
    const taskId = await stack.client.run(long, ep.endpointId(), []);
    const err = await failureOf(stack.client.waitForResult(taskId, { timeoutMs: 60_000 }));
    expect(err.reason).toBe("walltime");
    expect(err.message).toMatch(/pbs job \d+\.standin .*timeout.*Exit_status -29/);
    await ep.stop();
  }, 90_000);
});
