import { createHash } from "node:crypto";

import type { Logger } from "pino";

import { Bus } from "../../common/bus-layout.js";
import { FabricError, notFound, resourceExhausted } from "../../common/errors.js";
import { newId } from "../../common/ids.js";
import { checkJsonSyntax } from "../../common/json.js";
import { MAX_TIMEOUT_S } from "../../common/limits.js";
import {
  TASK_MESSAGE_OVERHEAD_BYTES,
  fitsInline,
  inlinePayload,
  isStored,
  storedPayload,
} from "../../common/payload.js";
import { MAC_HEADER, type BrokerMessageKeys } from "../../common/message-auth.js";
import { isTerminal } from "../../common/task-state.js";
import {
  EndpointControl,
  FunctionSpec,
  Task,
  TaskMessage,
  TaskState,
  type CancelTasksRequest,
  type CancelTasksResponse,
  type GetTasksRequest,
  type GetTasksResponse,
  type Payload,
  type SubmitTasksRequest,
  type SubmitTasksResponse,
  type TaskServiceServer,
  type WatchTasksRequest,
  type WatchTasksResponse,
} from "../../proto/index.js";
import type { TokenAuthority } from "../auth/tokens.js";
import { assertFunctionAllowed } from "../auth/authz.js";
import type { BrokerConfig } from "../config.js";
import type { EndpointRegistry } from "../registry/endpoints.js";
import type { TaskEventHub } from "./event-hub.js";
import type { FunctionRegistry } from "../registry/functions.js";
import { isWrongRevision, mapLimit, readRecord, updateRecord, type TaskRecordCache } from "../state/records.js";
import { serverStream, unary, userOf } from "../rpc/rpc.js";
import { sessionHandler } from "../rpc/session.js";
import type { FabricStore } from "../state/store.js";
import { cancelTask } from "./task-transitions.js";
import { check, idSchema } from "../rpc/validate.js";

const decoder = new TextDecoder();

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
const CONCURRENCY = 256;
/** While a watch waits for events, it re-reads what it still waits for this often, in case one was missed. */
const WATCH_RECHECK_MS = 2_000;
/** A watch re-reads what it still waits for at least this often, events or not. */
const WATCH_FULL_RECHECK_MS = 30_000;
/** Most tasks in one WatchTasks message. */
const WATCH_BATCH = 256;

/**
 * Where a watch sends finished tasks: a WatchTasks call, or one watch of a Session stream. `write`
 * returns false when the writer should wait for "drain"; "cancelled" means nobody listens anymore.
 */
export interface WatchSink {
  readonly cancelled: boolean;
  write(msg: WatchTasksResponse): boolean;
  once(event: "drain", listener: () => void): unknown;
  on(event: "cancelled", listener: () => void): unknown;
  off(event: "cancelled", listener: () => void): unknown;
}

interface GroupMeta {
  owner: string;
  createdAtMs: number;
}

