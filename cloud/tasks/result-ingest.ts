import type { Logger } from "pino";

import { Bus, DropLog, MAC_HEADER, type BrokerMessageKeys, isTerminal } from "../../common/index.js";
import {
  TaskCheck,
  TaskCheckReply,
  TaskState,
  TaskUpdateBatch,
  TaskUpdateBatchReply,
  type CheckedTask,
  type TaskUpdate,
} from "../../proto/index.js";
import type { TaskEventHub } from "./event-hub.js";
import { agentInboxPrefix } from "../auth/nats-credentials.js";
import type { BusMessage, BusSubscription, QueuedMessage, QueuedMessages } from "../state/bus.js";
import { mapLimit, type TaskRecordCache } from "../state/records.js";
import { RESULT_ACK_WAIT_MS, type FabricStore } from "../state/store.js";
import { applyTaskUpdate } from "./task-transitions.js";

/**
 * Consumes agents' TaskUpdateBatch messages from the shared results consumer (every broker replica
 * pulls from it) and records them in the tasks bucket with compare-and-set. A message is acked
 * only after all its updates are stored, so a broker that dies mid-way loses nothing: another
 * replica (or the restarted one) gets the message again, and duplicates are absorbed by task id.
 * Agents send batches as core NATS requests first (any replica answers once they are recorded),
 * and publish to the stream only when no broker says "recorded".
 *
 * The same replicas answer agents' task checks (TaskCheck): what is recorded of tasks an agent
 * may have seen before, so that it never runs a task whose outcome is recorded (NATS can restore
 * a work-queue message acknowledged just before it crashed) and counts the runs it cannot see.
 *
 * Only batches the endpoint's own agent signed (its endpoint's message key, over the subject and
 * the bytes) are read at all. NATS permissions keep an agent off other endpoints' subjects, but
 * the server itself publishes, with its own rights, to whatever reply subject a request names
 * (issue 12): an agent can have the server put bytes onto another endpoint's result subject.
 */
/** Most tasks one TaskCheck asks about (an agent sends at most a fetch's worth). */
const MAX_CHECKED_TASKS = 4096;

export class ResultIngest {
  private messages: QueuedMessages | undefined;
  private loop: Promise<void> | undefined;
  private stopping = false;
  private readonly droppedBatches: DropLog;
  private readonly droppedRequests: DropLog;

  constructor(
    private readonly store: FabricStore,
    private readonly events: TaskEventHub,
    private readonly log: Logger,
    private readonly records: TaskRecordCache,
    /** Each endpoint's message key: what its agent signs its batches with. */
    private readonly keys: BrokerMessageKeys,
    /**
     * With per-endpoint NATS users: answers go only to the sending agent's own inbox. NATS lets a
     * requester name any reply subject, and the answer is published with the broker's rights, so
     * without this check an agent could have the broker publish on another endpoint's subjects.
     */
    private readonly isolated = false,
  ) {
    this.droppedBatches = new DropLog(log, "result batch", { from: "the endpoint's agent" });
    this.droppedRequests = new DropLog(log, "result request", { from: "the endpoint's agent" });
    this.droppedChecks = new DropLog(log, "task check", { from: "the endpoint's agent" });
  }

  private readonly droppedChecks: DropLog;
  private checks: BusSubscription | undefined;

  /** Whether the endpoint's agent signed this message; if not, it is logged (rate-limited) as dropped. */
  private fromAgent(endpointId: string, msg: BusMessage | QueuedMessage, dropped: DropLog): boolean {
    const verdict = this.keys.endpoint(endpointId).check(msg.subject, msg.data, msg.headers?.get(MAC_HEADER));
    if (verdict === "ok") return true;
    dropped.drop(msg.subject, verdict);
    return false;
  }

