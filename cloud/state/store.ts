import { randomBytes } from "node:crypto";

import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type ConsumerInfo,
  type JetStreamClient,
  type JetStreamManager,
} from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { Objm, type ObjectStore } from "@nats-io/obj";
import { nanos, type NatsConnection } from "@nats-io/transport-node";

import { Bus } from "../../common/bus-layout.js";
import { FabricError } from "../../common/errors.js";
import { JetStreamPublisher } from "../../common/js-publisher.js";
import { MAC_HEADER, type MessageKey } from "../../common/message-auth.js";
import { Task, TaskMessage } from "../../proto/index.js";
import type { BrokerConfig } from "../config.js";
import { updateRecord, type RecordIo } from "./records.js";
import { failTask } from "../tasks/task-transitions.js";

/** How long the results consumer waits for a broker's ack before another replica gets the batch. */
export const RESULT_ACK_WAIT_MS = 5_000;

/**
 * Everything the broker keeps lives in NATS JetStream; this class creates (idempotently) and
 * opens it. A broker restart or a second replica opens the same streams and buckets.
 */
export class FabricStore {
  private constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    readonly functions: KV,
    readonly endpoints: KV,
    readonly tasks: KV,
    readonly groups: KV,
    readonly endpointStatus: KV,
    private readonly config: BrokerConfig,
  ) {
    this.publisher = new JetStreamPublisher(nc);
  }

  /** The hot path's JetStream writes (task records, queue entries, record updates). */
  readonly publisher: JetStreamPublisher;

  /** Task records read and written through the publisher (the hot path), not the KV client. */
  readonly taskIo: RecordIo = {
    read: async (taskId) => {
      const m = await this.publisher.getLast(`KV_${Bus.tasksBucket}`, `$KV.${Bus.tasksBucket}.${taskId}`);
      return m && m.operation === "PUT" ? { bytes: m.data, revision: m.seq } : null;
    },
    write: (taskId, bytes, revision) => this.updateTaskRecord(taskId, bytes, revision),
  };

  /** Creates a task record (fails with "wrong last sequence" if it exists); resolves its revision. */
  createTaskRecord(taskId: string, bytes: Uint8Array): Promise<number> {
    return this.publisher.publish(`$KV.${Bus.tasksBucket}.${taskId}`, bytes, { expectedLastSubjectSeq: 0 });
  }

  /** Creates a group record (fails with "wrong last sequence" if it exists); resolves its revision. */
  createGroupRecord(key: string, bytes: Uint8Array): Promise<number> {
    return this.publisher.publish(`$KV.${Bus.groupsBucket}.${key}`, bytes, { expectedLastSubjectSeq: 0 });
  }

  /** Writes a record of the groups bucket; resolves its revision. */
  putGroupRecord(key: string, bytes: Uint8Array): Promise<number> {
    return this.publisher.publish(`$KV.${Bus.groupsBucket}.${key}`, bytes);
  }

  /** Replaces a task record at `revision` (compare-and-set); resolves the new revision. */
  updateTaskRecord(taskId: string, bytes: Uint8Array, revision: number): Promise<number> {
    return this.publisher.publish(`$KV.${Bus.tasksBucket}.${taskId}`, bytes, {
      expectedLastSubjectSeq: revision,
    });
  }

  /**
   * The largest message the NATS server takes (its `max_payload`, 1 MiB by default): every record
   * and queue entry must fit in one.
   */
  get maxMessageBytes(): number {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }

  /**
   * Throws INVALID_ARGUMENT when a record of `bytes` would not fit in a NATS message with
   * `reserve` bytes to spare; `fix` tells the caller what to change.
   */
  assertFits(bytes: number, reserve: number, what: string, fix: string): void {
    const limit = this.maxMessageBytes - reserve;
    if (bytes > limit) {
      throw new FabricError(
        "INVALID_ARGUMENT",
        `${what} would be ${bytes} bytes, over the ${limit} bytes the bus can carry (its max_payload less room for a task's arguments): ${fix}`,
      );
    }
  }

  /** Stops the publisher (what still waits for an acknowledgement fails). */
  close(): void {
    this.publisher.close();
  }

  static async open(nc: NatsConnection, config: BrokerConfig): Promise<FabricStore> {
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const replicas = config.nats.replicas;
    const retentionNs = nanos(config.resultRetentionSeconds * 1000);

    await ensureStream(jsm, {
      name: Bus.taskStream,
      subjects: [Bus.taskSubjects],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: replicas,
      max_age: retentionNs,
      duplicate_window: nanos(Math.min(120_000, config.resultRetentionSeconds * 1000)),
    });
    await ensureStream(jsm, {
      name: Bus.resultStream,
      subjects: [Bus.resultSubjects],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: replicas,
      max_age: retentionNs,
    });
    await ensureConsumer(jsm, Bus.resultStream, {
      durable_name: Bus.resultConsumer,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      // Short: when a broker dies, the batches it held go to another replica within seconds.
      // Handlers extend it while they work (see ResultIngest).
      ack_wait: nanos(RESULT_ACK_WAIT_MS),
      max_ack_pending: 20_000,
      max_deliver: -1,
    });

    const kvm = new Kvm(js);
    const kvOpts = { replicas, history: 1, storage: StorageType.File } as const;
    const functions = await kvm.create(Bus.functionsBucket, kvOpts);
    const endpoints = await kvm.create(Bus.endpointsBucket, kvOpts);
    const tasks = await kvm.create(Bus.tasksBucket, { ...kvOpts, ttl: config.resultRetentionSeconds * 1000 });
    const groups = await kvm.create(Bus.groupsBucket, {
      ...kvOpts,
      ttl: config.resultRetentionSeconds * 1000,
    });
    const endpointStatus = await kvm.create(Bus.endpointStatusBucket, kvOpts);
    return new FabricStore(nc, js, jsm, functions, endpoints, tasks, groups, endpointStatus, config);
  }

  /** Open payload buckets by endpoint id. */
  private readonly payloadStores = new Map<string, Promise<ObjectStore>>();

  /**
   * The endpoint's payload bucket (large arguments and results), created if it does not exist:
   * one per endpoint, so that an agent's NATS user can be allowed its own bucket's stream and no
   * other. Objects expire with the results' retention.
   */
  payloads(endpointId: string): Promise<ObjectStore> {
    let p = this.payloadStores.get(endpointId);
    if (!p) {
      const created = new Objm(this.js).create(Bus.payloadBucket(endpointId), {
        replicas: this.config.nats.replicas,
        storage: StorageType.File,
        ttl: nanos(this.config.resultRetentionSeconds * 1000),
      });
      p = created;
      this.payloadStores.set(endpointId, p);
      created.catch(() => {
        if (this.payloadStores.get(endpointId) === created) this.payloadStores.delete(endpointId);
      });
    }
    return p;
  }

  /**
   * Deletes the payload buckets whose endpoint is gone and whose objects have all expired (a
   * deleted endpoint's finished tasks keep their large results until the retention ends).
   * Returns how many it deleted. Safe to run on several broker replicas at once.
   */
  async sweepPayloadBuckets(): Promise<number> {
    const prefix = `OBJ_${Bus.payloadBucketPrefix}`;
    let deleted = 0;
    for await (const si of this.jsm.streams.list()) {
      const name = si.config.name;
      if (!name.startsWith(prefix) || si.state.messages > 0) continue;
      const endpointId = name.slice(prefix.length);
      if ((await this.endpoints.get(endpointId))?.operation === "PUT") continue;
      try {
        await this.jsm.streams.delete(name);
        this.payloadStores.delete(endpointId);
        deleted++;
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    return deleted;
  }

  /** Last known task-consumer name of each endpoint (names change on every agent connection). */
  private readonly consumerNames = new Map<string, string>();

  /** The name of the endpoint's task consumer, whatever generation it is, or undefined. */
  async endpointConsumerName(endpointId: string): Promise<string | undefined> {
    return (await this.endpointConsumerInfo(endpointId))?.name;
  }

  private async endpointConsumerInfo(endpointId: string): Promise<ConsumerInfo | undefined> {
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
  async ensureEndpointConsumer(endpointId: string, reset?: { credentialId: string }): Promise<string> {
    let name: string;
    if (reset) {
      await this.deleteEndpointConsumer(endpointId);
      name = Bus.agentTaskConsumer(endpointId, reset.credentialId, randomBytes(6).toString("hex"));
    } else {
      const existing = await this.endpointConsumerName(endpointId);
      if (existing) return existing;
      name = Bus.taskConsumer(endpointId);
    }
    await ensureConsumer(this.jsm, Bus.taskStream, {
      durable_name: name,
      filter_subject: Bus.taskSubject(endpointId),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(this.config.taskAckWaitSeconds * 1000),
      max_ack_pending: 100_000,
      max_deliver: -1,
    });
    this.consumerNames.set(endpointId, name);
    return name;
  }

  /** Deletes one generation of the endpoint's task consumer, if it still exists. */
  async deleteEndpointConsumerNamed(endpointId: string, name: string): Promise<void> {
    try {
      await this.jsm.consumers.delete(Bus.taskStream, name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (this.consumerNames.get(endpointId) === name) this.consumerNames.delete(endpointId);
  }

  /** Deletes the endpoint's task consumer (every generation of it). */
  async deleteEndpointConsumer(endpointId: string): Promise<void> {
    for (let i = 0; i < 10; i++) {
      const name = await this.endpointConsumerName(endpointId);
      if (!name) return;
      try {
        await this.jsm.consumers.delete(Bus.taskStream, name);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      this.consumerNames.delete(endpointId);
    }
  }

  /**
   * Fails every task still queued for a deleted endpoint (reason `endpoint_deleted`) and removes
   * its queue entries, calling `announce` with each task it failed. Call after the endpoint's own
   * consumer is gone. Returns how many failed. Only task messages signed with the endpoint's
   * message `key` count, and only for tasks of that endpoint: a message someone else slipped into
   * the queue cannot fail another task.
   */
  async failQueuedTasks(
    endpointId: string,
    key: MessageKey,
    actor: string,
    announce: (task: Task, encoded?: Uint8Array) => void,
  ): Promise<number> {
    const drain = `drain-${endpointId}`;
    await ensureConsumer(this.jsm, Bus.taskStream, {
      durable_name: drain,
      filter_subject: Bus.taskSubject(endpointId),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(30_000),
    });
    let failed = 0;
    try {
      const consumer = await this.js.consumers.get(Bus.taskStream, drain);
      for (;;) {
        const { num_pending } = await consumer.info();
        if (num_pending === 0) break;
        const batch = await consumer.fetch({ max_messages: 256, expires: 2_000 });
        for await (const msg of batch) {
          let taskId = "";
          try {
            if (key.check(msg.subject, msg.data, msg.headers?.get(MAC_HEADER)) === "ok")
              taskId = TaskMessage.decode(msg.data).taskId;
          } catch {
            // not a task: just drop it
          }
          if (taskId) {
            const error = {
              code: "FAILED_PRECONDITION",
              message: `endpoint ${endpointId} was deleted before the task ran; submit it to another endpoint`,
              reason: "endpoint_deleted",
              remote: undefined,
              shell: undefined,
            };
            const out = await updateRecord(this.taskIo, taskId, Task, (t) =>
              t.endpointId === endpointId ? failTask(t, error, actor) : null,
            );
            if (out?.changed) {
              failed++;
              announce(out.value, out.bytes);
            }
          }
          msg.ack();
        }
      }
    } finally {
      await this.jsm.consumers.delete(Bus.taskStream, drain).catch(() => undefined);
    }
    return failed;
  }

  /** Tasks queued for an endpoint that its agent has not taken yet. */
  async queuedTasks(endpointId: string): Promise<number> {
    return (await this.endpointConsumerInfo(endpointId))?.num_pending ?? 0;
  }
}

type StreamCfg = Parameters<JetStreamManager["streams"]["add"]>[0];
type ConsumerCfg = Parameters<JetStreamManager["consumers"]["add"]>[1];

async function ensureStream(jsm: JetStreamManager, cfg: StreamCfg): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
    const { name, ...rest } = cfg;
    await jsm.streams.update(name, rest);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.streams.add(cfg);
  }
}

async function ensureConsumer(jsm: JetStreamManager, stream: string, cfg: ConsumerCfg): Promise<void> {
  const name = cfg.durable_name ?? "";
  try {
    const info = await jsm.consumers.info(stream, name);
    if (cfg.ack_wait !== undefined && info.config.ack_wait !== cfg.ack_wait) {
      await jsm.consumers.update(stream, name, { ack_wait: cfg.ack_wait });
    }
  } catch (err) {
    if (!isNotFound(err)) throw err;
    try {
      await jsm.consumers.add(stream, cfg);
    } catch (addErr) {
      // Two replicas raced to create it: fine if it now exists.
      await jsm.consumers.info(stream, name).catch(() => {
        throw addErr;
      });
    }
  }
}

/** Whether a JetStream API error means "no such stream/consumer/message". */
export function isNotFound(err: unknown): boolean {
  if (err instanceof JetStreamApiError && (err.status === 404 || err.code === 10059 || err.code === 10014))
    return true;
  const e = err as { code?: unknown; message?: unknown };
  return (
    e.code === 404 || e.code === "404" || (typeof e.message === "string" && /not found/i.test(e.message))
  );
}
