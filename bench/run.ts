/**
 * `npm run bench -- [NAME...]`: runs the named benchmarks (all when none is named) against real
 * services it starts itself, prints one JSON object per line, and writes them all to
 * bench/results/latest.json.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

import { ROOT } from "../devkit/index.js";
import { codecBench } from "./codec.js";
import { coldSlurm } from "./cold-slurm.js";
import { coldContainer, warmContainer } from "./containers.js";
import { latency, memory, throughput } from "./core.js";
import { httpLatency } from "./http.js";
import { listTasks } from "./list-tasks.js";
import { dask } from "./peers.js";
import { pythonClient } from "./python-client.js";
import { pythonCold, pythonLatency, pythonThroughput } from "./python.js";
import { soak } from "./soak.js";
import { taskStats } from "./task-stats.js";

type Bench = () => Promise<Record<string, unknown>>;

const benches: Record<string, Bench> = {
  latency: () => latency(),
  throughput: () => throughput(),
  memory: () => memory(),
  dask: () => dask(),
  cold_slurm: () => coldSlurm(),
  cold_container: () => coldContainer(),
  warm_container: () => warmContainer(),
  codec: () => codecBench(),
  python_latency: () => pythonLatency(),
  python_throughput: () => pythonThroughput(),
  python_cold: () => pythonCold(),
  list_tasks: () => listTasks(),
  python_client: () => pythonClient(),
  http_latency: () => httpLatency(),
  task_stats: () => taskStats(),
  soak: () => soak(),
};

async function main(): Promise<void> {
  const names = process.argv.slice(2).filter((a) => !a.startsWith("-"));
  const unknown = names.filter((n) => !(n in benches));
  if (unknown.length > 0) {
    process.stderr.write(
      `unknown benchmark(s): ${unknown.join(", ")}; known: ${Object.keys(benches).join(", ")}\n`,
    );
    process.exit(2);
  }
  // Every benchmark but the 30-minute soak, unless named.
  const selected = names.length > 0 ? names : Object.keys(benches).filter((n) => n !== "soak");
  const results: Record<string, unknown>[] = [];
  for (const name of selected) {
    const started = new Date().toISOString();
    try {
      const figures = await benches[name]!();
      const line = { bench: name, ...figures, at: started };
      results.push(line);
      process.stdout.write(`${JSON.stringify(line)}\n`);
    } catch (err) {
      const line = { bench: name, error: err instanceof Error ? err.message : String(err), at: started };
      results.push(line);
      process.stdout.write(`${JSON.stringify(line)}\n`);
    }
  }
  const dir = path.join(ROOT, "bench", "results");
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
}

await main();
