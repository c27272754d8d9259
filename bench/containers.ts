/**
 * Container benchmarks, on the real Docker engine (started if absent, stopped afterwards if so):
 * - `cold_container`: a no-op task submitted to a manager's pool with no warm container, to its
 *   result (create + start + node boot + worker connect + the task), against a bare
 *   `docker run --rm`-equivalent (create, start, wait, remove of a tiny container) measured in
 *   the same run;
 * - `warm_container`: the no-op round trip manager → warm container worker → manager, against
 *   the same round trip to a bare-process worker, measured in the same run, and their ratio.
 *
 * Alone: `node dist/bench/containers.js [cold_container] [warm_container]` prints one JSON line
 * per bench.
 */
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";

import type Docker from "dockerode";

import { createLogger } from "../common/index.js";
import { ensureDockerEngine, type ContainerEngine, ensureWorkerImages } from "../devkit/index.js";
import {
  WorkerPool,
  resolveContainerConfig,
  removeContainersByLabel,
  createWorkerLauncher,
  type ContainerConfig,
} from "../endpoint/internal.js";
import type { WorkItem, WorkOutcome } from "../proto/index.js";

const BENCH_LABEL_KEY = "org.fabric.bench";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

const round = (x: number, digits = 3) => Number(x.toFixed(digits));

let seq = 0;
function noop(): WorkItem {
  const taskId = `b${++seq}`;
  return {
    taskId,
    functionId: "f-noop",
    function: {
      kind: { $case: "js", value: { source: "function noop() { return null; }", entryPoint: "noop" } },
      containerImage: "",
    },
    argsJson: Buffer.from("[]"),
    kwargsJson: Buffer.alloc(0),
    attempt: 1,
  };
}

/** A pool whose outcomes resolve per-task promises. */
class BenchPool {
  readonly pool: WorkerPool;
  private readonly waiters = new Map<string, (o: WorkOutcome) => void>();

  constructor(size: number, config?: ContainerConfig, managerId = `bench-${process.pid}-${++seq}`) {
    const log = createLogger("fabric-bench").child({ component: "bench.containers" });
    const launcher = config
      ? createWorkerLauncher(config, { managerId, log, labels: { [BENCH_LABEL_KEY]: String(process.pid) } })
      : undefined;
    this.pool = new WorkerPool(
      { size, managerId, log, ...(launcher && config ? { launcher, container: config } : {}) },
      { onStarted: () => undefined, onOutcome: (o) => this.waiters.get(o.taskId)?.(o) },
    );
    this.pool.start();
  }

  run(item: WorkItem): Promise<WorkOutcome> {
    const done = new Promise<WorkOutcome>((resolve) => this.waiters.set(item.taskId, resolve));
    this.pool.submit([item]);
    return done.then((o) => {
      this.waiters.delete(item.taskId);
      if (!o.ok) throw new Error(`bench task failed: ${o.error?.message}`);
      return o;
    });
  }

  /** Round-trip times (ms) of `n` sequential no-ops, after `warmup` untimed ones. */
  async roundTrips(n: number, warmup = 50): Promise<number[]> {
    for (let i = 0; i < warmup; i++) await this.run(noop());
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await this.run(noop());
      out.push(performance.now() - t0);
    }
    return out;
  }
}

async function withEngine<T>(
  fn: (engine: ContainerEngine, config: ContainerConfig) => Promise<T>,
): Promise<T> {
  const engine = await ensureDockerEngine();
  try {
    const tags = await ensureWorkerImages({ docker: engine.docker, kinds: ["js"] });
    const config = resolveContainerConfig({
      runtime: "docker",
      socket: engine.socketPath,
      image: tags.js,
      pool: { keepWarm: 0, idleSeconds: 300 },
    });
    return await fn(engine, config);
  } finally {
    await removeContainersByLabel(engine.docker, `${BENCH_LABEL_KEY}=${process.pid}`).catch(() => undefined);
    await engine.stop();
  }
}

/** create + start + wait + remove of a container that exits at once: what `docker run --rm` costs. */
async function bareDockerRun(docker: Docker, image: string): Promise<number> {
  const t0 = performance.now();
  const c = await docker.createContainer({
    Image: image,
    Entrypoint: ["/usr/bin/node", "-e", "0"],
    Labels: { [BENCH_LABEL_KEY]: String(process.pid) },
    HostConfig: { NetworkMode: "none" },
  });
  await c.start();
  await c.wait();
  await c.remove({ force: true });
  return performance.now() - t0;
}

/**
 * A new container's first result: median over `runs` of submit → outcome of a no-op on a pool
 * with no warm container. Target: median ≤ 0.8 s.
 */
export async function coldContainer(runs = 7): Promise<Record<string, number>> {
  return withEngine(async (engine, config) => {
    const colds: number[] = [];
    const bare: number[] = [];
    // One untimed run warms the engine's and the kernel's caches, as any second start would.
    await bareDockerRun(engine.docker, config.image);
    for (let i = 0; i < runs; i++) {
      bare.push(await bareDockerRun(engine.docker, config.image));
      const p = new BenchPool(1, config);
      const t0 = performance.now();
      await p.run(noop());
      colds.push(performance.now() - t0);
      await p.pool.stop(2000);
    }
    return {
      runs,
      median_s: round(median(colds) / 1000),
      min_s: round(Math.min(...colds) / 1000),
      max_s: round(Math.max(...colds) / 1000),
      docker_run_rm_median_s: round(median(bare) / 1000),
      target_s: 0.8,
    };
  });
}

/**
 * A warm container's no-op round trip against a bare-process worker's, measured in the same run
 * (median of `n` sequential round trips each, after a warm-up). Target: ratio ≤ 1.2.
 */
export async function warmContainer(n = 1000): Promise<Record<string, number>> {
  return withEngine(async (_engine, config) => {
    const bare = new BenchPool(1);
    const warm = new BenchPool(1, { ...config, pool: { ...config.pool, keepWarm: 1 } });
    try {
      // Interleave the two in rounds so drift on the machine hits both alike.
      const bareTimes: number[] = [];
      const warmTimes: number[] = [];
      await bare.roundTrips(0, 100);
      await warm.roundTrips(0, 100);
      const rounds = 5;
      for (let r = 0; r < rounds; r++) {
        bareTimes.push(...(await bare.roundTrips(n / rounds, 0)));
        warmTimes.push(...(await warm.roundTrips(n / rounds, 0)));
      }
      const bareMedian = median(bareTimes);
      const warmMedian = median(warmTimes);
      return {
        n,
        median_ms: round(warmMedian),
        p99_ms: round(percentile(warmTimes, 99)),
        bare_process_median_ms: round(bareMedian),
        bare_process_p99_ms: round(percentile(bareTimes, 99)),
        ratio: round(warmMedian / bareMedian, 2),
        target_ratio: 1.2,
      };
    } finally {
      await warm.pool.stop(2000);
      await bare.pool.stop(2000);
    }
  });
}

async function main(): Promise<void> {
  const benches: Record<string, () => Promise<Record<string, number>>> = {
    cold_container: () => coldContainer(),
    warm_container: () => warmContainer(),
  };
  const names = process.argv.slice(2).filter((a) => !a.startsWith("-"));
  for (const name of names.length > 0 ? names : Object.keys(benches)) {
    const bench = benches[name];
    if (!bench) {
      process.stderr.write(`unknown benchmark ${name}; known: ${Object.keys(benches).join(", ")}\n`);
      process.exitCode = 2;
      return;
    }
    const figures = await bench();
    process.stdout.write(`${JSON.stringify({ bench: name, ...figures })}\n`);
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
