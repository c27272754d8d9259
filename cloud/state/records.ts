import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";

import { FabricError } from "../../common/index.js";
import type { Task } from "../../proto/index.js";

/** Encode/decode pair of a generated protobuf message. */
export interface Codec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(bytes: Uint8Array): T;
}

/**
 * How a bucket's records are read and written: through a KV client by default; the broker's hot
 * path (task records) uses its own publisher.
 */
export interface RecordIo {
  /** The record's bytes and revision; null when absent or deleted. */
  read(key: string): Promise<{ bytes: Uint8Array; revision: number } | null>;
  /** Writes at `revision` (compare-and-set); resolves the new revision. */
  write(key: string, bytes: Uint8Array, revision: number): Promise<number>;
  /** Creates the record; fails with "wrong last sequence" if it exists. Resolves its revision. */
  create(key: string, bytes: Uint8Array): Promise<number>;
  /** Deletes the record (a delete marker; absent records are fine). */
  delete(key: string): Promise<void>;
  /** The keys of the bucket's live records. */
  keys(): Promise<AsyncIterable<string>>;
}

/** {@link RecordIo} through a KV bucket's client. */
export function kvRecordIo(kv: KV): RecordIo {
  return {
    read: async (key) => {
      const entry: KvEntry | null = await kv.get(key);
      return entry && entry.operation === "PUT" ? { bytes: entry.value, revision: entry.revision } : null;
    },
    write: (key, bytes, revision) => kv.update(key, bytes, revision),
    create: (key, bytes) => kv.create(key, bytes),
    delete: (key) => kv.delete(key),
    keys: () => streamKeys(kv),
  };
}

/**
 * The keys of a KV bucket from its stream's subject counts (one request), not the KV client's
 * keys(), an ordered consumer that, while keys change, kept a listing open for 5 s and more.
 * Deleted keys still have a marker: their reads answer null, and the caller skips them.
 */
async function streamKeys(kv: KV): Promise<AsyncIterable<string>> {
  const b = kv as unknown as { jsm?: JetStreamManager; stream?: string; prefix?: string };
  if (!b.jsm || !b.stream || !b.prefix) return kv.keys();
  const prefix = `${b.prefix}.`;
  const info = await b.jsm.streams.info(b.stream, { subjects_filter: `${prefix}>` });
  const subjects = Object.keys(info.state.subjects ?? {});
  return (async function* () {
    for (const subject of subjects) if (subject.startsWith(prefix)) yield subject.slice(prefix.length);
  })();
}

/**
 * One bucket of protobuf records (functions, endpoints, tasks), read and changed with revisions:
 * every change is a compare-and-set on the revision it started from.
 */
export class RecordBucket<T extends { createdAtMs: number }> {
  constructor(
    private readonly io: RecordIo,
    readonly codec: Codec<T>,
  ) {}

  /** One record and its revision; null when absent or deleted. */
  read(key: string): Promise<{ value: T; revision: number } | null> {
    return readRecord(this.io, key, this.codec);
  }

  /**
   * Creates a record (`bytes`: its encoding, if the caller has it already); fails with "wrong last
   * sequence" if it exists. Resolves its revision.
   */
  create(key: string, value: T, bytes: Uint8Array = this.codec.encode(value).finish()): Promise<number> {
    return this.io.create(key, bytes);
  }

  /** {@link updateRecord} on this bucket. */
  update(
    key: string,
    mutate: (current: T) => T | null,
    cache?: RecordCache<T>,
  ): Promise<{ value: T; changed: boolean; bytes?: Uint8Array } | null> {
    return updateRecord(this.io, key, this.codec, mutate, cache);
  }

  delete(key: string): Promise<void> {
    return this.io.delete(key);
  }

