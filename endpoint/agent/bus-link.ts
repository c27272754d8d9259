/**
 * The agent's NATS connection and what rides on it besides the task consumer: the MAC checked on
 * every message from a broker and put on every message to one, the result path (batched updates,
 * sent to a broker directly or through the result stream), the payload object store and the
 * status subject.
 */
import { setTimeout as sleep } from "node:timers/promises";

import { jetstream } from "@nats-io/jetstream";
import type { JetStreamClient } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import type { ObjectStore } from "@nats-io/obj";
import { connect, jwtAuthenticator } from "@nats-io/transport-node";
import type { Msg, MsgHdrs, NatsConnection } from "@nats-io/transport-node";

import {
  type Logger,
  DropLog,
  MAC_HEADER,
  MessageKey,
  natsTlsOption,
  UPDATE_OVERHEAD_BYTES,
  inlineLimitFor,
} from "../../common/index.js";
import { TaskCheck, TaskCheckReply, TaskUpdateBatchReply } from "../../proto/index.js";
import type { BusConnectInfo, TaskUpdate } from "../../proto/index.js";
import type { EndpointConfig } from "../config.js";
import { ObjectReader } from "./object-reader.js";
import type { BrokerSubject } from "./task-intake.js";
import type { PayloadStore, UpdateSink } from "./task-tracker.js";
import { UpdatePublisher } from "./update-publisher.js";

/**
 * Small batches of updates go to a broker directly, as a request: at most `maxBatch` updates,
 * recorded within `timeoutMs`; larger batches, and those no broker answers in time, go through
 * the result stream.
 */
const DIRECT_UPDATES = { maxBatch: 16, timeoutMs: 2_000 } as const;

/** How long the agent waits for a broker's answer to a task check before it runs the tasks anyway. */
const CHECK_TIMEOUT_MS = 2_000;

/** Options and callbacks of a {@link BusLink}. */
export interface BusLinkOptions {
  /** What ConnectEndpoint returned: servers, credentials, subjects, the message key. */
  readonly bus: BusConnectInfo;
  readonly endpointId: string;
  readonly config: EndpointConfig;
  readonly log: Logger;
  noteError(message: string): void;
  /** The link went down (it reconnects by itself). */
  onDisconnect?(): void;
  /** The link came back after a disconnect (what went wrong is over). */
  onReconnect(): void;
}

/** The NATS connection: signing, checking, results, payloads and status. */
export class BusLink implements UpdateSink, PayloadStore {
  /**
   * Key of this endpoint's messages, from ConnectEndpoint: only task and control messages a broker
   * signed with it are run or obeyed, and the agent signs its own (result batches, status) with
   * it, as brokers believe nothing else from this endpoint. Undefined: the broker does not sign
   * (older), nor check.
   */
  private readonly messageKey: MessageKey | undefined;
  private readonly dropped: Record<BrokerSubject, DropLog>;
  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private objects: ObjectStore | undefined;
  private objectReader: ObjectReader | undefined;
  private publisher: UpdatePublisher | undefined;
  private inline: number;

  constructor(private readonly o: BusLinkOptions) {
    if (o.bus.messageKey.length > 0) {
      this.messageKey = new MessageKey(o.bus.messageKey);
    } else {
      o.log.warn(
        "the broker does not sign its task and control messages (an older broker): they are accepted unverified",
      );
    }
    this.dropped = {
      task: new DropLog(o.log, "task message"),
      control: new DropLog(o.log, "control message"),
    };
    this.inline = o.config.limits.inlinePayloadBytes;
  }

