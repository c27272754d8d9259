import { JetStreamApiError, type JetStreamManager } from "@nats-io/jetstream";

export type StreamConfig = Parameters<JetStreamManager["streams"]["add"]>[0];
export type ConsumerConfig = Parameters<JetStreamManager["consumers"]["add"]>[1];

/** Creates the stream, or brings an existing one to `cfg` (replicas and brokers may race: both fine). */
export async function ensureStream(jsm: JetStreamManager, cfg: StreamConfig): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
    const { name, ...rest } = cfg;
    await jsm.streams.update(name, rest);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.streams.add(cfg);
  }
}

/** Creates the durable consumer unless it exists; an existing one gets `cfg`'s ack wait. */
export async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  cfg: ConsumerConfig,
): Promise<void> {
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

/**
 * Whether a JetStream API error is one a cluster gives while it forms: it has a metadata leader
 * but not yet the peers to place a replicated stream on ("no suitable peers for placement",
 * 10005), or its JetStream is not available yet (10008). Such a call succeeds a little later.
 */
export function isClusterForming(err: unknown): boolean {
  if (err instanceof JetStreamApiError && (err.code === 10005 || err.code === 10008)) return true;
  const message = (err as { message?: unknown }).message;
  return (
    typeof message === "string" &&
    /no suitable peers for placement|jetstream system temporarily unavailable/i.test(message)
  );
}
