/**
 * Cold start through a real Slurm: an idle endpoint with 0 blocks gets one no-op task; the clock
 * runs from submission to its result (sbatch of a block, the job starting, the manager and its
 * workers booting and connecting back, the task running, the result coming back). Median of 5,
 * beside the bare `sbatch --wrap=true` submit-to-COMPLETED round trip measured on the same
 * one-node cluster in the same run.
 *
 * Slurm's own share is reported apart, from slurmctld's log (to the millisecond): how long each
 * job waited between being accepted and being started (`slurm_queue_*`, `sbatch_queue_*`), and
 * the cold start without the wait of its block (`ours_*`). Slurm starts batch jobs in scheduling
 * passes at least `batch_sched_delay` (3 s by default) apart, so that wait depends on when in
 * that cycle a job arrives: runs start at offsets spread evenly over it (see below). (An earlier
 * version ran a bare sbatch 0.5 s before every cold start, which left every cold start's block
 * waiting ~2.4 s for the next pass whatever the endpoint did.)
 *
 * `node dist/bench/cold-slurm.js` prints one JSON line `{"bench":"cold_slurm",...}`.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";

import { LocalFabric, SlurmCluster, slurmProviderConfig, until } from "../devkit/index.js";

const RUNS = 5;
/** Slurm's default `batch_sched_delay`: batch jobs start in passes at least this far apart. */
const SCHED_CYCLE_MS = 3_000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const round = (x: number) => Number(x.toFixed(3));

/** How often the benchmark polls Slurm and the endpoint: its clock is only as fine as this. */
const POLL_MS = 20;

/** One bare `sbatch --wrap=true`, submit to COMPLETED as squeue reports it (polled every 20 ms). */
async function bareSbatch(slurm: SlurmCluster): Promise<{ seconds: number; jobId: string }> {
  const t0 = performance.now();
  const r = slurm.command(["sbatch", "--parsable", "--wrap=true", "-o", "/dev/null"]);
  const id = r.stdout.trim();
  if (r.code !== 0 || !id) throw new Error(`sbatch failed: ${r.stderr}`);
  await until(() => slurm.jobState(id) === "COMPLETED", 60_000, `job ${id} COMPLETED`, POLL_MS);
  return { seconds: (performance.now() - t0) / 1000, jobId: id };
}

/** Seconds slurmctld held a job between accepting and starting it, from its log. */
async function queueSeconds(slurm: SlurmCluster, jobId: string): Promise<number> {
  let t: { submittedAtMs?: number; startedAtMs?: number } = {};
  await until(
    () => {
      t = slurm.jobTimes(jobId);
      return t.submittedAtMs !== undefined && t.startedAtMs !== undefined;
    },
    5_000,
    `slurmctld's log lines of job ${jobId}`,
    POLL_MS,
  );
  return (t.startedAtMs! - t.submittedAtMs!) / 1000;
}

/** Runs the benchmark: `{ median_s, min_s, max_s, runs, sbatch_median_s, ... }` (seconds). */
export async function coldSlurm(): Promise<Record<string, number>> {
  const slurm = await SlurmCluster.start({ cpus: 2 });
  const savedConf = process.env["SLURM_CONF"];
  process.env["SLURM_CONF"] = slurm.confFile;
  let fabric: LocalFabric | undefined;
  try {
    fabric = await LocalFabric.start({ name: "bench-cold" });
    const endpoint = await fabric.startEndpoint("bench", "cold-slurm", {
      extra: {
        heartbeatIntervalSeconds: 1,
        provider: slurmProviderConfig({ idleTimeoutSeconds: 1 }),
      },
    });
    const client = await fabric.client("bench");
    const endpointId = endpoint.endpointId();
    const noop = await client.registerFunction(function noop() {
      return null;
    });
    const idle = async () => {
      if (slurm.jobs("PENDING,RUNNING,COMPLETING,CONFIGURING").length > 0) return false;
      const last = (await client.getEndpoint(endpointId)).status.last;
      return !!last && last.workers === 0 && last.blocks.every((b) => b.state === "ended");
    };
    const cold: number[] = [];
    const bare: number[] = [];
    const coldQueue: number[] = [];
    const bareQueue: number[] = [];
    // Slurm starts batch jobs in passes a few seconds apart, so a job's wait depends on when it
    // arrives in that cycle. A real idle endpoint's first task comes at any moment: each run
    // (cold start or bare sbatch alike) starts at a different offset after the cluster went idle,
    // spread evenly over the cycle, and neither kind of run follows the other at a fixed delay.
    const offsetMs = (i: number) => 500 + Math.round((i * SCHED_CYCLE_MS) / RUNS);
    for (let i = 0; i < RUNS; i++) {
      // The endpoint is back to 0 blocks and Slurm has nothing running: a real cold start.
      await until(idle, 60_000, "the endpoint at 0 blocks", POLL_MS);
      await sleep(offsetMs(i));
      const before = new Set(slurm.jobs());
      const t0 = performance.now();
      const taskId = await client.run(noop, endpointId, []);
      await client.waitForResult(taskId, { timeoutMs: 60_000 });
      cold.push((performance.now() - t0) / 1000);
      const blocks = slurm.jobs().filter((id) => !before.has(id));
      if (blocks.length !== 1) throw new Error(`cold_slurm: expected one block job, saw ${blocks.length}`);
      coldQueue.push(await queueSeconds(slurm, blocks[0]!));
    }
    await until(idle, 60_000, "the endpoint at 0 blocks", POLL_MS);
    for (let i = 0; i < RUNS; i++) {
      await until(
        async () => slurm.jobs("PENDING,RUNNING,COMPLETING").length === 0,
        60_000,
        "an idle cluster",
        POLL_MS,
      );
      await sleep(offsetMs(i));
      const b = await bareSbatch(slurm);
      bare.push(b.seconds);
      bareQueue.push(await queueSeconds(slurm, b.jobId));
    }
    const ours = cold.map((c, i) => c - coldQueue[i]!);
    return {
      median_s: round(median(cold)),
      min_s: round(Math.min(...cold)),
      max_s: round(Math.max(...cold)),
      runs: RUNS,
      sbatch_median_s: round(median(bare)),
      sbatch_min_s: round(Math.min(...bare)),
      sbatch_max_s: round(Math.max(...bare)),
      slurm_queue_median_s: round(median(coldQueue)),
      ours_median_s: round(median(ours)),
      ours_min_s: round(Math.min(...ours)),
      ours_max_s: round(Math.max(...ours)),
      sbatch_queue_median_s: round(median(bareQueue)),
    };
  } finally {
    await fabric?.stop();
    await slurm.stop();
    if (savedConf === undefined) delete process.env["SLURM_CONF"];
    else process.env["SLURM_CONF"] = savedConf;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = await coldSlurm();
  console.log(JSON.stringify({ bench: "cold_slurm", ...result }));
}
