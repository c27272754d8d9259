/**
 * `list_tasks`: the first page of a user's task listing (ListTasks through the SDK, over gRPC, on a
 * real broker) with 1,000,000 tasks in their index.
 *
 * The index is filled directly, in the broker's own bucket and layout (TaskIndex.append, as
 * submissions do; entries marked finished, as the broker marks them): running a million tasks
 * first would take minutes and measure the submission path, not the listing. 1% of the tasks
 * failed, 0.1% ran a second function.
 */
import { randomUUID } from "node:crypto";

import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import pino from "pino";

import { TaskIndex, kvIndexIo } from "../cloud/internal.js";
import { Bus } from "../common/index.js";
import { LocalFabric } from "../devkit/index.js";
import { TaskState, type TaskIndexEntry } from "../proto/index.js";
import { percentile, round } from "./stats.js";

export async function listTasks(total = 1_000_000, samples = 50): Promise<Record<string, number>> {
  const fabric = await LocalFabric.start({ name: "bench-list" });
  const nc = await connect({ servers: fabric.nats.url });
  try {
    const client = await fabric.client("lister");
    const kv = await new Kvm(jetstream(nc)).open(Bus.taskIndexBucket);
    const index = new TaskIndex(kvIndexIo(kv), pino({ level: "silent" }), 7 * 86_400_000);
    const [fnA, fnB, endpointId, groupId] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const t0 = performance.now();
    const start = Date.now() - total; // one task a millisecond, finished 5 ms after
    const batch = 10_000;
    for (let from = 0; from < total; from += batch) {
      const entries: TaskIndexEntry[] = [];
      for (let i = from; i < Math.min(total, from + batch); i++) {
        entries.push({
          id: randomUUID(),
          functionId: i % 1000 === 500 ? fnB : fnA,
          endpointId,
          groupId,
          createdAtMs: start + i,
          state: i % 100 === 7 ? TaskState.TASK_STATE_FAILED : TaskState.TASK_STATE_SUCCESS,
          completedAtMs: start + i + 5,
        });
      }
      await index.append("lister", entries);
    }
    const fillS = (performance.now() - t0) / 1000;

    const measure = async (options: Parameters<typeof client.listTasks>[0]) => {
      const times: number[] = [];
      let count = 0;
      for (let i = 0; i < samples + 5; i++) {
        const s = performance.now();
        const page = await client.listTasks(options);
        const ms = performance.now() - s;
        if (i >= 5) times.push(ms); // the first few warm the connection and the JIT
        count = page.tasks.length;
      }
      return { p50: round(percentile(times, 50)), p99: round(percentile(times, 99)), count };
    };
    const first = await measure({ limit: 100 });
    const failed = await measure({ states: ["failed"], limit: 100 });
    const rare = await measure({ functionId: fnB, limit: 100 });
    const old = await measure({ createdBefore: new Date(start + total / 2), limit: 100 });
    client.close();
    return {
      tasks: total,
      fill_s: round(fillS, 1),
      first_page_p50_ms: first.p50,
      first_page_p99_ms: first.p99,
      first_page_tasks: first.count,
      failed_page_p50_ms: failed.p50,
      failed_page_tasks: failed.count,
      rare_function_p50_ms: rare.p50,
      rare_function_tasks: rare.count,
      created_before_p50_ms: old.p50,
      created_before_tasks: old.count,
    };
  } finally {
    await nc.close();
    await fabric.stop();
  }
}
