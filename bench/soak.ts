/**
 * `npm run bench -- soak`: mixed work for a long while (30 minutes; `FABRIC_SOAK_MINUTES` sets
 * it) with the agent SIGKILLed and restarted every 5 minutes (`FABRIC_SOAK_RESTART_MINUTES`):
 * each second a batch of 40 short tasks, 3 failing ones, a long one that is cancelled, every
 * other second a long one that runs (2-5 s), and every fifth one with a 2 MB argument. Reports
 * tasks done, lost (must be 0), duplicate results (0), runs of tasks begun after their outcome
 * was recorded (0), outcomes other than expected, and the broker's, agent's and NATS's RSS at
 * the start and the end.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import type { Client, TaskOutcome } from "../sdk/index.js";
import { rssMb, startBenchFabric } from "./core.js";
import { round } from "./stats.js";

/** Logs "key startMs" for each run, sleeps, then returns its key (or throws, when asked to). */
const workSource = `
async function work(key, logFile, sleepMs, fail, blob) {
  require("node:fs").appendFileSync(logFile, key + " " + Date.now() + "\\n");
  if (sleepMs > 0) await new Promise((r) => setTimeout(r, sleepMs));
  if (fail) throw new Error("failing on purpose: " + key);
  return blob ? key + ":" + blob.length : key;
}`;

type Expected = "ok" | "failed" | "cancelled";

interface Batch {
  readonly expected: Map<string, Expected>;
  readonly keys: Map<string, string>;
  /** Outcomes streamed, per task (more than one is a duplicate). */
  readonly seen: Map<string, number>;
  readonly unexpected: string[];
  done: Promise<void>;
}