  /** Connects to the servers ConnectEndpoint named, and starts the update publisher. */
  async connect(): Promise<void> {
    const { bus, endpointId, config, log } = this.o;
    const nc = await connect({
      servers: bus.servers,
      ...natsTlsOption(bus.servers, config.natsTls, "natsTls"),
      name: `fabric-endpoint-${endpointId}`,
      maxReconnectAttempts: -1,
      // Back within a quarter second of the server (the client's default waits 2 s between tries);
      // the jitter keeps a site's agents from all knocking at once.
      reconnectTimeWait: 250,
      reconnectJitter: 250,
      // No stack captured per request (ack, publish): it costs more than the request itself.
      noAsyncTraces: true,
      // A silent network hole is noticed within ~30 s (the client default is minutes).
      pingInterval: 10_000,
      maxPingOut: 3,
      ...(bus.userJwt
        ? { authenticator: jwtAuthenticator(bus.userJwt, new TextEncoder().encode(bus.userSeed)) }
        : {}),
      ...(bus.inboxPrefix ? { inboxPrefix: bus.inboxPrefix } : {}),
    });
    this.nc = nc;
    void this.watch(nc);
    const js = jetstream(nc);
    this.js = js;
    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    this.inline = inlineLimitFor(config.limits.inlinePayloadBytes, maxPayload, UPDATE_OVERHEAD_BYTES);
    this.publisher = new UpdatePublisher({
      endpointId,
      log: log.child({ component: "endpoint.updates" }),
      maxBytes: Math.max(4096, maxPayload - 4096),
      publish: async (bytes, count) => {
        // A few updates (a quiet endpoint: latency matters) go to a broker directly. Under load,
        // batches are large and the stream's quick PubAck keeps them flowing while brokers record
        // earlier ones (a request would hold the next batch until this one is recorded).
        if (count <= DIRECT_UPDATES.maxBatch && (await this.sendUpdatesDirectly(bytes))) return;
        await js.publish(bus.resultSubject, bytes, { headers: this.signed(bus.resultSubject, bytes) });
      },
    });
  }

  /** The connection, once connected. */
  get connection(): NatsConnection {
    return this.nc!;
  }

  get jetstream(): JetStreamClient {
    return this.js!;
  }

  /** Whether the connection is up (or reconnecting), not closed. */
  get open(): boolean {
    return this.nc !== undefined && !this.nc.isClosed();
  }

