/**
 * The task index on a real nats-server: two brokers appending to one owner's index at once lose
 * and duplicate nothing, pages fill and chain, finished tasks are marked, and a listing reads the
 * records only of the tasks the index does not know finished.
 */
import { randomUUID } from "node:crypto";

import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { INDEX_PAGE_ENTRIES, TaskIndex, kvIndexIo } from "../cloud/internal.js";
import { NatsServer } from "../devkit/index.js";
import { Task, TaskState, type TaskIndexEntry } from "../proto/index.js";

/** A task record with the fields a listing looks at. */
function task(t: Pick<Task, "id" | "owner" | "createdAtMs"> & Partial<Task>): Task {
  return Task.decode(Task.encode({ ...Task.decode(new Uint8Array()), ...t }).finish());
}

describe("TaskIndex on a real nats-server", () => {
  let server: NatsServer;
  const conns: NatsConnection[] = [];
  const indexes: TaskIndex[] = [];
  const log = pino({ level: "silent" });

  beforeAll(async () => {
    server = await NatsServer.start();
    for (let i = 0; i < 2; i++) {
      const nc = await connect({ servers: server.url });
      conns.push(nc);
      const kv = await new Kvm(jetstream(nc)).create("index_test", { history: 1 });
      indexes.push(new TaskIndex(kvIndexIo(kv), log, 3_600_000));
    }
  });

  afterAll(async () => {
    for (const nc of conns) await nc.close();
    await server?.stop();
  });

  const entry = (owner: string, createdAtMs: number): TaskIndexEntry => ({
    id: randomUUID(),
    functionId: "f",
    endpointId: "e",
    groupId: owner,
    createdAtMs,
    state: TaskState.TASK_STATE_UNSPECIFIED,
    completedAtMs: 0,
  });

  it("keeps every entry of two brokers appending at once, once each", async () => {
    const owner = "carol";
    const records = new Map<string, Task>();
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 60; i++) {
      const batch = Array.from({ length: 1 + ((i * 37) % 90) }, () => entry(owner, Date.now()));
      for (const e of batch) {
        records.set(e.id, {
          ...task({ id: e.id, owner, createdAtMs: e.createdAtMs }),
          state: TaskState.TASK_STATE_RUNNING,
        });
      }
      writes.push(indexes[i % 2]!.append(owner, batch));
    }
    await Promise.all(writes);
    expect(records.size).toBeGreaterThan(INDEX_PAGE_ENTRIES * 20);
    let reads = 0;
    const readTasks = (ids: readonly string[]) => {
      reads += ids.length;
      return Promise.resolve(ids.map((id) => records.get(id) ?? null));
    };
    const listed: string[] = [];
    let cursor = "";
    do {
      const page = await indexes[1]!.list(
        owner,
        {
          states: [],
          functionId: "",
          endpointId: "",
          groupId: "",
          createdAfterMs: 0,
          createdBeforeMs: 0,
          limit: 1000,
          cursor,
        },
        readTasks,
      );
      listed.push(...page.tasks.map((t) => t.id));
      expect(page.tasks.every((t) => t.state === TaskState.TASK_STATE_RUNNING)).toBe(true);
      cursor = page.nextCursor;
    } while (cursor);
    expect(listed.length).toBe(records.size);
    expect(new Set(listed).size).toBe(records.size);
    expect(reads).toBe(records.size);

    // Half finish (marked by either broker); a listing of failed ones reads no record at all.
    const ids = [...records.keys()];
    ids.forEach((id, i) => {
      if (i % 2 === 0) return;
      const done = { ...records.get(id)!, state: TaskState.TASK_STATE_FAILED, completedAtMs: Date.now() };
      records.set(id, done);
      indexes[i % 4 === 1 ? 0 : 1]!.finished(done);
    });
    let failed: string[] = [];
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const page = await indexes[0]!.list(
        owner,
        {
          states: [TaskState.TASK_STATE_FAILED],
          functionId: "",
          endpointId: "",
          groupId: "",
          createdAfterMs: 0,
          createdBeforeMs: 0,
          limit: 1000,
          cursor: "",
        },
        () => Promise.resolve([]), // no record reads: the marks must tell
      );
      failed = page.tasks.map((t) => t.id);
      if (failed.length >= 1000) break;
    }
    expect(failed).toHaveLength(1000);
    expect(failed.every((id) => records.get(id)!.state === TaskState.TASK_STATE_FAILED)).toBe(true);
  }, 60_000);

  it("skips an entry whose record is missing or was created at another time", async () => {
    const owner = "dave";
    const [kept, lost, retried] = [entry(owner, 1000), entry(owner, 2000), entry(owner, 3000)];
    await indexes[0]!.append(owner, [kept, lost, retried]);
    const records = new Map<string, Task>([
      [kept.id, task({ id: kept.id, owner, createdAtMs: 1000, state: TaskState.TASK_STATE_RUNNING })],
      // A retried submission's second entry: its record keeps the first attempt's time.
      [retried.id, task({ id: retried.id, owner, createdAtMs: 2500, state: TaskState.TASK_STATE_RUNNING })],
    ]);
    const page = await indexes[1]!.list(
      owner,
      {
        states: [],
        functionId: "",
        endpointId: "",
        groupId: "",
        createdAfterMs: 0,
        createdBeforeMs: 0,
        limit: 10,
        cursor: "",
      },
      (ids) => Promise.resolve(ids.map((id) => records.get(id) ?? null)),
    );
    expect(page.tasks.map((t) => t.id)).toEqual([kept.id]);
    expect(page.nextCursor).toBe("");
  });
});
