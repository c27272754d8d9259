import {
  AckPolicy,
  DeliverPolicy,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
} from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { headers as natsHeaders, nanos, type NatsConnection } from "@nats-io/transport-node";

import {
  Bus,
  FabricError,
  JetStreamPublisher,
  MAC_HEADER,
  type BrokerMessageKeys,
} from "../../common/index.js";
import { Endpoint, EndpointControl, FunctionMessage, Task } from "../../proto/index.js";
import type { BrokerConfig } from "../config.js";
import {
  connectNats,
  type BusMessage,
  type BusSubscription,
  type MessageBus,
  type QueuedMessages,
  type StoredMessage,
} from "./bus.js";
import { EndpointQueues } from "./endpoint-queues.js";
import { ensureConsumer, ensureStream, isClusterForming, isNotFound } from "./jetstream.js";
import { PayloadBuckets } from "./payload-buckets.js";
import { RecordBucket, kvRecordIo, type RecordIo } from "./records.js";
import { expiredView } from "./task-expiry.js";
import { openRevocationBucket, type RevocationBucket } from "./revocations.js";

/** How long the broker waits at start for a forming NATS cluster to take its streams. */
const CLUSTER_FORMING_WAIT_MS = 60_000;

/** How long the results consumer waits for a broker's ack before another replica gets the batch. */
export const RESULT_ACK_WAIT_MS = 5_000;

interface Buckets {
  readonly functions: KV;
  readonly endpoints: KV;
  readonly tasks: KV;
  readonly groups: KV;
  readonly endpointStatus: KV;
  readonly taskIndex: KV;
}

/**
 * The task index's pages (cloud/tasks/task-index.ts), read and written by key through the broker's
 * publisher: a read with its revision, a compare-and-set write, a create-only write, a plain put.
 */
export interface IndexIo {
  read(key: string): Promise<{ bytes: Uint8Array; revision: number } | null>;
  write(key: string, bytes: Uint8Array, revision: number): Promise<number>;
  create(key: string, bytes: Uint8Array): Promise<number>;
  put(key: string, bytes: Uint8Array): Promise<number>;
}

/**
 * {@link IndexIo} through a KV client (the broker's own goes through its publisher, with the same
 * semantics): what tools that fill or read an index from outside the broker use.
 */
export function kvIndexIo(kv: KV): IndexIo {
  return {
    read: async (key) => {
      const e = await kv.get(key);
      return e && e.operation === "PUT" ? { bytes: e.value, revision: e.revision } : null;
    },
    write: (key, bytes, revision) => kv.update(key, bytes, revision),
    create: (key, bytes) => kv.create(key, bytes),
    put: (key, bytes) => kv.put(key, bytes),
  };
}

/**
 * Everything the broker keeps lives in NATS JetStream; this class creates it (idempotently), opens
 * it, and is the broker's only way to it: records with revisions, payload objects, the endpoints'
 * queues, and the messages it sends and receives. A broker restart or a second replica opens the
 * same streams and buckets. Task and control messages for an agent are signed here, with its
 * endpoint's message key, as they leave.
 */