  /** Largest result that travels inline: the config's limit, under the server's max_payload. */
  get inlineLimit(): number {
    return this.inline;
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") {
        this.o.onDisconnect?.();
        this.o.noteError(`disconnected from NATS ${s.server}`);
        this.o.log.warn({ server: s.server }, "disconnected from NATS; reconnecting");
      } else if (s.type === "reconnect") {
        this.o.log.info({ server: s.server }, "reconnected to NATS");
        this.o.onReconnect();
      } else if (s.type === "error") {
        this.o.noteError(`NATS: ${s.error.message}`);
        this.o.log.warn({ err: s.error.message }, "NATS error");
      }
    }
  }

  /**
   * Headers carrying the MAC of a message this agent sends (none when the broker gave no key). The
   * MAC covers the exact subject: a batch sent as a request and then to the stream is signed twice.
   */
  private signed(subject: string, data: Uint8Array): MsgHdrs | undefined {
    return this.messageKey?.headers(subject, data);
  }

  /**
   * Whether a message on this endpoint's subjects was signed by a broker; if not, it is logged
   * (rate-limited) as dropped and the caller drops it.
   */
  fromBroker(m: Pick<Msg, "subject" | "data" | "headers">, on: BrokerSubject): boolean {
    if (!this.messageKey) return true;
    const verdict = this.messageKey.check(m.subject, m.data, m.headers?.get(MAC_HEADER));
    if (verdict === "ok") return true;
    this.dropped[on].drop(m.subject, verdict);
    return false;
  }

  // ---------------------------------------------------------------- results

  /** Queues an update; `onPublished` runs once a broker or the result stream has stored it. */
  add(update: TaskUpdate, onPublished?: () => void): void {
    this.publisher!.add(update, onPublished);
  }

  /** Retries a failed publish of updates now rather than after its backoff (the link came back). */
  retryUpdatesNow(): void {
    this.publisher?.retryNow();
  }

  /** Why the last publish of updates failed ("" when the last one worked). */
  get updatesError(): string {
    return this.publisher?.lastError ?? "";
  }

  /**
   * Publishes every queued update, waiting at most `timeoutMs`; if they cannot all go, says so and
   * gives up on them (their tasks run again).
   */
  async flushUpdates(timeoutMs: number): Promise<void> {
    const publisher = this.publisher;
    if (!publisher) return;
    const flushed = await Promise.race([
      publisher.flush().then(() => true),
      sleep(timeoutMs).then(() => false),
    ]);
    if (!flushed) {
      this.o.log.warn(
        { pending: publisher.pending },
        "could not publish every update before stopping; those tasks will run again",
      );
      publisher.abandon();
    }
  }

  /**
   * Sends a TaskUpdateBatch to the brokers as a request; true once one says every update is
   * recorded. Otherwise (no broker, a timeout, a task not recorded yet) the caller publishes the
   * batch to the durable result stream, which is slower by a stream write and a delivery.
   */
  private async sendUpdatesDirectly(bytes: Uint8Array): Promise<boolean> {
    const subject = this.o.bus.resultRequestSubject;
    if (!subject || !this.nc || this.nc.isClosed()) return false;
    try {
      const reply = await this.nc.request(subject, bytes, {
        timeout: DIRECT_UPDATES.timeoutMs,
        headers: this.signed(subject, bytes),
      });
      const { recorded, reason } = TaskUpdateBatchReply.decode(reply.data);
      if (!recorded)
        this.o.log.debug({ reason }, "a broker did not record updates sent directly; using the stream");
      return recorded;
    } catch (err) {
      this.o.log.debug({ err: (err as Error).message }, "updates not sent directly; using the stream");
      return false;
    }
  }

  /**
   * Asks the brokers what is recorded of these tasks (TaskCheck), and which task consumer is the
   * endpoint's now. Undefined when the broker is older (no check subject), no broker answers within
   * `timeoutMs`, or the answer is not signed with this endpoint's key.
   */
  async checkTasks(
    taskIds: readonly string[],
    timeoutMs = CHECK_TIMEOUT_MS,
  ): Promise<TaskCheckReply | undefined> {
    const subject = this.o.bus.taskCheckSubject;
    if (!subject || !this.nc || this.nc.isClosed()) return undefined;
    const bytes = TaskCheck.encode({ taskIds: [...taskIds], consumer: this.o.bus.taskConsumer }).finish();
    try {
      const reply = await this.nc.request(subject, bytes, {
        timeout: timeoutMs,
        headers: this.signed(subject, bytes),
      });
      if (
        this.messageKey &&
        this.messageKey.check(reply.subject, reply.data, reply.headers?.get(MAC_HEADER)) !== "ok"
      ) {
        this.o.log.warn(
          { subject: reply.subject },
          "a task check's answer is not signed by a broker; ignored",
        );
        return undefined;
      }
      return TaskCheckReply.decode(reply.data);
    } catch (err) {
      this.o.log.debug({ err: (err as Error).message, tasks: taskIds.length }, "no answer to a task check");
      return undefined;
    }
  }

  // ---------------------------------------------------------------- payloads and status

  /**
   * Reads a large argument with message gets: the object-store client's reads create consumers,
   * which the agent's NATS user may not (a consumer can deliver to any subject).
   */
  read(objectRef: string): Promise<Uint8Array | null> {
    this.objectReader ??= new ObjectReader(this.nc!, this.o.bus.payloadBucket);
    return this.objectReader.read(objectRef);
  }

  /** Writes a large result to the payload bucket. */
  async write(name: string, bytes: Uint8Array): Promise<void> {
    // Opened without a stream-info check: per-endpoint NATS users may not be allowed that call.
    this.objects ??= await new Objm(this.nc!).open(this.o.bus.payloadBucket, false);
    await this.objects.putBlob({ name }, bytes);
  }

  /**
   * Publishes an encoded EndpointStatus on the status bucket's subject: a publish, not a KV put,
   * since a put carries no headers and the broker believes only a status with this endpoint's MAC.
   */
  async publishStatus(bytes: Uint8Array): Promise<void> {
    const subject = this.o.bus.statusSubject;
    await this.js!.publish(subject, bytes, { headers: this.signed(subject, bytes) });
  }

  /** Drains the connection (what is in flight is sent first). */
  async drain(): Promise<void> {
    if (this.nc && !this.nc.isClosed()) {
      await this.nc.drain().catch((err: unknown) => this.o.log.debug({ err }, "drain failed"));
    }
  }
}
