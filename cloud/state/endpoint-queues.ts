import { randomBytes } from "node:crypto";

import {
  AckPolicy,
  DeliverPolicy,
  type ConsumerInfo,
  type JetStreamClient,
  type JetStreamManager,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";

import { Bus } from "../../common/index.js";
import type { QueuedMessage } from "./bus.js";
import { ensureConsumer, isNotFound } from "./jetstream.js";

/**
 * Each endpoint's task queue: its durable consumer on the task stream (one per endpoint, renamed
 * on every agent connection) and what waits in it.
 */
export class EndpointQueues {
  /** Last known task-consumer name of each endpoint (names change on every agent connection). */
  private readonly consumerNames = new Map<string, string>();

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    /** How long an agent may hold a task un-acked before it is delivered again. */
    private readonly ackWaitSeconds: number,
  ) {}

  /** The name of the endpoint's task consumer, whatever generation it is, or undefined. */
  async consumerName(endpointId: string): Promise<string | undefined> {
    return (await this.consumerInfo(endpointId))?.name;
  }

  private async consumerInfo(endpointId: string): Promise<ConsumerInfo | undefined> {
    const known = this.consumerNames.get(endpointId) ?? Bus.taskConsumer(endpointId);
    try {
      return await this.jsm.consumers.info(Bus.taskStream, known);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const subject = Bus.taskSubject(endpointId);
    for await (const ci of this.jsm.consumers.list(Bus.taskStream)) {
      if (ci.config.filter_subject === subject) {
        this.consumerNames.set(endpointId, ci.name);
        return ci;
      }
    }
    this.consumerNames.delete(endpointId);
    return undefined;
  }

  /**
   * Creates an endpoint's durable task consumer if it has none; returns its name. With `reset`
   * (an agent connecting with credential `reset.credentialId`, or a credential revoked), deletes
   * the current one and creates one under a new name: un-acked tasks of a previous agent are
   * delivered again at once, and the previous agent, whose NATS user may use only the old name,
   * can never pull another task (last connection wins).
   */
  async ensureConsumer(endpointId: string, reset?: { credentialId: string }): Promise<string> {
    let name: string;
    if (reset) {
      await this.deleteConsumer(endpointId);
      name = Bus.agentTaskConsumer(endpointId, reset.credentialId, randomBytes(6).toString("hex"));
    } else {
      const existing = await this.consumerName(endpointId);
      if (existing) return existing;
      name = Bus.taskConsumer(endpointId);
    }
    await ensureConsumer(this.jsm, Bus.taskStream, {
      durable_name: name,
      filter_subject: Bus.taskSubject(endpointId),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(this.ackWaitSeconds * 1000),
      max_ack_pending: 100_000,
      max_deliver: -1,
    });
    this.consumerNames.set(endpointId, name);
    return name;
  }

  /** Deletes one generation of the endpoint's task consumer, if it still exists. */
  async deleteConsumerNamed(endpointId: string, name: string): Promise<void> {
    try {
      await this.jsm.consumers.delete(Bus.taskStream, name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (this.consumerNames.get(endpointId) === name) this.consumerNames.delete(endpointId);
  }

  /** Deletes the endpoint's task consumer (every generation of it). */
  async deleteConsumer(endpointId: string): Promise<void> {
    for (let i = 0; i < 10; i++) {
      const name = await this.consumerName(endpointId);
      if (!name) return;
      try {
        await this.jsm.consumers.delete(Bus.taskStream, name);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      this.consumerNames.delete(endpointId);
    }
  }

  /** Tasks queued for an endpoint that its agent has not taken yet. */
  async queued(endpointId: string): Promise<number> {
    return (await this.consumerInfo(endpointId))?.num_pending ?? 0;
  }

  /** How many of an endpoint's tasks wait for its agent, and how many it has taken and not acked. */
  async counts(endpointId: string): Promise<{ queued: number; taken: number }> {
    const ci = await this.consumerInfo(endpointId);
    return { queued: ci?.num_pending ?? 0, taken: ci?.num_ack_pending ?? 0 };
  }

  /**
   * The ids (message ids) of the first `limit` messages in an endpoint's queue, oldest first,
   * taken or not: one direct get each, the queue left as it is.
   */
  async peek(endpointId: string, limit: number): Promise<string[]> {
    const ids: string[] = [];
    let seq = 1;
    while (ids.length < limit) {
      const m = await this.jsm.direct.getMessage(Bus.taskStream, {
        seq,
        next_by_subj: Bus.taskSubject(endpointId),
      });
      if (!m) break;
      const id = m.header.get("Nats-Msg-Id");
      if (id) ids.push(id);
      seq = m.seq + 1;
    }
    return ids;
  }

  /**
   * Takes every message still queued for an endpoint out of its queue, calling `each` on each
   * (then acking it), through a consumer of its own. Call after the endpoint's own consumer is
   * gone (a deleted endpoint), or the two share the messages.
   */
  async drain(endpointId: string, each: (msg: QueuedMessage) => Promise<void>): Promise<void> {
    const drain = `drain-${endpointId}`;
    await ensureConsumer(this.jsm, Bus.taskStream, {
      durable_name: drain,
      filter_subject: Bus.taskSubject(endpointId),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(30_000),
    });
    try {
      const consumer = await this.js.consumers.get(Bus.taskStream, drain);
      for (;;) {
        const { num_pending } = await consumer.info();
        if (num_pending === 0) break;
        const batch = await consumer.fetch({ max_messages: 256, expires: 2_000 });
        for await (const msg of batch) {
          await each(msg);
          msg.ack();
        }
      }
    } finally {
      await this.jsm.consumers.delete(Bus.taskStream, drain).catch(() => undefined);
    }
  }
}
