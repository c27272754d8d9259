import {
  FabricError,
  notFound,
  resourceExhausted,
  MAC_HEADER,
  type BrokerMessageKeys,
  inlinePayload,
  isStored,
} from "../../common/index.js";
import {
  TaskMessage,
  type CancelTasksRequest,
  type CancelTasksResponse,
  type GetTasksRequest,
  type GetTasksResponse,
  type Task,
} from "../../proto/index.js";
import type { BrokerConfig } from "../config.js";
import { check, idSchema } from "../rpc/validate.js";
import { mapLimit, type TaskRecordCache } from "../state/records.js";
import type { FabricStore } from "../state/store.js";
import type { TaskEventHub } from "./event-hub.js";
import { cancelTask, failTask } from "./task-transitions.js";

/** Most records a call reads or writes at once. */
export const CONCURRENCY = 256;

/**
 * Task records as their owner sees them: read (NOT_FOUND for anyone else's), cancel, fail what
 * a deleted endpoint left queued. Records live in the tasks bucket; this broker's cache of the
 * ones it wrote lets a change skip its read.
 */
export class TaskBook {
  constructor(
    private readonly store: FabricStore,
    private readonly config: BrokerConfig,
    private readonly events: TaskEventHub,
    /** This broker's cache of task records (see RecordCache). */
    readonly records: TaskRecordCache,
    /** Each endpoint's message key: only task messages a broker signed name a task to fail. */
    private readonly keys: BrokerMessageKeys,
  ) {}

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
      const out = await this.store.tasks.update(id, (t) => cancelTask(t, `user/${owner}`), this.records);
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
    for (const [endpointId, cancelTaskIds] of control) this.store.sendControl(endpointId, { cancelTaskIds });
    return { tasks };
  }

  /**
   * Fails every task still queued for a deleted endpoint (reason `endpoint_deleted`) and removes
   * its queue entries, announcing each task it failed. Call after the endpoint's own consumer is
   * gone. Returns how many failed. Only task messages signed with the endpoint's message key
   * count, and only for tasks of that endpoint: a message someone else slipped into the queue
   * cannot fail another task.
   */
  async failQueued(endpointId: string, actor: string): Promise<number> {
    const key = this.keys.endpoint(endpointId);
    let failed = 0;
    await this.store.queues.drain(endpointId, async (msg) => {
      let taskId = "";
      try {
        if (key.check(msg.subject, msg.data, msg.headers?.get(MAC_HEADER)) === "ok")
          taskId = TaskMessage.decode(msg.data).taskId;
      } catch {
        // not a task: just drop it
      }
      if (!taskId) return;
      const error = {
        code: "FAILED_PRECONDITION",
        message: `endpoint ${endpointId} was deleted before the task ran; submit it to another endpoint`,
        reason: "endpoint_deleted",
        remote: undefined,
        shell: undefined,
      };
      const out = await this.store.tasks.update(taskId, (t) =>
        t.endpointId === endpointId ? failTask(t, error, actor) : null,
      );
      if (out?.changed) {
        failed++;
        this.events.publish(out.value, out.bytes);
      }
    });
    return failed;
  }

  /** The caller's task, or NOT_FOUND (also for another user's task or an expired one). */
  async read(taskId: string, owner: string): Promise<Task> {
    const rec = await this.store.tasks.read(taskId);
    if (!rec || rec.value.owner !== owner) {
      throw notFound(
        `task ${taskId} not found (an unknown id, or one that expired more than ${this.config.expiredTaskAnswerSeconds} s ago, ${this.config.resultRetentionSeconds} s after its last change)`,
      );
    }
    return rec.value;
  }

  /** The ids of a request, checked (at least one, within the limit, each an id) and de-duplicated. */
  checkIds(ids: readonly string[]): string[] {
    if (ids.length === 0) throw new FabricError("INVALID_ARGUMENT", "name at least one task id");
    if (ids.length > this.config.limits.maxIdsPerRequest) {
      throw resourceExhausted(
        `${ids.length} task ids exceed the limit of ${this.config.limits.maxIdsPerRequest} per request`,
      );
    }
    ids.forEach((id, i) => check(idSchema("task"), id, `taskIds[${i}]`));
    return [...new Set(ids)];
  }

  /** Brings a result kept in the object store back inline, for the caller. */
  async withInlineResult(task: Task): Promise<Task> {
    if (!isStored(task.result)) return task;
    const ref = task.result.objectRef;
    const json = await this.store.payloads.get(task.endpointId, ref);
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
