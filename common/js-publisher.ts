import { JetStreamApiError } from "@nats-io/jetstream";
import {
  TimeoutError,
  createInbox,
  headers,
  type Msg,
  type NatsConnection,
  type MsgHdrs,
  type Subscription,
} from "@nats-io/transport-node";

/** Options of one JetStream publish. */
export interface PublishOptions {
  /** `Nats-Msg-Id`: the stream drops a second message with the same id within its window. */
  readonly msgId?: string;
  /** `Nats-Expected-Last-Subject-Sequence`: compare-and-set on the subject (0: must not exist). */
  readonly expectedLastSubjectSeq?: number;
  /** More headers to send (a broker's message MAC, see common/message-auth.ts). */
  readonly headers?: Readonly<Record<string, string>>;
}

interface Outgoing {
  readonly id: number;
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: MsgHdrs | undefined;
}

interface Pending {
  /** Settles the call with the server's answer (a PubAck, or a direct-get reply). */
  readonly onReply: (msg: Msg) => void;
  readonly reject: (err: Error) => void;
  readonly deadline: number;
  readonly message: Outgoing;
}

/** The last message on a subject, as a direct get returns it. */
export interface LastMessage {
  readonly data: Uint8Array;
  /** Its stream sequence (a KV entry's revision). */
  readonly seq: number;
  /** `KV-Operation` header: "DEL" or "PURGE" for a KV delete marker, else "PUT". */
  readonly operation: string;
  /** Its headers as stored (with the server's `Nats-*` ones): a MAC travels here. */
  readonly headers: MsgHdrs;
}

const EMPTY = new Uint8Array(0);

/** A stream without a leader (an election, a restart) answers "no responders": try again after this. */
const NO_RESPONDERS_RETRY_MS = 250;

interface PubAckJson {
  stream?: string;
  seq?: number;
  duplicate?: boolean;
  error?: { code: number; err_code?: number; description?: string };
}

/** How long after a reconnect an answer to a publish sent before it may still come. */
const LOST_ANSWER_GRACE_MS = 500;

/**
 * Publishes to JetStream streams and collects their acknowledgements on one wildcard inbox
 * subscription, with one timer for all of them. Same semantics as `js.publish()`, without the
 * request object, timer, promise wrapper and error (with a stack) that the client library
 * allocates per message: on a busy broker those were a fifth of its CPU. Reads the last message
 * of a subject (`kv.get()`'s direct get) the same way.
 *
 * Rejects with {@link JetStreamApiError} when the stream refuses the message (a failed
 * compare-and-set says "wrong last sequence"), and with a `TimeoutError` when no acknowledgement
 * came in time (the message may or may not have been stored).
 */
export class JetStreamPublisher {
  private readonly prefix: string;
  private readonly sub: Subscription;
  private readonly pending = new Map<number, Pending>();
  private readonly sweeper: NodeJS.Timeout;
  private next = 0;