/** Tasks: submit, read, cancel, watch. State lives in the tasks KV bucket; queues in the task stream. */
export class TaskBook {
  constructor(
    private readonly store: FabricStore,
    private readonly config: BrokerConfig,
    private readonly functions: FunctionRegistry,
    private readonly endpoints: EndpointRegistry,
    private readonly events: TaskEventHub,
    private readonly brokerId: string,
    private readonly log: Logger,
    private readonly records: TaskRecordCache,
    /** Signs task and control messages: agents run and obey only what a broker signed. */
    private readonly keys: BrokerMessageKeys,
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

    const key = req.idempotencyKey ?? "";
    if (key.length > 256)
      throw new FabricError("INVALID_ARGUMENT", "idempotencyKey must be at most 256 characters");
    let groupId = req.groupId;
    if (req.noGroup) {
      if (groupId)
        throw new FabricError("INVALID_ARGUMENT", "a submission names a group or asks for none, not both");
    } else if (groupId) {
      check(idSchema("group"), groupId, "groupId");
      await this.groupMeta(groupId, owner);
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
    // Every task's writes settle before the call answers, even when one fails: a retry of this
    // call must never overlap stragglers of this attempt.
    const created = settleAll(req.tasks, CONCURRENCY, async (spec, i) => {
      const taskId = taskIds[i]!;
      const now = Date.now();
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
      const sentAt = performance.now();
      const record = this.store.createTaskRecord(taskId, recordBytes);
      const subject = Bus.taskSubject(spec.endpointId);
      const payload = TaskMessage.encode(message).finish();
      const queued = this.store.publisher.publish(subject, payload, {
        msgId: taskId,
        headers: { [MAC_HEADER]: this.keys.endpoint(spec.endpointId).mac(subject, payload) },
      });
      const [rec, pub] = await Promise.allSettled([record, queued]);
      if (rec.status === "fulfilled") this.records.remember(taskId, recordBytes, rec.value, sentAt);
      if (rec.status === "rejected" && key && isWrongRevision(rec.reason)) {
        // A retry of a call that created this task already. The queue entry just published is
        // dropped by the stream's de-duplication (same message id) within its window (2 min);
        // a retry later than that may run the task again, and its second result is absorbed.
        // Only once this attempt's queue entry is in too: the earlier attempt may have stored the
        // record and lost its queue entry.
        const existing = await readRecord(this.store.taskIo, taskId, Task);
        if (existing && existing.value.owner === owner && pub.status === "fulfilled") return;
      }
      if (pub.status === "rejected") {
        // Not queued. Without a key nobody else can name this task: remove its record. With one,
        // a retry of this call may already have found the record and answered for it: keep it.
        if (!key) await this.store.tasks.delete(taskId).catch(() => undefined);
        throw new FabricError(
          "UNAVAILABLE",
          `the task queue is unavailable: ${(pub.reason as Error).message}; try again`,
          {
            cause: pub.reason,
          },
        );
      }
      if (rec.status === "rejected") {
        throw new FabricError(
          "UNAVAILABLE",
          `the task store is unavailable: ${(rec.reason as Error).message}; try again`,
          {
            cause: rec.reason,
          },
        );
      }
    });
    // The group's records leave after the tasks' (which are on every task's critical path), and
    // land before the answer: a watch on the group (which can only start after the answer) never
    // misses a task.
    const enc = new TextEncoder();
    const groupReady =
      req.groupId || req.noGroup
        ? Promise.resolve()
        : this.store
            .createGroupRecord(
              groupId,
              enc.encode(JSON.stringify({ owner, createdAtMs: Date.now() } satisfies GroupMeta)),
            )
            .catch((err: unknown) => {
              if (!(key && isWrongRevision(err))) throw err; // a retried call made it already
            });
    const membership = req.noGroup
      ? Promise.resolve()
      : this.store.putGroupRecord(
          `${groupId}.${key ? derivedId(owner, key, req.tasks.length, "members") : newId()}`,
          enc.encode(JSON.stringify(taskIds)),
        );
    for (const r of await Promise.allSettled([groupReady, membership, created]))
      if (r.status === "rejected") throw r.reason;
    // Debug, not info: a line per call would scale the log (and its writes) with the call rate.
    this.log.debug({ groupId, owner, tasks: taskIds.length }, "tasks submitted");
    return { groupId, taskIds };
  }

  async get(req: GetTasksRequest, owner: string): Promise<GetTasksResponse> {
    const ids = this.checkIds(req.taskIds);
    const tasks = await mapLimit(ids, CONCURRENCY, async (id) => {
      const task = await this.read(id, owner);
      return req.omitResults ? { ...task, result: undefined } : this.withInlineResult(task);
    });
    return { tasks };
  }

  async cancel(req: CancelTasksRequest, owner: string): Promise<CancelTasksResponse> {
    const ids = this.checkIds(req.taskIds);
    await mapLimit(ids, CONCURRENCY, (id) => this.read(id, owner));
    const control = new Map<string, string[]>();
    const tasks = await mapLimit(ids, CONCURRENCY, async (id) => {
      const out = await updateRecord(
        this.store.taskIo,
        id,
        Task,
        (t) => cancelTask(t, `user/${owner}`),
        this.records,
      );
      if (!out) throw notFound(`task ${id} not found`);
      if (out.changed) {
        this.events.publish(out.value, out.bytes);
        const list = control.get(out.value.endpointId) ?? [];
        list.push(id);
        control.set(out.value.endpointId, list);
      }
      return { ...out.value, result: undefined };
    });
    // Tell the agents: a queued task is dropped, a running one stopped (best effort; a task that
    // runs anyway has its late result ignored, its state stays cancelled).
    for (const [endpointId, cancelTaskIds] of control) {
      const subject = Bus.controlSubject(endpointId);
      const payload = EndpointControl.encode({ cancelTaskIds }).finish();
      this.store.nc.publish(subject, payload, {
        headers: this.keys.endpoint(endpointId).headers(subject, payload),
      });
    }
    return { tasks };
  }

  async watch(req: WatchTasksRequest, call: WatchSink, owner: string): Promise<void> {
    let ids: string[];
    if (req.groupId) {
      if (req.taskIds.length > 0)
        throw new FabricError("INVALID_ARGUMENT", "watch either task ids or a group, not both");
      check(idSchema("group"), req.groupId, "groupId");
      ids = await this.groupMembers(req.groupId, owner);
    } else {
      ids = this.checkIds(req.taskIds);
    }
    const remaining = new Set(ids);
    let wake: (() => void) | undefined;
    const ready: Task[] = [];
    const unsubscribe = this.events.subscribe(owner, (task) => {
      if (remaining.has(task.id)) {
        ready.push(task);
        wake?.();
      }
    });
    const onCancel = () => wake?.();
    call.on("cancelled", onCancel);
    try {
      // No flush needed before the first read: the subscription (if new) and the reads leave on
      // the same connection, in that order, so the server has the subscription before it answers
      // them; a task that finishes after its read is announced to it.
      // Tasks that finished together leave in one message: one write per batch, not per task.
      const send = async (tasks: Task[]): Promise<void> => {
        const fresh = tasks.filter((t) => remaining.delete(t.id));
        for (let i = 0; i < fresh.length; i += WATCH_BATCH) {
          const batch = await mapLimit(fresh.slice(i, i + WATCH_BATCH), 16, (t) => this.withInlineResult(t));
          const msg = batch.length === 1 ? { task: batch[0], tasks: [] } : { task: undefined, tasks: batch };
          if (!call.write(msg)) await new Promise<void>((r) => call.once("drain", r));
        }
      };
      const recheck = async (trustCache: boolean): Promise<void> => {
        let pending = [...remaining];
        if (trustCache) {
          // A task this broker wrote (unfinished) after the owner's events were followed cannot
          // have finished unseen: its end would have been announced to this subscription (and
          // would have dropped the cached record). No read for it, only for the others.
          const since = this.events.followedSince(owner);
          if (since !== undefined) {
            pending = pending.filter((id) => {
              const c = this.records.get(id);
              return !(c && c.sentAt > since && c.value.owner === owner && !isTerminal(c.value.state));
            });
          }
        }
        const tasks = await mapLimit(pending, CONCURRENCY, (id) => this.read(id, owner));
        await send(tasks.filter((t) => isTerminal(t.state)));
      };
      await recheck(true);
      let lastRecheck = performance.now();
      while (remaining.size > 0 && !call.cancelled) {
        while (ready.length > 0) await send(ready.splice(0, ready.length));
        if (remaining.size === 0) break;
        const woke = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), WATCH_RECHECK_MS);
          wake = () => {
            clearTimeout(timer);
            resolve(true);
          };
        });
        wake = undefined;
        // Events are best effort: read what is still awaited when none came for a while, and
        // now and then even while others keep coming.
        const due = !woke || performance.now() - lastRecheck > WATCH_FULL_RECHECK_MS;
        if (due && ready.length === 0 && !call.cancelled) {
          await recheck(false);
          lastRecheck = performance.now();
        }
      }
    } finally {
      unsubscribe();
      call.off("cancelled", onCancel);
    }
  }

  /** The caller's task, or NOT_FOUND (also for another user's task or an expired one). */
  private async read(taskId: string, owner: string): Promise<Task> {
    const rec = await readRecord(this.store.taskIo, taskId, Task);
    if (!rec || rec.value.owner !== owner) {
      throw notFound(
        `task ${taskId} not found (unknown id, or its record expired after ${this.config.resultRetentionSeconds} s)`,
      );
    }
    return rec.value;
  }

  private async groupMeta(groupId: string, owner: string): Promise<GroupMeta> {
    const entry = await this.store.groups.get(groupId);
    if (!entry || entry.operation !== "PUT") throw notFound(`task group ${groupId} not found`);
    const meta = JSON.parse(decoder.decode(entry.value)) as GroupMeta;
    if (meta.owner !== owner) throw notFound(`task group ${groupId} not found`);
    return meta;
  }

  private async groupMembers(groupId: string, owner: string): Promise<string[]> {
    await this.groupMeta(groupId, owner);
    const ids: string[] = [];
    for await (const key of await this.store.groups.keys(`${groupId}.*`)) {
      const entry = await this.store.groups.get(key);
      if (entry && entry.operation === "PUT")
        ids.push(...(JSON.parse(decoder.decode(entry.value)) as string[]));
    }
    return ids;
  }

  private checkIds(ids: readonly string[]): string[] {
    if (ids.length === 0) throw new FabricError("INVALID_ARGUMENT", "name at least one task id");
    if (ids.length > this.config.limits.maxIdsPerRequest) {
      throw resourceExhausted(
        `${ids.length} task ids exceed the limit of ${this.config.limits.maxIdsPerRequest} per request`,
      );
    }
    ids.forEach((id, i) => check(idSchema("task"), id, `taskIds[${i}]`));
    return [...new Set(ids)];
  }

  /** A payload small enough to travel in the task message (the common case: no await, no turn). */
  private inline(json: Uint8Array, room: number): Payload | undefined {
    return fitsInline(json.length, this.config.limits.inlinePayloadBytes, room)
      ? inlinePayload(json)
      : undefined;
  }

  /** A large payload, stored in the endpoint's payload bucket; the message refers to it. */
  private async toObject(json: Uint8Array, endpointId: string, objectName: string): Promise<Payload> {
    await (await this.store.payloads(endpointId)).putBlob({ name: objectName }, json);
    return storedPayload(objectName, json.length);
  }

  /** Brings a result kept in the object store back inline, for the caller. */
  private async withInlineResult(task: Task): Promise<Task> {
    if (!isStored(task.result)) return task;
    const ref = task.result.objectRef;
    const json = await (await this.store.payloads(task.endpointId)).getBlob(ref);
    if (!json) {
      return {
        ...task,
        result: undefined,
        error: {
          code: "DATA_LOSS",
          message: `the result object ${ref} has expired or was removed`,
          reason: "expired",
          remote: undefined,
          shell: undefined,
        },
      };
    }
    return { ...task, result: inlinePayload(json) };
  }
}

