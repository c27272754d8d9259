import { StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";

import type { BrokerConfig } from "../config.js";
import { connectNats } from "./bus.js";

/** KV bucket of revoked token ids (`jti` → seconds since epoch when the token expires anyway). */
export const REVOKED_TOKENS_BUCKET = "fabric_revoked_tokens";

/**
 * What the token authority needs of the bucket it keeps revocations in (a NATS KV bucket is one):
 * read every key, read and write one, forget one, follow changes.
 */
export interface RevocationBucket {
  keys(): Promise<AsyncIterable<string>>;
  get(key: string): Promise<{ readonly operation: string; readonly value: Uint8Array } | null>;
  put(key: string, value: Uint8Array): Promise<unknown>;
  purge(key: string): Promise<unknown>;
  watch(opts: {
    include: "updates";
  }): Promise<AsyncIterable<{ readonly key: string; readonly operation: string }>>;
}

/** Opens the revocations bucket, creating it (`replicas` copies, file storage) if it does not exist. */
export function openRevocationBucket(nc: NatsConnection, replicas: number): Promise<RevocationBucket> {
  return new Kvm(nc).create(REVOKED_TOKENS_BUCKET, { replicas, history: 1, storage: StorageType.File });
}

/**
 * Connects to the broker's NATS (`nats` of its config), opens the revocations bucket and runs `fn`
 * on it, then closes the connection: for admin commands that run beside the brokers.
 */
export async function withRevocationBucket<T>(
  nats: BrokerConfig["nats"],
  fn: (bucket: RevocationBucket) => Promise<T>,
): Promise<T> {
  const nc = await connectNats(nats);
  try {
    return await fn(await openRevocationBucket(nc, nats.replicas));
  } finally {
    await nc.close();
  }
}
