import type { Logger } from "pino";

import {
  Bus,
  FabricError,
  resourceExhausted,
  newId,
  checkJsonSyntax,
  MAX_TIMEOUT_S,
  TASK_MESSAGE_OVERHEAD_BYTES,
  fitsInline,
  inlinePayload,
  storedPayload,
  compareVersions,
} from "../../common/index.js";
import {
  FunctionSpec,
  Task,
  TaskMessage,
  TaskState,
  type FunctionMessage,
  type Payload,
  type PythonInfo,
  type SubmitTasksRequest,
  type SubmitTasksResponse,
  type TaskIndexEntry,
} from "../../proto/index.js";
import { assertFunctionAllowed } from "../auth/authz.js";
import type { BrokerConfig } from "../config.js";
import type { EndpointRegistry } from "../registry/endpoints.js";
import type { FunctionRegistry } from "../registry/functions.js";
import { check, idSchema } from "../rpc/validate.js";
import { isWrongRevision, mapLimit, type TaskRecordCache } from "../state/records.js";
import type { FabricStore } from "../state/store.js";
import { CONCURRENCY } from "./book.js";
import type { TaskGroups } from "./groups.js";
import type { TaskIndex } from "./task-index.js";
import { derivedId, derivedIds } from "./task-ids.js";

/**
 * SubmitTasks: checks a batch whole, names its tasks (derived from the idempotency key, if there
 * is one: a retried call names the same tasks), writes each task's record and queues its message
 * on the endpoint's task stream, with arguments inline or in the endpoint's payload bucket
 * (common/payload.ts decides), and records the group.
 */
export class TaskSubmitter {
  constructor(
    private readonly store: FabricStore,
    private readonly config: BrokerConfig,
    private readonly functions: FunctionRegistry,
    private readonly endpoints: EndpointRegistry,
    private readonly groups: TaskGroups,
    private readonly brokerId: string,
    private readonly log: Logger,
    private readonly records: TaskRecordCache,
    /** The Python interpreter an endpoint last reported (checked against functions' minimum). */
    private readonly pythonOf: (endpointId: string) => Promise<PythonInfo | undefined>,
    /** The owners' task indexes (listing). */
    private readonly index: TaskIndex,
  ) {}