export async function soak(
  minutes = Number(process.env["FABRIC_SOAK_MINUTES"] ?? 30),
  restartEveryMinutes = Number(process.env["FABRIC_SOAK_RESTART_MINUTES"] ?? 5),
): Promise<Record<string, unknown>> {
  const stack = await startBenchFabric(4, { heartbeatIntervalSeconds: 2 });
  const dir = mkdtempSync(path.join(tmpdir(), "fabric-soak-"));
  const logFile = path.join(dir, "runs.log");
  try {
    const { client, endpointId, endpoint, fabric } = stack;
    const fid = await client.registerFunction({ source: workSource, entryPoint: "work" });
    const rss = () => ({
      broker: rssMb(fabric.broker.process!.proc.pid!),
      agent: rssMb(endpoint.process!.proc.pid!),
      nats: fabric.nats.pid === undefined ? NaN : rssMb(fabric.nats.pid),
    });
    const batches: Batch[] = [];
    let n = 0;
    const submit = async (): Promise<void> => {
      const specs: { key: string; expected: Expected; args: unknown[] }[] = [];
      for (let i = 0; i < 40; i++)
        specs.push({ key: `s${n++}`, expected: "ok", args: [Math.floor(Math.random() * 5), false, ""] });
      for (let i = 0; i < 3; i++) specs.push({ key: `f${n++}`, expected: "failed", args: [1, true, ""] });
      // About half the workers' time goes to long tasks: the endpoint keeps up, and a restart
      // always finds some running.
      if (batches.length % 2 === 0)
        specs.push({
          key: `l${n++}`,
          expected: "ok",
          args: [2_000 + Math.floor(Math.random() * 3_000), false, ""],
        });
      specs.push({ key: `c${n++}`, expected: "cancelled", args: [60_000, false, ""] });
      if (batches.length % 5 === 0)
        specs.push({ key: `b${n++}`, expected: "ok", args: [0, false, "x".repeat(2 * 1024 * 1024)] });
      const { groupId, taskIds } = await client.submitBatch(
        specs.map((s) => ({ functionId: fid, endpointId, args: [s.key, logFile, ...s.args] })),
      );
      const b: Batch = {
        expected: new Map(),
        keys: new Map(),
        seen: new Map(),
        unexpected: [],
        done: Promise.resolve(),
      };
      taskIds.forEach((id, i) => {
        b.expected.set(id, specs[i]!.expected);
        b.keys.set(id, specs[i]!.key);
      });
      const toCancel = taskIds.filter((id) => b.expected.get(id) === "cancelled");
      setTimeout(() => void client.cancel(toCancel).catch(() => undefined), 500);
      b.done = (async () => {
        for await (const o of client.results({ groupId }, { timeoutMs: 600_000 })) note(b, o);
      })().catch(
        (err: unknown) => void b.unexpected.push(`results of ${groupId}: ${(err as Error).message}`),
      );
      batches.push(b);
    };

    // Warm-up: a few batches, then the starting figures.
    for (let i = 0; i < 3; i++) await submit();
    await Promise.all(batches.map((b) => b.done));
    const rssStart = rss();

    const t0 = Date.now();
    const end = t0 + minutes * 60_000;
    let nextRestart = t0 + restartEveryMinutes * 60_000;
    let restarts = 0;
    const samples: ({ minute: number } & ReturnType<typeof rss>)[] = [];
    let refused = 0;
    while (Date.now() < end) {
      const tick = Date.now();
      if (tick >= nextRestart) {
        // The figures of each period, just before the agent that lived through it is killed.
        samples.push({ minute: round((tick - t0) / 60_000, 1), ...rss() });
        await endpoint.kill();
        await endpoint.launch();
        restarts++;
        nextRestart += restartEveryMinutes * 60_000;
      }
      await submit().catch(() => void refused++);
      await new Promise((r) => setTimeout(r, Math.max(0, 1_000 - (Date.now() - tick))));
    }
    const drainT0 = Date.now();
    await Promise.all(batches.map((b) => b.done));
    const drainSeconds = round((Date.now() - drainT0) / 1000);
    const rssEnd = rss();

    // Tally: every accepted task seen once, with the outcome its kind expects.
    let accepted = 0;
    let done = 0;
    let duplicates = 0;
    const unexpected: string[] = [];
    for (const b of batches) {
      accepted += b.expected.size;
      for (const [id, count] of b.seen) {
        done++;
        duplicates += count - 1;
        void id;
      }
      unexpected.push(...b.unexpected);
    }
    const completedAt = await completionTimes(client, batches);
    const reranFinished = rerunsAfterCompletion(logFile, batches, completedAt);
    return {
      minutes,
      agent_restarts: restarts,
      tasks_accepted: accepted,
      tasks_done: done,
      tasks_lost: accepted - done,
      duplicate_results: duplicates,
      reran_finished: reranFinished,
      unexpected_outcomes: unexpected.length,
      first_unexpected: unexpected[0] ?? "",
      submissions_refused: refused,
      drain_s: drainSeconds,
      broker_rss_mb_start: rssStart.broker,
      broker_rss_mb_end: rssEnd.broker,
      agent_rss_mb_start: rssStart.agent,
      agent_rss_mb_end: rssEnd.agent,
      nats_rss_mb_start: rssStart.nats,
      nats_rss_mb_end: rssEnd.nats,
      /** RSS (MB) of broker, agent and NATS at the end of each period between restarts. */
      rss_mb_by_period: samples.map((x) => `${x.minute} min: ${x.broker}/${x.agent}/${x.nats}`).join("; "),
    };
  } finally {
    await stack.fabric.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function note(b: Batch, o: TaskOutcome<unknown>): void {
  const count = (b.seen.get(o.taskId) ?? 0) + 1;
  b.seen.set(o.taskId, count);
  if (count > 1) return;
  const expected = b.expected.get(o.taskId);
  const got: Expected = o.ok ? "ok" : o.error.code === "CANCELLED" ? "cancelled" : "failed";
  if (got !== expected)
    b.unexpected.push(
      `${b.keys.get(o.taskId)}: expected ${expected}, got ${got}${o.ok ? "" : ` (${o.error.code}: ${o.error.message})`}`,
    );
}

/** When each task's outcome was recorded, read back in pages. */
async function completionTimes(client: Client, batches: readonly Batch[]): Promise<Map<string, number>> {
  const ids = batches.flatMap((b) => [...b.expected.keys()]);
  const out = new Map<string, number>();
  for (let i = 0; i < ids.length; i += 5_000)
    for (const t of await client.getTasks(ids.slice(i, i + 5_000)))
      out.set(t.id, t.completedAt?.getTime() ?? 0);
  return out;
}

/** Runs (from the work log) that began after their task's outcome was recorded. */
function rerunsAfterCompletion(
  logFile: string,
  batches: readonly Batch[],
  completedAt: ReadonlyMap<string, number>,
): number {
  const doneByKey = new Map<string, number>();
  for (const b of batches) for (const [id, key] of b.keys) doneByKey.set(key, completedAt.get(id) ?? 0);
  let n = 0;
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    const [key = "", at = "0"] = line.split(" ");
    const done = doneByKey.get(key) ?? 0;
    if (done > 0 && Number(at) > done) n++;
  }
  return n;
}
