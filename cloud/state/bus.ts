import { readFileSync } from "node:fs";

import {
  connect,
  credsAuthenticator,
  type ConnectionOptions,
  type MsgHdrs,
  type NatsConnection,
} from "@nats-io/transport-node";

import { FabricError, natsTlsOption } from "../../common/index.js";
import type { BrokerConfig } from "../config.js";

/** A message's headers, as the broker reads them (a MAC travels here). */
export interface HeaderReader {
  get(name: string): string;
}

/** A core NATS message the broker received on a subscription. */
export interface BusMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers?: HeaderReader;
  /** Where the sender waits for an answer, if it sent a request. */
  readonly reply?: string;
  /** Answers a request on its reply subject. */
  respond(data: Uint8Array, opts?: { headers?: MsgHdrs }): boolean;
}

/** A message of a JetStream work queue, held by the broker until it acks it. */
export interface QueuedMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers?: HeaderReader;
  readonly info: { readonly deliveryCount: number };
  /** Done: the queue drops it. */
  ack(): void;
  /** Not done: delivered again after `delayMs` (to any broker). */
  nak(delayMs?: number): void;
  /** Still working on it: its ack wait starts again. */
  working(): void;
}

/** Messages a JetStream consumer delivers, as they come; ends with `close`. */
export interface QueuedMessages extends AsyncIterable<QueuedMessage> {
  close(): Promise<unknown>;
}

/** The last message on a subject of a stream, as stored. */
export interface StoredMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: HeaderReader;
}

/** A core NATS subscription; ends with {@link unsubscribe}. */
export interface BusSubscription {
  unsubscribe(): void;
}

/** Core NATS publish and subscribe: best effort, no store. */
export interface MessageBus {
  /** Publishes `payload` on `subject` with `headers` (a MAC, see common/message-auth.ts). */
  publish(subject: string, payload: Uint8Array, headers?: Readonly<Record<string, string>>): void;
  /**
   * Calls `onMessage` with each message on `subject` (a wildcard is fine) until unsubscribed. With
   * `queue`, each message goes to one subscriber of the queue group (one broker replica).
   */
  subscribe(
    subject: string,
    onMessage: (msg: BusMessage) => void,
    opts?: { queue?: string; onError?: (err: Error) => void },
  ): BusSubscription;
}

/**
 * Connects to the broker's NATS with its credentials and TLS settings (`nats` of the broker
 * config); `options` adds to or overrides the client's defaults. A failure is UNAVAILABLE and says
 * where it tried (and, with TLS, where to look).
 */
export async function connectNats(
  nats: BrokerConfig["nats"],
  options: Partial<ConnectionOptions> = {},
): Promise<NatsConnection> {
  return connect({
    ...(nats.credentials
      ? { authenticator: credsAuthenticator(new Uint8Array(readFileSync(nats.credentials))) }
      : {}),
    servers: [...nats.servers],
    ...natsTlsOption(nats.servers, nats.tls, "nats.tls"),
    ...options,
  }).catch((err: unknown) => {
    // A TLS refusal says only "unable to verify the first certificate"; say where and what to check.
    const tlsHint = nats.servers.some((u) => u.startsWith("tls://")) ? " (TLS: see nats.tls)" : "";
    throw new FabricError(
      "UNAVAILABLE",
      `cannot connect to NATS at ${nats.servers.join(", ")}${tlsHint}: ${(err as Error).message}`,
      { cause: err },
    );
  });
}