  async submit(req: SubmitTasksRequest, owner: string): Promise<SubmitTasksResponse> {
    const { limits } = this.config;
    if (req.tasks.length === 0)
      throw new FabricError("INVALID_ARGUMENT", "a submission needs at least one task");
    if (req.tasks.length > limits.maxBatchSize) {
      throw resourceExhausted(
        `a batch of ${req.tasks.length} tasks exceeds the limit of ${limits.maxBatchSize}; split it into smaller batches`,
      );
    }
    // Validate everything before creating anything: a bad task rejects the whole batch.
    const fnIds = new Set<string>();
    const epIds = new Set<string>();
    req.tasks.forEach((t, i) => {
      check(idSchema("function"), t.functionId, `tasks[${i}].functionId`);
      check(idSchema("endpoint"), t.endpointId, `tasks[${i}].endpointId`);
      checkJson(t.argsJson, "array", `tasks[${i}].args`, limits.maxPayloadBytes);
      checkJson(t.kwargsJson, "object", `tasks[${i}].kwargs`, limits.maxPayloadBytes);
      // The same bound as a function's timeout: uint32 on the wire, so it needs no lower bound.
      if ((t.timeoutS ?? 0) > MAX_TIMEOUT_S) {
        throw new FabricError(
          "INVALID_ARGUMENT",
          `tasks[${i}].timeout_s: ${t.timeoutS} s is over the limit of ${MAX_TIMEOUT_S} s (30 days)`,
        );
      }
      fnIds.add(t.functionId);
      epIds.add(t.endpointId);
    });
    const fns = new Map(
      await Promise.all([...fnIds].map(async (id) => [id, await this.functions.get(id, owner)] as const)),
    );
    const eps = new Map(
      await Promise.all([...epIds].map(async (id) => [id, await this.endpoints.get(id, owner)] as const)),
    );
    req.tasks.forEach((t, i) => assertFunctionAllowed(eps.get(t.endpointId)!, t.functionId, `tasks[${i}]`));
    await this.checkPythonVersions(req, fns);

    const key = req.idempotencyKey ?? "";
    if (key.length > 256)
      throw new FabricError("INVALID_ARGUMENT", "idempotencyKey must be at most 256 characters");
    let groupId = req.groupId;
    if (req.noGroup) {
      if (groupId)
        throw new FabricError("INVALID_ARGUMENT", "a submission names a group or asks for none, not both");
    } else if (groupId) {
      check(idSchema("group"), groupId, "groupId");
      await this.groups.assertOwned(groupId, owner);
    } else {
      groupId = key ? derivedId(owner, key, req.tasks.length, "group") : newId();
    }
    // With an idempotency key, ids are derived from it: a retried call names the same tasks.
    const taskIds = key ? derivedIds(owner, key, req.tasks.length) : req.tasks.map(() => newId());

    const actor = `broker/${this.brokerId}`;
    const gid = groupId;
    const rooms = new Map<string, number>();
    const roomFor = (functionId: string): number => {
      let room = rooms.get(functionId);
      if (room === undefined) {
        const specBytes = FunctionSpec.encode(fns.get(functionId)!.spec!).finish().length;
        room = this.store.maxMessageBytes - specBytes - TASK_MESSAGE_OVERHEAD_BYTES;
        rooms.set(functionId, room);
      }
      return room;
    };
    // One creation time for the whole submission: the index entries carry it too (an entry counts
    // only while it matches its record's).
    const now = Date.now();
    // The owner's index learns of the tasks while their records are written; the call answers
    // once both are stored, so a task whose id the caller was given can be listed.
    const entries = req.tasks.map((spec, i): TaskIndexEntry => ({
      id: taskIds[i]!,
      functionId: spec.functionId,
      endpointId: spec.endpointId,
      groupId: gid,
      createdAtMs: now,
      state: TaskState.TASK_STATE_UNSPECIFIED,
      completedAtMs: 0,
    }));
    const indexed = this.index.append(owner, entries);
    const reindex: TaskIndexEntry[] = [];
    // Every task's writes settle before the call answers, even when one fails: a retry of this
    // call must never overlap stragglers of this attempt.
    const created = settleAll(req.tasks, CONCURRENCY, async (spec, i) => {
      const taskId = taskIds[i]!;
      const task: Task = {
        id: taskId,
        owner,
        functionId: spec.functionId,
        endpointId: spec.endpointId,
        groupId: gid,
        state: TaskState.TASK_STATE_WAITING_FOR_ENDPOINT,
        history: [
          { state: TaskState.TASK_STATE_RECEIVED, atMs: now, actor: `user/${owner}`, detail: "" },
          { state: TaskState.TASK_STATE_WAITING_FOR_ENDPOINT, atMs: now, actor, detail: "" },
        ],
        result: undefined,
        error: undefined,
        output: undefined,
        createdAtMs: now,
        completedAtMs: 0,
        attempts: 0,
      };
      // Inline payloads share one NATS message with the function's spec: what does not fit goes
      // to the object store, however small.
      const room = roomFor(spec.functionId);
      const args =
        this.inline(spec.argsJson, room) ??
        (await this.toObject(spec.argsJson, spec.endpointId, Bus.argsObject(taskId)));
      const kwargs =
        this.inline(spec.kwargsJson, room - args.json.length) ??
        (await this.toObject(spec.kwargsJson, spec.endpointId, Bus.kwargsObject(taskId)));
      const message: TaskMessage = {
        taskId,
        functionId: spec.functionId,
        function: fns.get(spec.functionId)!.spec,
        args,
        kwargs,
        owner,
        submittedAtMs: now,
        timeoutS: smallestLimit(spec.timeoutS ?? 0, fns.get(spec.functionId)!.spec?.timeoutS ?? 0),
      };
      // The record and the queue entry are written in one pipelined round trip. A result can
      // only come back long after both landed; the ingest retries one for a record not yet seen.
      const recordBytes = Task.encode(task).finish();
      const messageBytes = TaskMessage.encode(message).finish();
      const sentAt = performance.now();
      const record = this.store.tasks.create(taskId, task, recordBytes);
      const queued = this.store.queueTask(spec.endpointId, taskId, messageBytes);
      let [rec, pub] = await Promise.allSettled([record, queued]);
      if (rec.status === "rejected" && !isWrongRevision(rec.reason) && pub.status === "fulfilled") {
        // Queued without a record: the task would run unseen, and a retry of this call would find
        // its queue entry dropped as a duplicate and wait forever. The record is written again;
        // if it cannot be, the queue entry is taken back (and a retry queues the task anew).
        rec = await this.createAgain(taskId, task, recordBytes);
        if (rec.status === "rejected" && !isWrongRevision(rec.reason)) {
          const removed = await this.store.unqueueTask(pub.value.seq).catch(() => false);
          this.log.warn(
            { taskId, err: (rec.reason as Error).message, queueEntryRemoved: removed },
            "a task was queued but its record could not be written; the submission fails",
          );
        }
      }
      if (rec.status === "fulfilled" && rec.value > 0)
        this.records.remember(taskId, recordBytes, rec.value, sentAt);
      if (rec.status === "fulfilled" && pub.status === "fulfilled" && pub.value.duplicate) {
        // A retry of a call whose earlier attempt queued this task without its record (and took the
        // entry back, or its task ran unrecorded): the record is new, the queue entry a duplicate
        // of one that is gone. Queued again under a message id of its own.
        pub = await Promise.allSettled([
          this.store.queueTask(spec.endpointId, taskId, messageBytes, `${taskId}.again.${now}`),
        ]).then(([r]) => r);
      }
      if (rec.status === "rejected" && key && isWrongRevision(rec.reason)) {
        // A retry of a call that created this task already. The queue entry just published is
        // dropped by the stream's de-duplication (same message id) within its window (2 min);
        // a retry later than that may run the task again, and its second result is absorbed.
        // Only once this attempt's queue entry is in too: the earlier attempt may have stored the
        // record and lost its queue entry.
        const existing = await this.store.tasks.read(taskId);
        if (existing && existing.value.owner === owner && pub.status === "fulfilled") {
          // Its index entry is the earlier attempt's (this one's differs in creation time and is
          // skipped), unless that attempt failed to write it: the entry again, with the record's time.
          reindex.push({ ...entries[i]!, createdAtMs: existing.value.createdAtMs });
          return;
        }
      }
      if (pub.status === "rejected") {
        // Not queued. Without a key nobody else can name this task: remove its record. With one,
        // a retry of this call may already have found the record and answered for it: keep it.
        if (!key) await this.store.tasks.delete(taskId).catch(() => undefined);
        throw new FabricError(
          "UNAVAILABLE",
          `the task queue is unavailable: ${(pub.reason as Error).message}; try again`,
          { cause: pub.reason },
        );
      }
      if (rec.status === "rejected") {
        throw new FabricError(
          "UNAVAILABLE",
          `the task store is unavailable: ${(rec.reason as Error).message}; try again`,
          { cause: rec.reason },
        );
      }
    });
    // The group's records leave after the tasks' (which are on every task's critical path), and
    // land before the answer: a watch on the group (which can only start after the answer) never
    // misses a task.
    const groupReady =
      req.groupId || req.noGroup
        ? Promise.resolve()
        : this.groups.create(groupId, owner).catch((err: unknown) => {
            if (!(key && isWrongRevision(err))) throw err; // a retried call made it already
          });
    const membership = req.noGroup
      ? Promise.resolve()
      : this.groups.addMembers(
          groupId,
          key ? derivedId(owner, key, req.tasks.length, "members") : newId(),
          taskIds,
        );
    const done = created.then(() => this.index.append(owner, reindex));
    for (const r of await Promise.allSettled([groupReady, membership, done, indexed]))
      if (r.status === "rejected") throw r.reason;
    // Debug, not info: a line per call would scale the log (and its writes) with the call rate.
    this.log.debug({ groupId, owner, tasks: taskIds.length }, "tasks submitted");
    return { groupId, taskIds };
  }

