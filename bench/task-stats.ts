/**
 * `task_stats`: what the dashboard's counts cost: GET /v1/tasks/stats (counts by state and
 * function, and the finished-per-second series of the last 10 minutes) on a real broker, with
 * 100,000 tasks of the user created in the last hour, and the first page of GET /v1/tasks beside
 * it. The index is filled directly, in the broker's bucket and layout, as list_tasks does; 1% of
 * the tasks failed, 0.1% ran a second function.
 */
import { randomUUID } from "node:crypto";

import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import pino from "pino";

import { TaskIndex, kvIndexIo } from "../cloud/internal.js";
import { Bus } from "../common/index.js";
import { LocalFabric, freePort } from "../devkit/index.js";
import { TaskState, type TaskIndexEntry } from "../proto/index.js";
import { percentile, round } from "./stats.js";

export async function taskStats(total = 100_000, samples = 20): Promise<Record<string, number>> {
  const port = await freePort();
  const fabric = await LocalFabric.start({
    name: "bench-stats",
    brokerConfig: { http: { listen: `127.0.0.1:${port}` } },
  });
  const nc = await connect({ servers: fabric.nats.url });
  try {
    const token = await fabric.broker.token("counter");
    const kv = await new Kvm(jetstream(nc)).open(Bus.taskIndexBucket);
    const index = new TaskIndex(kvIndexIo(kv), pino({ level: "silent" }), 7 * 86_400_000);
    const [fnA, fnB, endpointId, groupId] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    // Spread over the last 50 minutes, each finished 5 ms after it was created.
    const start = Date.now() - 50 * 60_000;
    const step = (50 * 60_000) / total;
    const batch = 10_000;
    for (let from = 0; from < total; from += batch) {
      const entries: TaskIndexEntry[] = [];
      for (let i = from; i < Math.min(total, from + batch); i++) {
        const createdAtMs = Math.floor(start + i * step);
        entries.push({
          id: randomUUID(),
          functionId: i % 1000 === 500 ? fnB : fnA,
          endpointId,
          groupId,
          createdAtMs,
          state: i % 100 === 7 ? TaskState.TASK_STATE_FAILED : TaskState.TASK_STATE_SUCCESS,
          completedAtMs: createdAtMs + 5,
        });
      }
      await index.append("counter", entries);
    }

    const measure = async (path: () => string) => {
      const times: number[] = [];
      let body: { total?: number; tasks?: unknown[]; complete?: boolean } = {};
      for (let i = 0; i < samples + 3; i++) {
        const s = performance.now();
        const res = await fetch(`http://127.0.0.1:${port}${path()}`, {
          headers: { authorization: `Bearer ${token}` },
        });
        body = (await res.json()) as typeof body;
        if (!res.ok) throw new Error(`${path()}: ${res.status} ${JSON.stringify(body)}`);
        const ms = performance.now() - s;
        if (i >= 3) times.push(ms); // the first few warm the connection and the JIT
      }
      return { p50: round(percentile(times, 50)), p99: round(percentile(times, 99)), body };
    };
    const hour = await measure(
      () =>
        `/v1/tasks/stats?createdAfterMs=${Date.now() - 3_600_000}&finishedAfterMs=${Date.now() - 600_000}`,
    );
    const quarter = await measure(
      () => `/v1/tasks/stats?createdAfterMs=${Date.now() - 900_000}&finishedAfterMs=${Date.now() - 600_000}`,
    );
    const rare = await measure(
      () => `/v1/tasks/stats?createdAfterMs=${Date.now() - 3_600_000}&functionId=${fnB}`,
    );
    const page = await measure(() => `/v1/tasks?limit=50`);
    return {
      tasks: total,
      stats_hour_p50_ms: hour.p50,
      stats_hour_p99_ms: hour.p99,
      stats_hour_counted: hour.body.total ?? 0,
      stats_hour_complete: hour.body.complete ? 1 : 0,
      stats_15min_p50_ms: quarter.p50,
      stats_15min_counted: quarter.body.total ?? 0,
      stats_rare_function_p50_ms: rare.p50,
      stats_rare_function_counted: rare.body.total ?? 0,
      first_page_p50_ms: page.p50,
    };
  } finally {
    await nc.close();
    await fabric.stop();
  }
}
