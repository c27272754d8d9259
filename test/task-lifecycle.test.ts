import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { TokenAuthority } from "../cloud/index.js";
import { Bus } from "../common/index.js";
import { TaskMessage } from "../proto/index.js";
import { Client, TaskFailedError } from "../sdk/index.js";
import { LocalFabric, until } from "../devkit/index.js";
import { RawClients } from "./support/raw-clients.js";

const lines = (file: string) =>
  existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean) : [];
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
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
  let stack: LocalFabric;
  let client: Client;
  let endpointId: string;
  let fid: string;
  let scratch: string;

  beforeAll(async () => {
    // A short ack wait, to show a long task is not redelivered while it runs.
    stack = await LocalFabric.start({ brokerConfig: { taskAckWaitSeconds: 2 } });
    const ep = await stack.startEndpoint("alice", "life", { workers: 2 });
    endpointId = ep.endpointId();
    client = new Client({ address: stack.broker.address, token: await stack.broker.token("alice") });
    fid = await client.registerFunction({ source: recordingSource, entryPoint: "work" });
    scratch = mkdtempSync(path.join(tmpdir(), "fabric-life-"));
  }, 120_000);

  afterAll(async () => {
    client?.close();
    await stack?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  it("a worker killed mid-task: no retries → fails 'worker lost'; with a retry → succeeds on attempt 2, both in the history", async () => {
    const log = path.join(scratch, "kill.log");
    const once = await client.run(fid, endpointId, [log, "once", 30_000, ""]);
    await until(() => lines(log).some((l) => l.startsWith("once ")), 30_000, "the task to start");
    process.kill(
      Number(
        lines(log)
          .find((l) => l.startsWith("once "))!
          .split(" ")[1],
      ),
      "SIGKILL",
    );
    const err = (await client
      .waitForResult(once, { timeoutMs: 30_000 })
      .catch((e: unknown) => e)) as TaskFailedError;
    expect(err).toBeInstanceOf(TaskFailedError);
    expect(err.reason).toBe("worker_lost");

    const retrying = await client.registerFunction(
      { source: recordingSource, entryPoint: "work" },
      { maxRetries: 1 },
    );
    const twice = await client.run(retrying, endpointId, [
      log,
      "twice",
      30_000,
      path.join(scratch, "marker"),
    ]);
    await until(() => lines(log).some((l) => l.startsWith("twice ")), 30_000, "the first attempt");
    process.kill(
      Number(
        lines(log)
          .find((l) => l.startsWith("twice "))!
          .split(" ")[1],
      ),
      "SIGKILL",
    );
    expect(await client.waitForResult(twice, { timeoutMs: 30_000 })).toBe("second attempt");
    const info = await client.getTask(twice);
    expect(info.attempts).toBe(2);
    expect(info.history.some((h) => /attempt 1 of 2 failed \(worker_lost/.test(h.detail))).toBe(true);
    expect(info.history.filter((h) => h.state === "success")).toHaveLength(1);
  }, 90_000);

  it("a task over its timeout is stopped and fails with reason 'timeout' (function limit and task limit)", async () => {
    const log = path.join(scratch, "timeout.log");
    const limited = await client.registerFunction(
      { source: recordingSource, entryPoint: "work" },
      { timeoutSeconds: 1 },
    );
    const t1 = await client.run(limited, endpointId, [log, "fn-limit", 20_000, ""]);
    const [t2] = (
      await client.submitBatch([
        { functionId: fid, endpointId, args: [log, "task-limit", 20_000, ""], timeoutSeconds: 1 },
      ])
    ).taskIds;
    for (const t of [t1, t2!]) {
      const err = (await client
        .waitForResult(t, { timeoutMs: 30_000 })
        .catch((e: unknown) => e)) as TaskFailedError;
      expect(err).toBeInstanceOf(TaskFailedError);
      expect(err.code).toBe("DEADLINE_EXCEEDED");
      expect(err.reason).toBe("timeout");
    }
    // The stopped workers' processes are gone.
    for (const l of lines(log)) expect(alive(Number(l.split(" ")[1]))).toBe(false);
  }, 60_000);

  it("cancels a running task (its worker stopped) and a queued one; the endpoint keeps working", async () => {
    const log = path.join(scratch, "cancel.log");
    const { taskIds } = await client.submitBatch(
      Array.from({ length: 6 }, (_, i) => ({
        functionId: fid,
        endpointId,
        args: [log, `c${i}`, 30_000, ""],
      })),
    );
    await until(() => lines(log).length >= 2, 30_000, "two tasks running");
    const running = lines(log).map((l) => l.split(" "));
    await client.cancel(taskIds);
    for (const id of taskIds) expect((await client.getTask(id)).state).toBe("cancelled");
    await until(
      () => running.every(([, pid]) => !alive(Number(pid))),
      15_000,
      "the running tasks' workers to stop",
    );
    const after = await client.run(fid, endpointId, [log, "after", 1, ""]);
    expect(await client.waitForResult(after, { timeoutMs: 30_000 })).toBe("done after");
    // Cancelled tasks that were still queued never ran.
    expect(lines(log).filter((l) => /^c\d /.test(l)).length).toBeLessThan(6);
  }, 60_000);

  it("a task message delivered twice is executed once", async () => {
    const log = path.join(scratch, "dup.log");
    const raw = new RawClients(stack.broker.address, await stack.broker.token("alice"));
    const nc = await connect({ servers: stack.nats.url });
    try {
      const taskId = await client.run(fid, endpointId, [log, "dup", 1_500, ""]);
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
      const subject = Bus.taskSubject(endpointId);
      const signed = {
        headers: (
          await TokenAuthority.fromKeyFile(stack.broker.keyFile, "fabric-broker", "fabric-api")
        ).messageKeys
          .endpoint(endpointId)
          .headers(subject, message),
      };
      await jetstream(nc).publish(subject, message, signed);
      expect(await client.waitForResult(taskId, { timeoutMs: 30_000 })).toBe("done dup");
      // Once more after it finished.
      await jetstream(nc).publish(subject, message, signed);
      await until(
        async () => (await client.getEndpoint(endpointId)).status.queuedTasks === 0,
        10_000,
        "the queue to drain",
      );
      await new Promise((r) => setTimeout(r, 500));
      expect(lines(log).filter((l) => l.startsWith("dup "))).toHaveLength(1);
    } finally {
      await nc.close();
      raw.close();
    }
  }, 60_000);

  it("a task running longer than the queue's ack deadline is not delivered again", async () => {
    const log = path.join(scratch, "long.log");
    const taskId = await client.run(fid, endpointId, [log, "long", 7_000, ""]);
    expect(await client.waitForResult(taskId, { timeoutMs: 30_000 })).toBe("done long");
    expect(lines(log).filter((l) => l.startsWith("long "))).toHaveLength(1);
    expect((await client.getTask(taskId)).attempts).toBe(1);
  }, 60_000);

  it("a submission retried with the same idempotency key creates its tasks once", async () => {
    const raw = new RawClients(stack.broker.address, await stack.broker.token("alice"));
    try {
      const log = path.join(scratch, "idem.log");
      const req = {
        groupId: "",
        idempotencyKey: "beamtime-42-scan-7",
        tasks: [0, 1, 2].map((i) => ({
          functionId: fid,
          endpointId,
          argsJson: new TextEncoder().encode(JSON.stringify([log, `i${i}`, 1, ""])),
          kwargsJson: new Uint8Array(),
        })),
      };
      const first = await raw.submitTasks(req);
      const second = await raw.submitTasks(req);
      expect(second.taskIds).toEqual(first.taskIds);
      expect(second.groupId).toBe(first.groupId);
      let n = 0;
      for await (const o of client.results({ groupId: first.groupId }, { timeoutMs: 30_000 })) if (o.ok) n++;
      expect(n).toBe(3);
      await new Promise((r) => setTimeout(r, 500));
      expect(
        lines(log)
          .sort()
          .map((l) => l.split(" ")[0]),
      ).toEqual(["i0", "i1", "i2"]);
    } finally {
      raw.close();
    }
  }, 60_000);

  it("tasks queued for a deleted endpoint fail with a clear reason", async () => {
    const ep = await stack.startEndpoint("alice", "doomed");
    const doomed = ep.endpointId();
    await ep.stop();
    const { taskIds } = await client.submitBatch(
      [0, 1, 2].map(() => ({ functionId: fid, endpointId: doomed, args: [] })),
    );
    await client.deleteEndpoint(doomed);
    for (const id of taskIds) {
      const err = (await client
        .waitForResult(id, { timeoutMs: 15_000 })
        .catch((e: unknown) => e)) as TaskFailedError;
      expect(err).toBeInstanceOf(TaskFailedError);
      expect(err.reason).toBe("endpoint_deleted");
      expect(err.message).toMatch(/deleted/);
    }
  }, 60_000);
});