export class FabricStore implements MessageBus {
  /** Functions by id. */
  readonly functions: RecordBucket<FunctionMessage>;
  /** Endpoints by id. */
  readonly endpoints: RecordBucket<Endpoint>;
  /** Task records by id, read and written through the publisher (the hot path), not the KV client. */
  readonly tasks: RecordBucket<Task>;
  /** Each owner's task index (pages of entries; see cloud/tasks/task-index.ts). */
  readonly taskIndex: IndexIo;
  /** Each endpoint's task queue. */
  readonly queues: EndpointQueues;
  /** Each endpoint's large arguments and results. */
  readonly payloads: PayloadBuckets;
  /** The hot path's JetStream writes (task records, queue entries, record updates). */
  private readonly publisher: JetStreamPublisher;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    queues: EndpointQueues,
    payloads: PayloadBuckets,
    private readonly buckets: Buckets,
    private readonly config: BrokerConfig,
    private readonly keys: BrokerMessageKeys,
  ) {
    this.publisher = new JetStreamPublisher(nc);
    this.queues = queues;
    this.payloads = payloads;
    this.functions = new RecordBucket(kvRecordIo(buckets.functions), FunctionMessage);
    this.endpoints = new RecordBucket(kvRecordIo(buckets.endpoints), Endpoint);
    // Past its retention a record reads as `expired` (see expiredView); the bucket keeps it for
    // `expiredTaskAnswerSeconds` more.
    const retentionMs = config.resultRetentionSeconds * 1000;
    this.tasks = new RecordBucket(this.taskIo(), {
      encode: (t: Task) => Task.encode(t),
      decode: (bytes: Uint8Array) => expiredView(Task.decode(bytes), retentionMs),
    });
    this.taskIndex = this.indexIo();
  }

  private indexIo(): IndexIo {
    const stream = `KV_${Bus.taskIndexBucket}`;
    const subject = (key: string) => `$KV.${Bus.taskIndexBucket}.${key}`;
    return {
      read: async (key) => {
        const m = await this.publisher.getLast(stream, subject(key));
        return m && m.operation === "PUT" ? { bytes: m.data, revision: m.seq } : null;
      },
      write: (key, bytes, revision) =>
        this.publisher.publish(subject(key), bytes, { expectedLastSubjectSeq: revision }),
      create: (key, bytes) => this.publisher.publish(subject(key), bytes, { expectedLastSubjectSeq: 0 }),
      put: (key, bytes) => this.publisher.publish(subject(key), bytes),
    };
  }

  private taskIo(): RecordIo {
    const stream = `KV_${Bus.tasksBucket}`;
    const subject = (taskId: string) => `$KV.${Bus.tasksBucket}.${taskId}`;
    return {
      read: async (taskId) => {
        const m = await this.publisher.getLast(stream, subject(taskId));
        return m && m.operation === "PUT" ? { bytes: m.data, revision: m.seq } : null;
      },
      write: (taskId, bytes, revision) =>
        this.publisher.publish(subject(taskId), bytes, { expectedLastSubjectSeq: revision }),
      create: (taskId, bytes) =>
        this.publisher.publish(subject(taskId), bytes, { expectedLastSubjectSeq: 0 }),
      delete: (taskId) => this.buckets.tasks.delete(taskId),
      keys: () => this.buckets.tasks.keys(),
    };
  }

  /**
   * Connects to NATS with the broker's settings and opens the store. `keys` sign what the broker
   * sends agents; `onConnectionChange` hears of every disconnect and reconnect (messages may have
   * been missed meanwhile).
   */
  static async connect(
    config: BrokerConfig,
    keys: BrokerMessageKeys,
    opts: {
      name: string;
      onConnectionChange?: (status: "disconnect" | "reconnect") => void;
      /** The cluster refused a stream for want of peers; `open` tries again in `retryInMs`. */
      onClusterForming?: (message: string, retryInMs: number) => void;
    },
  ): Promise<FabricStore> {
    const nc = await connectNats(config.nats, {
      name: opts.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      // No stack captured per request: on a busy broker that was a quarter of the CPU.
      noAsyncTraces: true,
      // The broker's own task events reach its watchers directly (see TaskEventHub.publish), so
      // the server need not send them back. Nothing else it subscribes to is published by itself.
      noEcho: true,
    });
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === "disconnect" || s.type === "reconnect") opts.onConnectionChange?.(s.type);
      }
    })();
    // A cluster that is still forming (its nodes just started) has a metadata leader before it
    // knows every peer, and refuses a replicated stream meanwhile: wait for it, a minute at most.
    const deadline = Date.now() + CLUSTER_FORMING_WAIT_MS;
    for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
      try {
        return await FabricStore.open(nc, config, keys);
      } catch (err) {
        if (isClusterForming(err) && Date.now() + delay < deadline) {
          opts.onClusterForming?.((err as Error).message, delay);
          await new Promise((r) => setTimeout(r, delay));
          continue;
        }
        await nc.close().catch(() => undefined);
        throw err;
      }
    }
  }

  private static async open(
    nc: NatsConnection,
    config: BrokerConfig,
    keys: BrokerMessageKeys,
  ): Promise<FabricStore> {
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const replicas = config.nats.replicas;
    const retentionMs = config.resultRetentionSeconds * 1000;

    // Both streams are work queues on disk: a message goes once consumed, or at the retention.
    const workQueue = {
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: replicas,
      max_age: nanos(retentionMs),
    };
    await ensureStream(jsm, {
      ...workQueue,
      name: Bus.taskStream,
      subjects: [Bus.taskSubjects],
      // An endpoint's owner may look at what waits in its queue (EndpointQueues.peek).
      allow_direct: true,
      duplicate_window: nanos(Math.min(120_000, retentionMs)),
    });
    await ensureStream(jsm, { ...workQueue, name: Bus.resultStream, subjects: [Bus.resultSubjects] });
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
    const retainedKvOpts = { ...kvOpts, ttl: retentionMs };
    const taskKvOpts = { ...kvOpts, ttl: retentionMs + config.expiredTaskAnswerSeconds * 1000 };
    const buckets: Buckets = {
      functions: await kvm.create(Bus.functionsBucket, kvOpts),
      endpoints: await kvm.create(Bus.endpointsBucket, kvOpts),
      tasks: await kvm.create(Bus.tasksBucket, taskKvOpts),
      groups: await kvm.create(Bus.groupsBucket, retainedKvOpts),
      endpointStatus: await kvm.create(Bus.endpointStatusBucket, kvOpts),
      taskIndex: await kvm.create(Bus.taskIndexBucket, retainedKvOpts),
    };
    // A bucket made by an earlier broker keeps its age limit (the KV client does not change it):
    // a changed retention is applied here.
    for (const [bucket, ttlMs] of [
      [Bus.tasksBucket, taskKvOpts.ttl],
      [Bus.groupsBucket, retentionMs],
      [Bus.taskIndexBucket, retentionMs],
    ] as const) {
      const info = await jsm.streams.info(`KV_${bucket}`);
      if (info.config.max_age !== nanos(ttlMs))
        await jsm.streams.update(`KV_${bucket}`, { ...info.config, max_age: nanos(ttlMs) });
    }
    const queues = new EndpointQueues(js, jsm, config.taskAckWaitSeconds);
    const payloads = new PayloadBuckets(js, jsm, replicas, config.resultRetentionSeconds);
    return new FabricStore(nc, js, queues, payloads, buckets, config, keys);
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

  /** Creates a group record (fails with "wrong last sequence" if it exists); resolves its revision. */
  createGroupRecord(key: string, bytes: Uint8Array): Promise<number> {
    return this.publisher.publish(`$KV.${Bus.groupsBucket}.${key}`, bytes, { expectedLastSubjectSeq: 0 });
  }

  /** Writes a record of the groups bucket; resolves its revision. */
  putGroupRecord(key: string, bytes: Uint8Array): Promise<number> {
    return this.publisher.publish(`$KV.${Bus.groupsBucket}.${key}`, bytes);
  }

  /** A record of the groups bucket; undefined when absent, deleted or expired. */
  async readGroupRecord(key: string): Promise<Uint8Array | undefined> {
    const entry = await this.buckets.groups.get(key);
    return entry && entry.operation === "PUT" ? entry.value : undefined;
  }

  /** Keys of the groups bucket matching `filter` (NATS subject wildcards). */
  groupRecordKeys(filter: string): Promise<AsyncIterable<string>> {
    return this.buckets.groups.keys(filter);
  }

  /**
   * Queues a task message for an endpoint's agent, signed with the endpoint's key; `taskId` is its
   * message id (the stream drops a second one within its duplicate window). Resolves its sequence.
   */
  queueTask(
    endpointId: string,
    taskId: string,
    payload: Uint8Array,
    msgId: string = taskId,
  ): Promise<{ seq: number; duplicate: boolean }> {
    const subject = Bus.taskSubject(endpointId);
    return this.publisher.publishAck(subject, payload, {
      msgId,
      headers: { [MAC_HEADER]: this.keys.endpoint(endpointId).mac(subject, payload) },
    });
  }

  /** Removes a queued task message (by its stream sequence); false if it was gone already. */
  async unqueueTask(seq: number): Promise<boolean> {
    const jsm = await this.js.jetstreamManager();
    try {
      return await jsm.streams.deleteMessage(Bus.taskStream, seq, false);
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** Tells an endpoint's agent of cancellations or policy changes (best effort), signed with its key. */
  sendControl(endpointId: string, control: EndpointControl): void {
    const subject = Bus.controlSubject(endpointId);
    const payload = EndpointControl.encode(control).finish();
    this.nc.publish(subject, payload, { headers: this.keys.endpoint(endpointId).headers(subject, payload) });
  }

  /** The status an endpoint's agent last stored, with its headers (its MAC); undefined if none. */
  async lastEndpointStatus(endpointId: string): Promise<StoredMessage | undefined> {
    const subject = Bus.endpointStatusSubject(endpointId);
    // A direct get, which returns the stored headers (a KV get does not).
    const m = await this.publisher.getLast(`KV_${Bus.endpointStatusBucket}`, subject);
    if (!m || m.operation !== "PUT") return undefined;
    const h = m.headers;
    return { subject, data: m.data, headers: { get: (name) => h.last(name) } };
  }

  async deleteEndpointStatus(endpointId: string): Promise<void> {
    await this.buckets.endpointStatus.delete(endpointId);
  }

  /**
   * Deletes the payload buckets of deleted endpoints once their objects have all expired (see
   * {@link PayloadBuckets.sweep}); returns how many.
   */
  sweepPayloadBuckets(): Promise<number> {
    return this.payloads.sweep(
      async (endpointId) => (await this.buckets.endpoints.get(endpointId))?.operation === "PUT",
    );
  }

  /** The agents' result batches from the results consumer every replica shares, `maxMessages` at a time. */
  async consumeResults(maxMessages: number): Promise<QueuedMessages> {
    const consumer = await this.js.consumers.get(Bus.resultStream, Bus.resultConsumer);
    return consumer.consume({ max_messages: maxMessages });
  }

  publish(subject: string, payload: Uint8Array, headers?: Readonly<Record<string, string>>): void {
    if (!headers) {
      this.nc.publish(subject, payload);
      return;
    }
    const h = natsHeaders();
    for (const k in headers) h.set(k, headers[k]!);
    this.nc.publish(subject, payload, { headers: h });
  }

  subscribe(
    subject: string,
    onMessage: (msg: BusMessage) => void,
    opts: { queue?: string; onError?: (err: Error) => void } = {},
  ): BusSubscription {
    return this.nc.subscribe(subject, {
      ...(opts.queue !== undefined ? { queue: opts.queue } : {}),
      callback: (err, msg) => {
        if (err) opts.onError?.(err);
        else onMessage(msg);
      },
    });
  }

  /** The bucket of revoked token ids, created if it does not exist. */
  revocations(): Promise<RevocationBucket> {
    return openRevocationBucket(this.nc, this.config.nats.replicas);
  }

  /**
   * Compares `mine` with the key check value the first broker on this NATS left (leaving `mine`
   * if none is there): false when another broker left a different one.
   */
  async matchesKeyCheck(mine: Uint8Array): Promise<boolean> {
    const kv = await new Kvm(this.js).create(Bus.brokersBucket, {
      replicas: this.config.nats.replicas,
      history: 1,
      storage: StorageType.File,
    });
    try {
      await kv.create("key-check", mine);
      return true;
    } catch {
      // Someone left one already: compare.
    }
    const theirs = await kv.get("key-check");
    return !theirs || Buffer.compare(Buffer.from(theirs.value), Buffer.from(mine)) === 0;
  }

  /** Stops the publisher (what still waits for an acknowledgement fails), then drains the connection. */
  async close(): Promise<void> {
    this.publisher.close();
    await this.nc.drain().catch(() => undefined);
  }
}