/** A UUID-shaped id derived from an idempotency key: the same inputs give the same id. */
function derivedId(owner: string, key: string, count: number, what: string): string {
  const h = createHash("sha256").update(`${owner}\u0000${key}\u0000${count}\u0000${what}`).digest("hex");
  // Version 8 (custom) and the RFC variant, so it reads as a UUID.
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * The task ids of a submission with an idempotency key: the same inputs give the same ids. One
 * hash per submission; each task's id is it with the task's index mixed into its last 32 bits.
 */
function derivedIds(owner: string, key: string, count: number): string[] {
  const h = createHash("sha256").update(`${owner}\u0000${key}\u0000${count}\u0000tasks`).digest();
  const ids = new Array<string>(count);
  const b = Buffer.alloc(16);
  for (let i = 0; i < count; i++) {
    h.copy(b, 0, 0, 16);
    b.writeUInt32BE((b.readUInt32BE(12) ^ i) >>> 0, 12);
    b[6] = (b[6]! & 0x0f) | 0x80; // version 8 (custom)
    b[8] = (b[8]! & 0x3f) | 0x80; // the RFC variant
    const x = b.toString("hex");
    ids[i] = `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  }
  return ids;
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

export function taskService(book: TaskBook, auth: TokenAuthority, log: Logger): TaskServiceServer {
  return {
    submitTasks: unary<SubmitTasksRequest, SubmitTasksResponse>(auth, log, "SubmitTasks", (req, ctx) =>
      book.submit(req, userOf(ctx)),
    ),
    getTasks: unary<GetTasksRequest, GetTasksResponse>(auth, log, "GetTasks", (req, ctx) =>
      book.get(req, userOf(ctx)),
    ),
    cancelTasks: unary<CancelTasksRequest, CancelTasksResponse>(auth, log, "CancelTasks", (req, ctx) =>
      book.cancel(req, userOf(ctx)),
    ),
    watchTasks: serverStream<WatchTasksRequest, WatchTasksResponse>(
      auth,
      log,
      "WatchTasks",
      (req, call, ctx) => book.watch(req, call, userOf(ctx)),
    ),
    session: sessionHandler(book, auth, log),
  };
}
