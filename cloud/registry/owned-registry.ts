import { notFound } from "../../common/index.js";
import { AccessPolicy, type Shareable } from "../auth/authz.js";
import type { RecordBucket } from "../state/records.js";

/** A record with an id and an owner, shared by name or group (functions, endpoints, ...). */
export interface OwnedRecord extends Shareable {
  readonly id: string;
  readonly createdAtMs: number;
}

/**
 * The records of one kind of owned object, looked up by id, with the sharing rules of an
 * {@link AccessPolicy}: owners may do everything; users it is shared with may use it; everyone
 * else is told NOT_FOUND, exactly as for an unknown id. Reads are cached briefly; every change
 * made through here drops this replica's cached copy.
 */
export class OwnedRegistry<T extends OwnedRecord> {
  private readonly cache: TtlCache<T>;

  /**
   * @param kind what one record is called in messages ("function", "endpoint")
   * @param cacheMs how long a read is reused: a change of sharing made through another replica
   *   shows here within this time
   */
  constructor(
    private readonly bucket: RecordBucket<T>,
    private readonly kind: string,
    readonly policy: AccessPolicy = new AccessPolicy(),
    cacheMs = 5_000,
  ) {
    this.cache = new TtlCache<T>(cacheMs);
  }

  private async read(id: string): Promise<T | undefined> {
    let value = this.cache.get(id);
    if (!value) {
      value = await this.current(id);
      if (value) this.cache.set(id, value);
    }
    return value;
  }

  /** The record as stored now (no cache, no access check); undefined if there is none. */
  async current(id: string): Promise<T | undefined> {
    return (await this.bucket.read(id))?.value;
  }

  /**
   * The record if `user` may use it (owns it, or it is shared with them or public), else NOT_FOUND
   * exactly as for an unknown id.
   */
  async get(id: string, user: string): Promise<T> {
    return this.policy.usable(await this.read(id), user, `${this.kind} ${id}`);
  }

  /** The record if `user` owns it (NOT_FOUND if invisible to them, PERMISSION_DENIED if only shared). */
  async getOwned(id: string, user: string, action: string): Promise<T> {
    return this.policy.owned(await this.read(id), user, `${this.kind} ${id}`, action);
  }

  /** Every record `user` should see listed (owned, or shared with them), oldest first. */
  list(user: string): Promise<T[]> {
    return this.bucket.list((value) => this.policy.lists(value, user));
  }

  /**
   * Stores a new record (`bytes`: its encoding, if the caller has it already); fails if one with
   * its id exists.
   */
  async create(value: T, bytes?: Uint8Array): Promise<void> {
    await this.bucket.create(value.id, value, bytes);
  }

  /**
   * Changes a record with compare-and-set (`mutate` may run again on a newer copy, and may throw
   * to refuse the change); NOT_FOUND if it is gone. Check access first.
   */
  async update(id: string, mutate: (current: T) => T): Promise<T> {
    const out = await this.bucket.update(id, mutate);
    if (!out) throw notFound(`${this.kind} ${id} not found`);
    this.forget(id);
    return out.value;
  }

  /** Deletes a record. Check access first. */
  async delete(id: string): Promise<void> {
    await this.bucket.delete(id);
    this.forget(id);
  }

  /** Drops this replica's cached copy (the record changed, or may have). */
  forget(id: string): void {
    this.cache.delete(id);
  }
}

/** A tiny time-bounded cache for immutable or slowly changing records. */
class TtlCache<V> {
  private readonly entries = new Map<string, { value: V; until: number }>();
  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 10_000,
  ) {}
  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.until < Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.value;
  }
  set(key: string, value: V): void {
    if (this.entries.size >= this.maxEntries) {
      const first = this.entries.keys().next();
      if (!first.done) this.entries.delete(first.value);
    }
    this.entries.set(key, { value, until: Date.now() + this.ttlMs });
  }
  delete(key: string): void {
    this.entries.delete(key);
  }
}
