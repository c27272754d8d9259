/**
 * Cold start through a real Slurm: an idle endpoint with 0 blocks gets one no-op task; the clock
 * runs from submission to its result (sbatch of a block, the job starting, the manager and its
 * workers booting and connecting back, the task running, the result coming back). Median of 5,
 * beside the bare `sbatch --wrap=true` submit-to-COMPLETED round trip measured on the same
 * one-node cluster in the same run.
 *
 * `node dist/bench/cold-slurm.js` prints one JSON line `{"bench":"cold_slurm",...}`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { NatsServer } from "../devkit/nats-server.js";
import { BrokerProcess, EndpointProcess } from "../devkit/processes.js";
import { SlurmCluster } from "../devkit/slurm.js";
import { Client } from "../sdk/index.js";

const RUNS = 5;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const round = (x: number) => Number(x.toFixed(3));

async function waitUntil(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`cold_slurm: timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** One bare `sbatch --wrap=true`, submit to COMPLETED as squeue reports it (polled every 20 ms). */
async function bareSbatch(slurm: SlurmCluster): Promise<number> {
  const t0 = performance.now();
  const r = slurm.command(["sbatch", "--parsable", "--wrap=true", "-o", "/dev/null"]);
  const id = r.stdout.trim();
  if (r.code !== 0 || !id) throw new Error(`sbatch failed: ${r.stderr}`);
  await waitUntil(`job ${id} COMPLETED`, () => slurm.jobState(id) === "COMPLETED", 60_000);
  return (performance.now() - t0) / 1000;
}

/** Runs the benchmark: `{ median_s, min_s, max_s, runs, sbatch_median_s, ... }` (seconds). */
export async function coldSlurm(): Promise<Record<string, number>> {
  const dir = mkdtempSync(path.join(tmpdir(), "fabric-bench-cold-"));
  const slurm = await SlurmCluster.start({ cpus: 2 });
  const savedConf = process.env["SLURM_CONF"];
  process.env["SLURM_CONF"] = slurm.confFile;
  let nats: NatsServer | undefined;
  let broker: BrokerProcess | undefined;
  let endpoint: EndpointProcess | undefined;
  let client: Client | undefined;
  try {
    nats = await NatsServer.start({ storeDir: path.join(dir, "nats") });
    broker = await BrokerProcess.start({ natsUrl: nats.url, dir: path.join(dir, "broker") });
    const token = await broker.token("bench");
    endpoint = await EndpointProcess.start({
      home: path.join(dir, "home"),
      name: "cold-slurm",
      broker: broker.address,
      token,
      extra: {
        heartbeatIntervalSeconds: 1,
        provider: {
          type: "slurm",
          initBlocks: 0,
          minBlocks: 0,
          maxBlocks: 1,
          workersPerNode: 1,
          coresPerNode: 1,
          walltime: "00:10:00",
          idleTimeoutSeconds: 1,
          statusIntervalSeconds: 0.5,
        },
      },
    });
    client = new Client({ address: broker.address, token });
    const endpointId = endpoint.endpointId();
    const noop = await client.registerFunction(function noop() {
      return null;
    });
    const idle = async () => {
      if (slurm.jobs("PENDING,RUNNING,COMPLETING,CONFIGURING").length > 0) return false;
      const last = (await client!.getEndpoint(endpointId)).status.last;
      return !!last && last.workers === 0 && last.blocks.every((b) => b.state === "ended");
    };
    const cold: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      await waitUntil(
        "an idle cluster",
        async () => slurm.jobs("PENDING,RUNNING,COMPLETING").length === 0,
        60_000,
      );
      bare.push(await bareSbatch(slurm));
      // The endpoint is back to 0 blocks and Slurm has nothing running: a real cold start.
      await waitUntil("the endpoint at 0 blocks", idle, 60_000);
      await sleep(500);
      const t0 = performance.now();
      const taskId = await client.run(noop, endpointId, []);
      await client.waitForResult(taskId, { timeoutMs: 60_000 });
      cold.push((performance.now() - t0) / 1000);
    }
    return {
      median_s: round(median(cold)),
      min_s: round(Math.min(...cold)),
      max_s: round(Math.max(...cold)),
      runs: RUNS,
      sbatch_median_s: round(median(bare)),
      sbatch_min_s: round(Math.min(...bare)),
      sbatch_max_s: round(Math.max(...bare)),
    };
  } finally {
    client?.close();
    await endpoint?.stop().catch(() => undefined);
    await broker?.stop().catch(() => undefined);
    await nats?.stop().catch(() => undefined);
    await slurm.stop();
    if (savedConf === undefined) delete process.env["SLURM_CONF"];
    else process.env["SLURM_CONF"] = savedConf;
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = await coldSlurm();
  console.log(JSON.stringify({ bench: "cold_slurm", ...result }));
}