  /**
   * @param inboxPrefix the connection's inbox prefix, if it was given one (agents' NATS users may
   *   subscribe only below theirs)
   */
  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 10_000,
    inboxPrefix?: string,
  ) {
    this.prefix = createInbox(inboxPrefix);
    this.sub = nc.subscribe(`${this.prefix}.*`, { callback: (err, msg) => this.onAck(err, msg) });
    this.sweeper = setInterval(() => this.expire(), Math.min(250, timeoutMs));
    this.sweeper.unref();
    void this.watch();
  }

  /**
   * After a reconnect (a restarted server, or another node of the cluster), the answers to what
   * was sent before may never come: that node is gone, or the message never reached it. Those
   * publishes fail as timed out `LOST_ANSWER_GRACE_MS` after the reconnect (an answer already
   * on its way still counts) instead of at their deadline, up to 10 s later, which held whole
   * batches of results back after a node was lost.
   */
  private async watch(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type !== "reconnect") continue;
      const before = [...this.pending.keys()];
      setTimeout(() => {
        for (const id of before) {
          const p = this.pending.get(id);
          if (!p) continue;
          this.pending.delete(id);
          p.reject(new TimeoutError());
        }
      }, LOST_ANSWER_GRACE_MS).unref();
    }
  }

  /** Publishes `data` on `subject`; resolves with the message's stream sequence. */
  publish(subject: string, data: Uint8Array, opts: PublishOptions = {}): Promise<number> {
    return this.request(subject, data, opts, (ack) => ack.seq ?? 0);
  }

  /**
   * Publishes like {@link publish}, and says whether the stream dropped the message as a
   * duplicate of one with the same `msgId` within its window (`seq` is then the earlier one's).
   */
  publishAck(
    subject: string,
    data: Uint8Array,
    opts: PublishOptions = {},
  ): Promise<{ seq: number; duplicate: boolean }> {
    return this.request(subject, data, opts, (ack) => ({
      seq: ack.seq ?? 0,
      duplicate: ack.duplicate === true,
    }));
  }

  private request<T>(
    subject: string,
    data: Uint8Array,
    opts: PublishOptions,
    answer: (ack: PubAckJson) => T,
  ): Promise<T> {
    const id = ++this.next;
    let h: MsgHdrs | undefined;
    if (opts.msgId !== undefined || opts.expectedLastSubjectSeq !== undefined || opts.headers) {
      h = headers();
      if (opts.msgId !== undefined) h.set("Nats-Msg-Id", opts.msgId);
      if (opts.expectedLastSubjectSeq !== undefined)
        h.set("Nats-Expected-Last-Subject-Sequence", String(opts.expectedLastSubjectSeq));
      if (opts.headers) for (const k in opts.headers) h.set(k, opts.headers[k]!);
    }
    return new Promise<T>((resolve, reject) => {
      const message = { id, subject, data, headers: h };
      const onReply = (msg: Msg) => {
        let ack: PubAckJson;
        try {
          ack = msg.json<PubAckJson>();
        } catch (e) {
          reject(new Error(`undecodable JetStream acknowledgement: ${(e as Error).message}`));
          return;
        }
        if (ack.error) {
          reject(
            new JetStreamApiError({
              code: ack.error.code,
              err_code: ack.error.err_code ?? 0,
              description: ack.error.description ?? "",
            }),
          );
        } else resolve(answer(ack));
      };
      this.pending.set(id, { onReply, reject, deadline: Date.now() + this.timeoutMs, message });
      this.send(message);
    });
  }

  /**
   * The last message on `subject` in `stream` (which must allow direct gets, as KV buckets do), or
   * null if there is none. Any replica may answer.
   */
  getLast(stream: string, subject: string): Promise<LastMessage | null> {
    const id = ++this.next;
    return new Promise<LastMessage | null>((resolve, reject) => {
      const message = {
        id,
        subject: `$JS.API.DIRECT.GET.${stream}.${subject}`,
        data: EMPTY,
        headers: undefined,
      };
      const onReply = (msg: Msg) => {
        const h = msg.headers;
        if (h?.code === 404) {
          resolve(null);
        } else if (!h || h.code !== 0) {
          reject(
            new Error(`direct get of ${subject} failed: ${h?.code ?? "no headers"} ${h?.description ?? ""}`),
          );
        } else {
          resolve({
            data: msg.data,
            seq: Number(h.last("Nats-Sequence")) || 0,
            operation: h.last("KV-Operation") || "PUT",
            headers: h,
          });
        }
      };
      this.pending.set(id, { onReply, reject, deadline: Date.now() + this.timeoutMs, message });
      this.send(message);
    });
  }

  private send(message: Outgoing): void {
    this.outbox.push(message);
    if (this.outbox.length === 1) queueMicrotask(this.flush);
  }

  /** Publishes of this turn of the event loop, handed to the connection together at its end. */
  private outbox: Array<{ id: number; subject: string; data: Uint8Array; headers: MsgHdrs | undefined }> = [];

  private readonly flush = (): void => {
    const batch = this.outbox;
    this.outbox = [];
    for (const m of batch) {
      try {
        this.nc.publish(m.subject, m.data, { reply: `${this.prefix}.${m.id}`, headers: m.headers });
      } catch (err) {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        p?.reject(err as Error);
      }
    }
  };

  /** Fails whatever still waits, and stops. */
  close(): void {
    clearInterval(this.sweeper);
    this.sub.unsubscribe();
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(new TimeoutError());
    }
  }

  private onAck(err: Error | null, msg: Msg): void {
    if (err) return; // the subscription closed; close() or the sweeper fail what waits
    const id = Number(msg.subject.slice(this.prefix.length + 1));
    const p = this.pending.get(id);
    if (!p) return; // already timed out
    if (msg.headers?.code === 503) {
      // Nothing stored: the stream has no leader right now (or does not exist). Try again while
      // the deadline allows, as the client library does.
      if (Date.now() + NO_RESPONDERS_RETRY_MS < p.deadline) {
        setTimeout(() => {
          if (this.pending.get(id) === p) this.send(p.message);
        }, NO_RESPONDERS_RETRY_MS).unref();
        return;
      }
      this.pending.delete(id);
      p.reject(Object.assign(new Error("no stream accepts this subject"), { name: "NoResponders" }));
      return;
    }
    this.pending.delete(id);
    p.onReply(msg);
  }

  private expire(): void {
    if (this.pending.size === 0) return;
    const now = Date.now();
    // Insertion order is publish order, and every deadline is publish time + the same timeout.
    for (const [id, p] of this.pending) {
      if (p.deadline > now) break;
      this.pending.delete(id);
      p.reject(new TimeoutError());
    }
  }
}