  /**
   * Writes a task's record again after a failed create (a few tries within about a second);
   * settles like the create. "Wrong revision": it was there after all (the first write landed,
   * its answer did not), which is as good as written.
   */
  private async createAgain(
    taskId: string,
    task: Task,
    bytes: Uint8Array,
  ): Promise<PromiseSettledResult<number>> {
    let last: PromiseSettledResult<number> = { status: "rejected", reason: new Error("not tried") };
    for (const delayMs of [100, 300, 600]) {
      await new Promise((r) => setTimeout(r, delayMs));
      [last] = await Promise.allSettled([this.store.tasks.create(taskId, task, bytes)]);
      if (last.status === "fulfilled") return last;
      if (isWrongRevision(last.reason)) return { status: "fulfilled", value: 0 };
    }
    return last;
  }

  /** A payload small enough to travel in the task message (the common case: no await, no turn). */
  private inline(json: Uint8Array, room: number): Payload | undefined {
    return fitsInline(json.length, this.config.limits.inlinePayloadBytes, room)
      ? inlinePayload(json)
      : undefined;
  }

  /**
   * A Python function that needs a newer interpreter than its endpoint reported fails here, not
   * on a node. An endpoint that has not reported one yet is given the benefit of the doubt (its
   * manager checks again before it runs the task).
   */
  private async checkPythonVersions(
    req: SubmitTasksRequest,
    fns: ReadonlyMap<string, FunctionMessage>,
  ): Promise<void> {
    const seen = new Map<string, Promise<PythonInfo | undefined>>();
    for (const [i, t] of req.tasks.entries()) {
      const kind = fns.get(t.functionId)?.spec?.kind;
      const needs = kind?.$case === "python" ? kind.value.minVersion : "";
      if (!needs) continue;
      let info = seen.get(t.endpointId);
      if (!info) seen.set(t.endpointId, (info = this.pythonOf(t.endpointId)));
      const python = await info;
      if (!python?.version || compareVersions(python.version, needs) >= 0) continue;
      throw new FabricError(
        "FAILED_PRECONDITION",
        `tasks[${i}]: function ${t.functionId} needs Python ${needs} or later; endpoint ${t.endpointId} runs Python ${python.version} (${python.executable}): point the endpoint's python.executable at a newer interpreter, or register the function with a lower minimum version`,
      );
    }
  }

