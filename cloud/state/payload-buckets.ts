import { StorageType, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { Objm, type ObjectStore } from "@nats-io/obj";
import { nanos } from "@nats-io/transport-node";

import { Bus } from "../../common/index.js";
import { isNotFound } from "./jetstream.js";

/**
 * Each endpoint's payload bucket (large arguments and results): one per endpoint, so that an
 * agent's NATS user can be allowed its own bucket's stream and no other. Objects expire with the
 * results' retention.
 */
export class PayloadBuckets {
  /** Open payload buckets by endpoint id. */
  private readonly stores = new Map<string, Promise<ObjectStore>>();

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly replicas: number,
    private readonly retentionSeconds: number,
  ) {}

  /** The endpoint's bucket, created if it does not exist. */
  open(endpointId: string): Promise<ObjectStore> {
    let p = this.stores.get(endpointId);
    if (!p) {
      const created = new Objm(this.js).create(Bus.payloadBucket(endpointId), {
        replicas: this.replicas,
        storage: StorageType.File,
        ttl: nanos(this.retentionSeconds * 1000),
      });
      p = created;
      this.stores.set(endpointId, p);
      created.catch(() => {
        if (this.stores.get(endpointId) === created) this.stores.delete(endpointId);
      });
    }
    return p;
  }

  /** Stores `bytes` as object `name` of the endpoint's bucket. */
  async put(endpointId: string, name: string, bytes: Uint8Array): Promise<void> {
    await (await this.open(endpointId)).putBlob({ name }, bytes);
  }

  /** Object `name` of the endpoint's bucket; null once it has expired or was removed. */
  async get(endpointId: string, name: string): Promise<Uint8Array | null> {
    return (await this.open(endpointId)).getBlob(name);
  }

  /**
   * Deletes the payload buckets whose endpoint is gone (`endpointExists` says no) and whose
   * objects have all expired (a deleted endpoint's finished tasks keep their large results until
   * the retention ends). Returns how many it deleted. Safe to run on several broker replicas at once.
   */
  async sweep(endpointExists: (endpointId: string) => Promise<boolean>): Promise<number> {
    const prefix = `OBJ_${Bus.payloadBucketPrefix}`;
    let deleted = 0;
    for await (const si of this.jsm.streams.list()) {
      const name = si.config.name;
      if (!name.startsWith(prefix) || si.state.messages > 0) continue;
      const endpointId = name.slice(prefix.length);
      if (await endpointExists(endpointId)) continue;
      try {
        await this.jsm.streams.delete(name);
        this.stores.delete(endpointId);
        deleted++;
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    return deleted;
  }
}