  async start(): Promise<void> {
    this.messages = await this.store.consumeResults(64);
    this.loop = this.run(this.messages);
    this.requests = this.store.subscribe(Bus.resultRequestSubjects, (msg) => void this.handleRequest(msg), {
      queue: Bus.resultRequestQueue,
    });
    this.checks = this.store.subscribe(Bus.taskCheckSubjects, (msg) => void this.handleCheck(msg), {
      queue: Bus.resultRequestQueue,
    });
  }

  private requests: BusSubscription | undefined;
  private foreignReplies = 0;
  private foreignLoggedAt = 0;

  /**
   * A batch an agent sent as a request: recorded at once and answered, a hop and a stream write
   * quicker than the stream. Anything short of every update recorded is answered `recorded:
   * false`, and the agent publishes the batch to the stream, which retries and redelivers.
   */
  private async handleRequest(msg: BusMessage): Promise<void> {
    const answer = (recorded: boolean, reason = ""): void => {
      msg.respond(TaskUpdateBatchReply.encode({ recorded, reason }).finish());
    };
    const endpointId = msg.subject.slice(Bus.resultRequestSubject("").length);
    // Not answered, not recorded: the agent's fallback (the result stream) carries real updates.
    if (!this.repliesToAgent(endpointId, msg)) return;
    // Answered (on the agent's own inbox, checked above), so that an agent that did not sign falls
    // back to the stream at once rather than after a timeout; there it is dropped too.
    if (!this.fromAgent(endpointId, msg, this.droppedRequests))
      return answer(false, "not signed with the endpoint's message key");
    if (this.stopping) return answer(false, "the broker is stopping");
    let batch: TaskUpdateBatch;
    try {
      batch = TaskUpdateBatch.decode(msg.data);
    } catch (err) {
      return answer(false, `undecodable batch: ${(err as Error).message}`);
    }
    try {
      const unknown = (await mapLimit(batch.updates, 64, (u) => this.apply(endpointId, u, 0))).some(Boolean);
      answer(!unknown, unknown ? "a task is not recorded yet" : "");
    } catch (err) {
      if (!this.stopping) this.log.warn({ err, endpointId }, "could not record results sent as a request");
      answer(false, `could not record: ${(err as Error).message}`);
    }
  }

  /**
   * Whether a request names the endpoint's agent's own inbox as its reply subject; if not, it is
   * not answered (logged at most every 10 s: whoever does it can do it fast).
   */
  private repliesToAgent(endpointId: string, msg: BusMessage): boolean {
    const inbox = this.isolated ? `${agentInboxPrefix(endpointId)}.` : "_INBOX";
    if (msg.reply?.startsWith(inbox)) return true;
    this.foreignReplies++;
    if (Date.now() - this.foreignLoggedAt > 10_000) {
      this.foreignLoggedAt = Date.now();
      this.log.warn(
        { endpointId, subject: msg.subject, reply: msg.reply?.slice(0, 200), count: this.foreignReplies },
        "agent requests with a foreign reply subject dropped",
      );
      this.foreignReplies = 0;
    }
    return false;
  }

  /**
   * An agent's TaskCheck: each task's recorded state and attempts (only this endpoint's tasks;
   * another's, an unknown or an expired one reads as no record), and the endpoint's current task
   * consumer. Answered signed with the endpoint's key over the reply subject: the agent drops a
   * task on this answer, so nobody else's answer may count. No answer when the store cannot be
   * read: the agent then runs the tasks (a task run twice beats a task lost).
   */
  private async handleCheck(msg: BusMessage): Promise<void> {
    const endpointId = msg.subject.slice(Bus.taskCheckSubject("").length);
    if (!this.repliesToAgent(endpointId, msg)) return;
    if (!this.fromAgent(endpointId, msg, this.droppedChecks) || this.stopping) return;
    let check: TaskCheck;
    try {
      check = TaskCheck.decode(msg.data);
    } catch (err) {
      this.log.warn({ endpointId, err: (err as Error).message }, "undecodable task check dropped");
      return;
    }
    try {
      const [tasks, current] = await Promise.all([
        mapLimit(check.taskIds.slice(0, MAX_CHECKED_TASKS), 64, async (taskId): Promise<CheckedTask> => {
          const rec = await this.store.tasks.read(taskId);
          if (!rec || rec.value.endpointId !== endpointId)
            return { taskId, state: TaskState.TASK_STATE_UNSPECIFIED, attempts: 0 };
          return { taskId, state: rec.value.state, attempts: rec.value.attempts };
        }),
        check.consumer ? this.store.queues.consumerName(endpointId) : Promise.resolve(undefined),
      ]);
      const bytes = TaskCheckReply.encode({ tasks, currentConsumer: current ?? "" }).finish();
      msg.respond(bytes, { headers: this.keys.endpoint(endpointId).headers(msg.reply!, bytes) });
    } catch (err) {
      if (!this.stopping) this.log.warn({ err, endpointId }, "cannot answer a task check");
    }
  }