  /** A large payload, stored in the endpoint's payload bucket; the message refers to it. */
  private async toObject(json: Uint8Array, endpointId: string, objectName: string): Promise<Payload> {
    await this.store.payloads.put(endpointId, objectName, json);
    return storedPayload(objectName, json.length);
  }
}

/** {@link mapLimit} that lets every call finish, then rejects with the first error, if any. */
async function settleAll<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<void>,
): Promise<void> {
  let first: { err: unknown } | undefined;
  await mapLimit(items, limit, (item, i) =>
    fn(item, i).catch((err: unknown) => {
      first ??= { err };
    }),
  );
  if (first) throw first.err;
}

/** The smaller of two limits, 0 meaning none. */
function smallestLimit(a: number, b: number): number {
  if (a === 0) return b;
  if (b === 0) return a;
  return Math.min(a, b);
}

/** Checks a JSON argument payload: size first (cheap), then that it parses to the expected shape. */
function checkJson(bytes: Uint8Array, shape: "array" | "object", what: string, maxBytes: number): void {
  if (bytes.length > maxBytes) {
    throw resourceExhausted(
      `${what} is ${bytes.length} bytes, over the ${maxBytes}-byte payload limit; pass large data by reference (a path or URL)`,
    );
  }
  if (bytes.length === 0) return;
  // Checked, not parsed: a payload of millions of tiny values must not become millions of objects.
  if (checkJsonSyntax(bytes, what) !== shape)
    throw new FabricError("INVALID_ARGUMENT", `${what} must be a JSON ${shape}`);
}
