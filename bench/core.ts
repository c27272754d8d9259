import { execFileSync } from "node:child_process";

import { LocalFabric, type EndpointProcess } from "../devkit/index.js";
import type { Client } from "../sdk/index.js";
import { percentile, round } from "./stats.js";

/** A local fabric with one endpoint of `workers` workers, and a client of its owner. */
export interface BenchFabric {
  readonly fabric: LocalFabric;
  readonly endpoint: EndpointProcess;
  readonly endpointId: string;
  readonly client: Client;
}

/** Starts a {@link BenchFabric}; its `fabric.stop()` ends it all, and a failed start leaves nothing running. */
export async function startBenchFabric(workers = 2, extra?: Record<string, unknown>): Promise<BenchFabric> {
  const fabric = await LocalFabric.start({ name: "bench" });
  try {
    const endpoint = await fabric.startEndpoint("bench", "bench", { workers, ...(extra ? { extra } : {}) });
    return { fabric, endpoint, endpointId: endpoint.endpointId(), client: await fabric.client("bench") };
  } catch (err) {
    await fabric.stop();
    throw err;
  }
}

/** 1,000 sequential no-op tasks through the whole path, after a warm-up. */
export async function latency(n = 1_000): Promise<Record<string, number>> {
  const stack = await startBenchFabric(2);
  try {
    const { client, endpointId } = stack;
    const fid = await client.registerFunction(function noop() {
      return null;
    });
    const once = async () => {
      const t0 = performance.now();
      const tid = await client.run(fid, endpointId, []);
      await client.waitForResult(tid, { timeoutMs: 30_000 });
      return performance.now() - t0;
    };
    // Warm up to a steady state: every process's JIT optimizes the per-task path only after a few
    // hundred tasks (after 100, p50 was still ~1.7x the steady figure).
    for (let i = 0; i < LATENCY_WARMUP; i++) await once();
    const samples: number[] = [];
    for (let i = 0; i < n; i++) samples.push(await once());
    return { p50_ms: round(percentile(samples, 50)), p99_ms: round(percentile(samples, 99)), tasks: n };
  } finally {
    await stack.fabric.stop();
  }
}

/** Untimed tasks before the latency samples; the Dask peer gets as many. */
export const LATENCY_WARMUP = 1_000;

/** 100,000 no-op tasks submitted in batches; first submit to last result received by the SDK. */
export async function throughput(n = 100_000, batch = 10_000): Promise<Record<string, number>> {
  const stack = await startBenchFabric(2);
  try {
    const { client, endpointId } = stack;
    const fid = await client.registerFunction(function noop() {
      return null;
    });
    // Warm-up: the path, the workers' function cache.
    const warm = await client.submitBatch(
      Array.from({ length: 200 }, () => ({ functionId: fid, endpointId, args: [] })),
    );
    for await (const _ of client.results({ groupId: warm.groupId }, { timeoutMs: 60_000 })) void _;

    const t0 = performance.now();
    const ok = await runInBatches(client, { functionId: fid, endpointId }, n, batch, 600_000);
    const seconds = (performance.now() - t0) / 1000;
    return { tasks_per_s: round(n / seconds, 0), seconds: round(seconds), tasks: n, succeeded: ok };
  } finally {
    await stack.fabric.stop();
  }
}

/**
 * Submits `n` argument-less tasks of `task` in batches of `batch`, and streams each batch's
 * results (at most `maxInFlight` batches' results awaited at once, more batches waiting to be
 * submitted); resolves to how many tasks succeeded once every result is in.
 */
export async function runInBatches(
  client: Client,
  task: { readonly functionId: string; readonly endpointId: string },
  n: number,
  batch: number,
  timeoutMs: number,
  maxInFlight = Infinity,
): Promise<number> {
  const inFlight: Promise<number>[] = [];
  let ok = 0;
  for (let done = 0; done < n; done += batch) {
    const size = Math.min(batch, n - done);
    const { groupId } = await client.submitBatch(Array.from({ length: size }, () => ({ ...task, args: [] })));
    inFlight.push(
      (async () => {
        let succeeded = 0;
        for await (const o of client.results({ groupId }, { timeoutMs })) if (o.ok) succeeded++;
        return succeeded;
      })(),
    );
    if (inFlight.length >= maxInFlight) ok += await inFlight.shift()!;
  }
  for (const succeeded of await Promise.all(inFlight)) ok += succeeded;
  return ok;
}

/** Resident set size of a process, in MB (Linux /proc). */
export function rssMb(pid: number): number {
  const status = execFileSync("cat", [`/proc/${pid}/status`], { encoding: "utf8" });
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? round(Number(m[1]) / 1024, 1) : NaN;
}

/**
 * Broker RSS after `brokerTasks` no-op tasks have passed through it, and agent RSS with
 * `queuedTasks` tasks queued to it (they wait: its workers are busy with long tasks).
 */
export async function memory(
  brokerTasks = Number(process.env["FABRIC_BENCH_MEMORY_TASKS"] ?? 1_000_000),
  queuedTasks = 100_000,
): Promise<Record<string, number>> {
  const stack = await startBenchFabric(2);
  try {
    const { client, endpointId } = stack;
    const noop = await client.registerFunction(function noop() {
      return null;
    });
    const batch = 10_000;
    // A bounded number of batches outstanding, as a real user's pipeline would keep.
    await runInBatches(client, { functionId: noop, endpointId }, brokerTasks, batch, 3_600_000, 5);
    const brokerPid = stack.fabric.broker.process!.proc.pid!;
    const broker_rss_mb = rssMb(brokerPid);

    const sleeper = await client.registerFunction({
      source: "async function hold() { await new Promise((r) => setTimeout(r, 600000)); }",
      entryPoint: "hold",
    });
    for (let done = 0; done < queuedTasks; done += batch) {
      await client.submitBatch(
        Array.from({ length: Math.min(batch, queuedTasks - done) }, () => ({
          functionId: sleeper,
          endpointId,
          args: [],
        })),
      );
    }
    // Let the agent see the queue (heartbeats, pulls) before measuring.
    await new Promise((r) => setTimeout(r, 10_000));
    const agent_rss_mb = rssMb(stack.endpoint.process!.proc.pid!);
    return { broker_rss_mb, broker_tasks: brokerTasks, agent_rss_mb, agent_queued_tasks: queuedTasks };
  } finally {
    await stack.fabric.stop();
  }
}