  private async run(messages: QueuedMessages): Promise<void> {
    const inflight = new Set<Promise<void>>();
    for await (const msg of messages) {
      const p = this.handle(msg).finally(() => inflight.delete(p));
      inflight.add(p);
      if (inflight.size >= 32) await Promise.race(inflight);
    }
    await Promise.all(inflight);
  }

  private async handle(msg: QueuedMessage): Promise<void> {
    const endpointId = msg.subject.slice(Bus.resultSubject("").length);
    // Dropped messages are acked, not terminated: an ack removes a message from the work queue,
    // where a terminated one stays stored (nats-server 2.9) until its max age. A flood of
    // forgeries must not fill the result stream.
    if (!this.fromAgent(endpointId, msg, this.droppedBatches)) {
      msg.ack();
      return;
    }
    let batch: TaskUpdateBatch;
    try {
      batch = TaskUpdateBatch.decode(msg.data);
    } catch (err) {
      this.log.warn({ err, endpointId, subject: msg.subject }, "undecodable result message dropped");
      msg.ack();
      return;
    }
    const keepAlive = setInterval(() => msg.working(), RESULT_ACK_WAIT_MS / 3);
    try {
      const unknown = await mapLimit(batch.updates, 64, (u) =>
        this.apply(endpointId, u, msg.info.deliveryCount),
      );
      if (unknown.some(Boolean)) {
        // A record not written yet (its create is still landing): try the batch again shortly.
        msg.nak(200);
        return;
      }
      msg.ack();
    } catch (err) {
      if (!this.stopping)
        this.log.warn({ err, endpointId }, "could not record results; they will be redelivered");
      msg.nak(1_000);
    } finally {
      clearInterval(keepAlive);
    }
  }

  /**
   * Records one update; returns true when the task is unknown and the batch should come back later
   * (`deliveryCount` 0: a request, whose batch the agent then sends through the stream).
   */
  private async apply(endpointId: string, update: TaskUpdate, deliveryCount: number): Promise<boolean> {
    const out = await this.store.tasks.update(
      update.taskId,
      (t) => applyTaskUpdate(t, update, endpointId),
      this.records,
    );
    if (!out) {
      if (deliveryCount < 5) return true;
      this.log.warn({ taskId: update.taskId, endpointId }, "update for an unknown or expired task dropped");
      return false;
    }
    if (!out.changed) {
      if (out.value.endpointId !== endpointId) {
        this.log.warn(
          { taskId: update.taskId, endpointId, owner: out.value.endpointId },
          "update from the wrong endpoint rejected",
        );
      }
      return false;
    }
    if (isTerminal(out.value.state)) {
      this.events.publish(out.value, out.bytes);
      this.log.debug({ taskId: update.taskId, endpointId, state: out.value.state }, "task finished");
    }
    return false;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.requests?.unsubscribe();
    this.checks?.unsubscribe();
    await this.messages?.close();
    await this.loop?.catch(() => undefined);
  }
}