  /**
   * Every record that `keep` accepts, oldest first by `createdAtMs`. Records are read in parallel:
   * one round trip per record, not one after another.
   */
  async list(keep: (value: T) => boolean): Promise<T[]> {
    const keys: string[] = [];
    for await (const key of await this.io.keys()) keys.push(key);
    const records = await mapLimit(keys, 64, (key) => this.read(key));
    const out: T[] = [];
    for (const rec of records) if (rec && keep(rec.value)) out.push(rec.value);
    return out.sort((a, b) => a.createdAtMs - b.createdAtMs);
  }
}

/** Reads one record; null when absent or deleted. */
async function readRecord<T>(
  io: RecordIo,
  key: string,
  codec: Codec<T>,
): Promise<{ value: T; revision: number } | null> {
  const raw = await io.read(key);
  if (!raw) return null;
  try {
    return { value: codec.decode(raw.bytes), revision: raw.revision };
  } catch (err) {
    throw new FabricError("DATA_LOSS", `stored record ${key} cannot be decoded: ${(err as Error).message}`);
  }
}

/** Whether a KV write failed because the revision moved on (a concurrent writer). */
export function isWrongRevision(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : String(err);
  return /wrong last sequence|key exists|10071|10164/i.test(msg);
}

/**
 * The last known value and revision of recently written records, so that a read-modify-write can
 * skip its read. A stale entry costs one failed compare-and-set and a fresh read, never a wrong write.
 * Entries are kept encoded (one small buffer each rather than an object graph): tens of thousands
 * of them cost a few MB and nothing to the garbage collector's marking.
 */
export class RecordCache<T> {
  private readonly entries = new Map<string, { bytes: Uint8Array; revision: number; sentAt: number }>();
  /**
   * @param keeps whether a record just written is worth keeping (a final one changes no more: it
   *   would only hold memory)
   */
  constructor(
    private readonly codec: Codec<T>,
    private readonly maxEntries = 50_000,
    readonly keeps: (value: T) => boolean = () => true,
  ) {}
  /** The record, its revision, and when (performance.now()) the write that stored it was sent. */
  get(key: string): { value: T; revision: number; sentAt: number } | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    try {
      return { value: this.codec.decode(e.bytes), revision: e.revision, sentAt: e.sentAt };
    } catch {
      this.entries.delete(key);
      return undefined;
    }
  }
  /**
   * Remembers a record by its encoded form, as written at `revision` by a write sent at `sentAt`
   * (performance.now(), taken before the write left).
   */
  remember(key: string, bytes: Uint8Array, revision: number, sentAt: number): void {
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(key, { bytes, revision, sentAt });
  }
  forget(key: string): void {
    this.entries.delete(key);
  }
}

/** The broker's cache of task records. */
export type TaskRecordCache = RecordCache<Task>;

/**
 * Read-modify-write with compare-and-set, retried on conflicts. `mutate` returns the new value, or
 * null to leave the record as it is. Returns the record after the call (or null if absent), and
 * its encoding if this call wrote it.
 * With a cache, the first attempt starts from the cached revision instead of a read.
 */
async function updateRecord<T>(
  io: RecordIo,
  key: string,
  codec: Codec<T>,
  mutate: (current: T) => T | null,
  cache?: RecordCache<T>,
): Promise<{ value: T; changed: boolean; bytes?: Uint8Array } | null> {
  let cached = cache?.get(key);
  for (let attempt = 0; attempt < 50; attempt++) {
    const current = cached ?? (await readRecord(io, key, codec));
    cached = undefined;
    if (!current) {
      cache?.forget(key);
      return null;
    }
    const next = mutate(current.value);
    if (!next) return { value: current.value, changed: false };
    try {
      const bytes = codec.encode(next).finish();
      const sentAt = performance.now();
      const revision = await io.write(key, bytes, current.revision);
      if (cache?.keeps(next)) cache.remember(key, bytes, revision, sentAt);
      else cache?.forget(key);
      return { value: next, changed: true, bytes };
    } catch (err) {
      if (!isWrongRevision(err)) throw err;
    }
  }
  throw new FabricError("ABORTED", `too many concurrent changes to ${key}; try again`);
}

/** Runs `fn` over `items` with at most `limit` in flight, keeping order of results. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(workers);
  return out;
}
