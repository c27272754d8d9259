import { readFileSync } from "node:fs";
import path from "node:path";

import { DiscardPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { beforeAll, describe, expect, it } from "vitest";

import { TokenAuthority } from "../cloud/index.js";
import { Bus } from "../common/index.js";
import { TaskMessage } from "../proto/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { lines, until } from "./support/fault.js";
import { failureOf } from "./support/outcomes.js";
import { RawClients } from "./support/raw-clients.js";

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Whether a process runs (a zombie, killed and not yet reaped, does not). */
const running = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
};

/** Appends "<tag> <pid>" to a file, then sleeps; a second attempt (marker present) returns at once. */
const recordingSource = `
async function work(logFile, tag, sleepMs, marker) {
  const fs = require("node:fs");
  fs.appendFileSync(logFile, tag + " " + process.pid + "\\n");
  if (marker && fs.existsSync(marker)) return "second attempt";
  if (marker) fs.writeFileSync(marker, "1");
  await new Promise((r) => setTimeout(r, sleepMs));
  return "done " + tag;
}`;

describe("task lifecycle: retries, timeouts, cancellation, duplicates, long tasks, idempotency", () => {
  const stack = useFabric({
    // A short ack wait, to show a long task is not redelivered while it runs.
    brokerConfig: { taskAckWaitSeconds: 2 },
    endpoint: { name: "life", workers: 2 },
  });
  let fid: string;

  beforeAll(async () => {
    fid = await stack.client.registerFunction({ source: recordingSource, entryPoint: "work" });
  });

  /** Waits (naming `what`) for the task tagged `tag` to start, then kills its worker with SIGKILL. */
  async function killWorkerOf(log: string, tag: string, what: string): Promise<void> {
    const started = () => lines(log).find((l) => l.startsWith(`${tag} `));
    await until(() => started() !== undefined, 30_000, what);
    process.kill(Number(started()!.split(" ")[1]), "SIGKILL");
  }

  it("a worker killed mid-task: no retries → fails 'worker lost'; with a retry → succeeds on attempt 2, both in the history", async () => {
    const log = path.join(stack.fabric.dir, "kill.log");
    const once = await stack.client.run(fid, stack.endpointId, [log, "once", 30_000, ""]);
    await killWorkerOf(log, "once", "the task to start");
    const err = await failureOf(stack.client.waitForResult(once, { timeoutMs: 30_000 }));
    expect(err.reason).toBe("worker_lost");

    const retrying = await stack.client.registerFunction(
      { source: recordingSource, entryPoint: "work" },
      { maxRetries: 1 },
    );
    const twice = await stack.client.run(retrying, stack.endpointId, [
      log,
      "twice",
      30_000,
      path.join(stack.fabric.dir, "marker"),
    ]);
    await killWorkerOf(log, "twice", "the first attempt");
    expect(await stack.client.waitForResult(twice, { timeoutMs: 30_000 })).toBe("second attempt");
    const info = await stack.client.getTask(twice);
    expect(info.attempts).toBe(2);
    expect(info.history.some((h) => /attempt 1 of 2 failed \(worker_lost/.test(h.detail))).toBe(true);
    expect(info.history.filter((h) => h.state === "success")).toHaveLength(1);
  }, 90_000);

  it("a task over its timeout is stopped and fails with reason 'timeout' (function limit and task limit)", async () => {
    const log = path.join(stack.fabric.dir, "timeout.log");
    const limited = await stack.client.registerFunction(
      { source: recordingSource, entryPoint: "work" },
      { timeoutSeconds: 1 },
    );
    const t1 = await stack.client.run(limited, stack.endpointId, [log, "fn-limit", 20_000, ""]);
    const [t2] = (
      await stack.client.submitBatch([
        {
          functionId: fid,
          endpointId: stack.endpointId,
          args: [log, "task-limit", 20_000, ""],
          timeoutSeconds: 1,
        },
      ])
    ).taskIds;
    for (const t of [t1, t2!]) {
      const err = await failureOf(stack.client.waitForResult(t, { timeoutMs: 30_000 }));
      expect(err.code).toBe("DEADLINE_EXCEEDED");
      expect(err.reason).toBe("timeout");
    }
    // The stopped workers' processes are gone.
    for (const l of lines(log)) expect(alive(Number(l.split(" ")[1]))).toBe(false);
  }, 60_000);

  it("cancels a running task (its worker stopped) and a queued one; the endpoint keeps working", async () => {
    const log = path.join(stack.fabric.dir, "cancel.log");
    const { taskIds } = await stack.client.submitBatch(
      Array.from({ length: 6 }, (_, i) => ({
        functionId: fid,
        endpointId: stack.endpointId,
        args: [log, `c${i}`, 30_000, ""],
      })),
    );
    await until(() => lines(log).length >= 2, 30_000, "two tasks running");
    const running = lines(log).map((l) => l.split(" "));
    await stack.client.cancel(taskIds);
    for (const id of taskIds) expect((await stack.client.getTask(id)).state).toBe("cancelled");
    await until(
      () => running.every(([, pid]) => !alive(Number(pid))),
      15_000,
      "the running tasks' workers to stop",
    );
    const after = await stack.client.run(fid, stack.endpointId, [log, "after", 1, ""]);
    expect(await stack.client.waitForResult(after, { timeoutMs: 30_000 })).toBe("done after");
    // Cancelled tasks that were still queued never ran.
    expect(lines(log).filter((l) => /^c\d /.test(l)).length).toBeLessThan(6);
  }, 60_000);

  it("a shell command's children, in its group or escaped from it, die with it on cancel and on timeout", async () => {
    // One child of the shell in its process group, one that left it (setsid), then a long sleep.
    const command = "sleep 300 & echo $! > {pids}; setsid sleep 300 & echo $! >> {pids}; sleep 300";
    const untimed = await stack.client.registerShellFunction(command, { walltimeSeconds: 600 });
    const timed = await stack.client.registerShellFunction(command, {
      walltimeSeconds: 600,
      timeoutSeconds: 2,
    });
    const pidsOf = (file: string) =>
      lines(file)
        .map(Number)
        .filter((p) => p > 0);
    const cancelPids = path.join(stack.fabric.dir, "cancel-children.pids");
    const timeoutPids = path.join(stack.fabric.dir, "timeout-children.pids");
    const cancelled = await stack.client.run(untimed, stack.endpointId, [], { pids: cancelPids });
    const timedOut = await stack.client.run(timed, stack.endpointId, [], { pids: timeoutPids });
    await until(() => pidsOf(cancelPids).length === 2, 30_000, "the cancelled command's children");
    await until(() => pidsOf(timeoutPids).length === 2, 30_000, "the timed command's children");
    const children = [...pidsOf(cancelPids), ...pidsOf(timeoutPids)];
    expect(children.every(running)).toBe(true);
    await stack.client.cancel([cancelled]);
    const err = await failureOf(stack.client.waitForResult(timedOut, { timeoutMs: 30_000 }));
    expect(err.reason).toBe("timeout");
    await until(() => !children.some(running), 15_000, "no child of a stopped command left running");
  }, 60_000);

  it("a task message delivered twice is executed once", async () => {
    const log = path.join(stack.fabric.dir, "dup.log");
    const raw = await RawClients.of(stack.fabric, "alice");
    const nc = await connect({ servers: stack.fabric.nats.url });
    try {
      const taskId = await stack.client.run(fid, stack.endpointId, [log, "dup", 1_500, ""]);
      // Forge the duplicate the way a redelivery looks: the same TaskMessage, another stream entry.
      const fn = (await raw.getFunction({ functionId: fid })).function!;
      const message = TaskMessage.encode({
        taskId,
        functionId: fid,
        function: fn.spec,
        args: {
          json: new TextEncoder().encode(JSON.stringify([log, "dup", 1_500, ""])),
          objectRef: "",
          size: 0,
        },
        kwargs: { json: new Uint8Array(), objectRef: "", size: 0 },
        owner: "alice",
        submittedAtMs: Date.now(),
      }).finish();
      // Signed as the broker signs it (the agent drops unsigned task messages before reading them).
      const subject = Bus.taskSubject(stack.endpointId);
      const signed = {
        headers: (
          await TokenAuthority.fromKeyFile(stack.fabric.broker.keyFile, "fabric-broker", "fabric-api")
        ).messageKeys
          .endpoint(stack.endpointId)
          .headers(subject, message),
      };
      await jetstream(nc).publish(subject, message, signed);
      expect(await stack.client.waitForResult(taskId, { timeoutMs: 30_000 })).toBe("done dup");
      // Once more after it finished.
      await jetstream(nc).publish(subject, message, signed);
      await until(
        async () => (await stack.client.getEndpoint(stack.endpointId)).status.queuedTasks === 0,
        10_000,
        "the queue to drain",
      );
      await new Promise((r) => setTimeout(r, 500));
      expect(lines(log).filter((l) => l.startsWith("dup "))).toHaveLength(1);
    } finally {
      await nc.close();
    }
  }, 60_000);

  it("a task running longer than the queue's ack deadline is not delivered again", async () => {
    const log = path.join(stack.fabric.dir, "long.log");
    const taskId = await stack.client.run(fid, stack.endpointId, [log, "long", 7_000, ""]);
    expect(await stack.client.waitForResult(taskId, { timeoutMs: 30_000 })).toBe("done long");
    expect(lines(log).filter((l) => l.startsWith("long "))).toHaveLength(1);
    expect((await stack.client.getTask(taskId)).attempts).toBe(1);
  }, 60_000);

  it("a submission retried with the same idempotency key creates its tasks once", async () => {
    const raw = await RawClients.of(stack.fabric, "alice");
    const log = path.join(stack.fabric.dir, "idem.log");
    const req = {
      groupId: "",
      idempotencyKey: "beamtime-42-scan-7",
      tasks: [0, 1, 2].map((i) => ({
        functionId: fid,
        endpointId: stack.endpointId,
        argsJson: new TextEncoder().encode(JSON.stringify([log, `i${i}`, 1, ""])),
        kwargsJson: new Uint8Array(),
      })),
    };
    const first = await raw.submitTasks(req);
    const second = await raw.submitTasks(req);
    expect(second.taskIds).toEqual(first.taskIds);
    expect(second.groupId).toBe(first.groupId);
    let n = 0;
    for await (const o of stack.client.results({ groupId: first.groupId }, { timeoutMs: 30_000 }))
      if (o.ok) n++;
    expect(n).toBe(3);
    await new Promise((r) => setTimeout(r, 500));
    expect(
      lines(log)
        .sort()
        .map((l) => l.split(" ")[0]),
    ).toEqual(["i0", "i1", "i2"]);
  }, 60_000);

  it("a submission whose records cannot be written fails, and its retry runs the tasks: none waits forever", async () => {
    const raw = await RawClients.of(stack.fabric, "alice");
    const log = path.join(stack.fabric.dir, "unrecorded.log");
    const req = {
      groupId: "",
      idempotencyKey: "beamtime-42-scan-8",
      tasks: [0, 1].map((i) => ({
        functionId: fid,
        endpointId: stack.endpointId,
        argsJson: new TextEncoder().encode(JSON.stringify([log, `u${i}`, 1, ""])),
        kwargsJson: new Uint8Array(),
      })),
    };
    // The tasks bucket refuses new records (full, with discard "new"); the task queue still takes
    // messages: the queue entries land, the records do not.
    const nc = await connect({ servers: stack.fabric.nats.url });
    const jsm = await jetstreamManager(nc);
    const bucket = `KV_${Bus.tasksBucket}`;
    const config = (await jsm.streams.info(bucket)).config;
    try {
      await jsm.streams.update(bucket, {
        ...config,
        max_bytes: Math.max(1, (await jsm.streams.info(bucket)).state.bytes),
        discard: DiscardPolicy.New,
      });
      const err = await raw.submitTasks(req).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err?.message).toMatch(/task store is unavailable/);
      // The agent may have run them already, unrecorded: their results are dropped after a few
      // tries (no record to write them to). Only then is the call retried.
      await until(() => lines(log).length >= 2, 3_000, "the unrecorded runs").catch(() => undefined);
      await new Promise((r) => setTimeout(r, 3_000));
    } finally {
      await jsm.streams.update(bucket, config);
      await nc.close();
    }
    // The retry (same key) creates the records and queues the tasks again: they run and finish.
    const { taskIds } = await raw.submitTasks(req);
    for (const id of taskIds)
      expect(await stack.client.waitForResult(id, { timeoutMs: 30_000 })).toMatch(/^done u[01]$/);
  }, 60_000);

  it("tasks queued for a deleted endpoint fail with a clear reason", async () => {
    const ep = await stack.fabric.startEndpoint("alice", "doomed");
    const doomed = ep.endpointId();
    await ep.stop();
    const { taskIds } = await stack.client.submitBatch(
      [0, 1, 2].map(() => ({ functionId: fid, endpointId: doomed, args: [] })),
    );
    await stack.client.deleteEndpoint(doomed);
    for (const id of taskIds) {
      const err = await failureOf(stack.client.waitForResult(id, { timeoutMs: 15_000 }));
      expect(err.reason).toBe("endpoint_deleted");
      expect(err.message).toMatch(/deleted/);
    }
  }, 60_000);
});
