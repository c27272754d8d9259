import type { Logger } from "pino";

import { Bus, DropLog, MAC_HEADER, type MessageKey } from "../../common/index.js";
import { Task, TaskEventBatch } from "../../proto/index.js";
import type { BusSubscription, MessageBus } from "../state/bus.js";

type Listener = (task: Task) => void;

/** Largest TaskEventBatch payload (stays under NATS's default 1 MB max_payload). */
const MAX_BATCH_BYTES = 512 * 1024;

/** How long an owner's events are still followed after their last watch ended. */
const LINGER_MS = 60_000;

interface Following {
  readonly sub: BusSubscription;
  readonly listeners: Set<Listener>;
  /** performance.now() when the subscription was sent (reset by a reconnect). */
  since: number;
  linger: NodeJS.Timeout | undefined;
}

/**
 * Terminal-state announcements, fanned out to the WatchTasks calls of this broker. One NATS
 * subscription per owner with watchers (kept a minute after the last one ends), whichever broker
 * replica recorded the result.
 */
export class TaskEventHub {
  private readonly owners = new Map<string, Following>();
  /** Encoded tasks announced this turn of the event loop, by owner; they leave together. */
  private outgoing = new Map<string, Uint8Array[]>();
  private readonly subjects = new Map<string, string>();
  private readonly dropped: DropLog;

  /**
   * @param key the brokers' task-event key: events are signed with it, and events not signed with
   *   it are dropped (only a broker can have sent a task's end to its owner's watchers)
   * @param forget called with each task another replica announced finished: this broker's cached
   *   copy of its record is stale
   */
  constructor(
    private readonly bus: MessageBus,
    private readonly log: Logger,
    private readonly key: MessageKey,
    private readonly forget: (taskId: string) => void = () => undefined,
  ) {
    this.dropped = new DropLog(log, "task event");
  }

  /**
   * Since when (performance.now()) this broker has followed `owner`'s task events without a gap,
   * or undefined if it does not. A task whose record this broker wrote after that moment cannot
   * finish without this broker hearing of it: the subscription reached the server before the write.
   */
  followedSince(owner: string): number | undefined {
    return this.owners.get(owner)?.since;
  }

  /**
   * The NATS connection dropped (events may have been missed) or came back: what was followed
   * is followed again only from now on.
   */
  connectionChanged(): void {
    const now = performance.now();
    for (const f of this.owners.values()) f.since = now;
  }

  /**
   * Announces a task's terminal state to every broker's watchers. This broker's own watchers hear
   * it at once, without the round trip through NATS (the broker's connection is `noEcho`: the
   * server does not send it back). Other replicas hear it in a TaskEventBatch with the other
   * tasks of the same owner announced in this turn. `encoded` is the task as already encoded,
   * if the caller has it (a record just written).
   */
  publish(task: Task, encoded?: Uint8Array): void {
    for (const o of this.observers) o(task);
    let list = this.outgoing.get(task.owner);
    if (!list) {
      if (this.outgoing.size === 0) queueMicrotask(this.sendOutgoing);
      list = [];
      this.outgoing.set(task.owner, list);
    }
    list.push(encoded ?? Task.encode(task).finish());
    const local = this.owners.get(task.owner);
    if (local) for (const l of local.listeners) l(task);
  }

  private readonly observers: Listener[] = [];

  /** Calls `observer` with every task this broker announces finished (whoever its owner). */
  observe(observer: Listener): void {
    this.observers.push(observer);
  }

  private readonly sendOutgoing = (): void => {
    const outgoing = this.outgoing;
    this.outgoing = new Map();
    for (const [owner, tasks] of outgoing) {
      const subject = this.subjectOf(owner);
      let from = 0;
      while (from < tasks.length) {
        let size = 0;
        let to = from;
        while (to < tasks.length && (to === from || size + tasks[to]!.length + 6 <= MAX_BATCH_BYTES)) {
          size += tasks[to]!.length + 6;
          to++;
        }
        try {
          const payload = repeatedField(1, tasks.slice(from, to));
          this.bus.publish(subject, payload, { [MAC_HEADER]: this.key.mac(subject, payload) });
        } catch (err) {
          // Best effort, like every core NATS publish: a watch re-reads what it still waits for.
          this.log.warn({ err, owner }, "cannot announce finished tasks");
        }
        from = to;
      }
    }
  };

  private subjectOf(owner: string): string {
    let s = this.subjects.get(owner);
    if (s === undefined) {
      s = Bus.taskEventSubject(owner);
      if (this.subjects.size >= 10_000) this.subjects.clear();
      this.subjects.set(owner, s);
    }
    return s;
  }

  /** Calls `listener` for each terminal task of `owner` until the returned function is called. */
  subscribe(owner: string, listener: Listener): () => void {
    let entry = this.owners.get(owner);
    if (!entry) {
      const listeners = new Set<Listener>();
      const since = performance.now();
      const sub = this.bus.subscribe(
        this.subjectOf(owner),
        (msg) => {
          // Before decoding: what no broker signed is not looked at.
          const verdict = this.key.check(msg.subject, msg.data, msg.headers?.get(MAC_HEADER));
          if (verdict !== "ok") {
            this.dropped.drop(msg.subject, verdict);
            return;
          }
          let batch: TaskEventBatch;
          try {
            batch = TaskEventBatch.decode(msg.data);
          } catch (e) {
            this.log.warn({ err: e }, "undecodable task event dropped");
            return;
          }
          for (const task of batch.tasks) {
            this.forget(task.id);
            for (const l of listeners) l(task);
          }
        },
        { onError: (err) => this.log.warn({ err }, "task event subscription failed") },
      );
      entry = { sub, listeners, since, linger: undefined };
      this.owners.set(owner, entry);
    }
    clearTimeout(entry.linger);
    entry.linger = undefined;
    entry.listeners.add(listener);
    const e = entry;
    return () => {
      e.listeners.delete(listener);
      if (e.listeners.size > 0 || this.owners.get(owner) !== e || e.linger) return;
      // Kept a while: the owner's next watch then finds its recent tasks accounted for.
      e.linger = setTimeout(() => {
        e.linger = undefined;
        if (e.listeners.size === 0 && this.owners.get(owner) === e) {
          this.owners.delete(owner);
          e.sub.unsubscribe();
        }
      }, LINGER_MS);
      e.linger.unref();
    };
  }

  /** Stops following every owner. */
  close(): void {
    for (const [owner, e] of this.owners) {
      clearTimeout(e.linger);
      e.sub.unsubscribe();
      this.owners.delete(owner);
    }
  }
}

/**
 * A message whose only field, `field`, is repeated and holds already-encoded messages: each is
 * written as tag, length, bytes (what encoding the objects would give, without encoding them).
 */
export function repeatedField(field: number, encoded: readonly Uint8Array[]): Uint8Array {
  if (field < 1 || field > 15) throw new RangeError("repeatedField writes one-byte tags: fields 1 to 15");
  const tag = (field << 3) | 2;
  let size = 0;
  for (const e of encoded) size += 1 + varintSize(e.length) + e.length;
  const out = new Uint8Array(size);
  let pos = 0;
  for (const e of encoded) {
    out[pos++] = tag;
    let n = e.length;
    while (n > 0x7f) {
      out[pos++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    out[pos++] = n;
    out.set(e, pos);
    pos += e.length;
  }
  return out;
}

function varintSize(n: number): number {
  let size = 1;
  while (n > 0x7f) {
    n >>>= 7;
    size++;
  }
  return size;
}
