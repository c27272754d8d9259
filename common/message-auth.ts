import { createHmac, createSecretKey, hkdfSync, timingSafeEqual, type KeyObject } from "node:crypto";

import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import type { Logger } from "pino";

import { FabricError } from "./errors.js";

/**
 * Authentication of the messages sent on NATS: task messages and control messages brokers send to
 * an endpoint's agent, task events between broker replicas, and what an agent sends the brokers
 * (result batches, as stream messages and requests, and its status). NATS permissions decide who may
 * publish where; this is the second lock, for the day a permission is wrong (a server feature
 * that delivers a user's bytes onto a subject it may not publish to, a misconfigured account):
 * a receiver accepts only what carries a MAC made with a key that only brokers (and, for one
 * endpoint's messages, that endpoint's agent) hold. An agent signs with its endpoint's key, and a
 * broker checks what arrives on an endpoint's subjects with that endpoint's key: an agent can
 * speak for its own endpoint only.
 *
 * The MAC is HMAC-SHA256 over the subject and the payload, truncated to 16 bytes, carried
 * base64url-encoded in the {@link MAC_HEADER} header. The subject is part of it, so a message
 * cannot be moved to another endpoint's or owner's subject, nor a control message made a task.
 */
export const MAC_HEADER = "Fabric-Mac";

/** Bytes of a MAC (HMAC-SHA256 truncated: 128 bits, ample against forgery). */
const MAC_BYTES = 16;

/** Bytes of a derived key. */
export const MESSAGE_KEY_BYTES = 32;

/** HKDF `info` of the root of all message keys: distinct from any other use of the signing key. */
const ROOT_INFO = "fabric message authentication v1";
/** Labels of the keys derived from the root (never shared between uses). */
const EVENTS_LABEL = "task-events";
const ENDPOINT_LABEL = "endpoint-msg";

/** Why a message was refused by {@link MessageKey.check}, or "ok". */
export type MacCheck = "ok" | "unsigned" | "bad signature";

/** One HMAC key: signs and verifies messages on NATS subjects. The key object is made once. */
export class MessageKey {
  private readonly key: KeyObject;

  /** @param secret at least 16 bytes of key material (a derived key is {@link MESSAGE_KEY_BYTES}) */
  constructor(secret: Uint8Array) {
    if (secret.length < 16) {
      throw new FabricError(
        "INVALID_ARGUMENT",
        `a message key needs at least 16 bytes, got ${secret.length}`,
      );
    }
    this.key = createSecretKey(secret);
  }

  /** The MAC of `payload` on `subject`, as it travels in the {@link MAC_HEADER} header. */
  mac(subject: string, payload: Uint8Array): string {
    return this.digest(subject, payload).toString("base64url");
  }

  /** Headers carrying the MAC of `payload` on `subject` (added to `h` if given). */
  headers(subject: string, payload: Uint8Array, h: MsgHdrs = natsHeaders()): MsgHdrs {
    h.set(MAC_HEADER, this.mac(subject, payload));
    return h;
  }

  /** Whether `mac` (the header's value; missing or empty: unsigned) is right for this message. */
  check(subject: string, payload: Uint8Array, mac: string | null | undefined): MacCheck {
    if (!mac) return "unsigned";
    // A well-formed MAC is exactly 22 base64url characters; anything else is wrong without
    // computing (the length of a MAC is no secret).
    if (mac.length !== 22) return "bad signature";
    const given = Buffer.from(mac, "base64url");
    if (given.length !== MAC_BYTES) return "bad signature";
    return timingSafeEqual(given, this.digest(subject, payload)) ? "ok" : "bad signature";
  }

  private digest(subject: string, payload: Uint8Array): Buffer {
    const h = createHmac("sha256", this.key);
    // The subject's length first: no (subject, payload) pair reads as another.
    const len = Buffer.allocUnsafe(4);
    const subjectBytes = Buffer.from(subject, "utf8");
    len.writeUInt32BE(subjectBytes.length, 0);
    h.update(len);
    h.update(subjectBytes);
    h.update(payload);
    return h.digest().subarray(0, MAC_BYTES);
  }
}

/**
 * The root of the message keys, derived (HKDF-SHA256, its own label) from the brokers' token
 * signing key: every replica holding the same key file derives the same keys, with nothing more
 * to configure or distribute.
 */
export function deriveMessageRoot(signingKeyMaterial: Uint8Array): Uint8Array {
  if (signingKeyMaterial.length < 16) {
    throw new FabricError("INVALID_ARGUMENT", "the key to derive message keys from is too short");
  }
  return new Uint8Array(
    hkdfSync("sha256", signingKeyMaterial, new Uint8Array(0), ROOT_INFO, MESSAGE_KEY_BYTES),
  );
}

/**
 * What a broker signs and checks with: the broker-wide key of task events, and each endpoint's key
 * of the messages between brokers and that endpoint's agent (both ways: tasks and control
 * messages to it; result batches and status from it). An endpoint's key is handed to its agent at
 * connect time; an agent holds only its own, so it can forge messages for nobody but itself.
 */
export class BrokerMessageKeys {
  /** Task events between broker replicas (no agent has this key). */
  readonly events: MessageKey;
  private readonly endpoints = new Map<string, MessageKey>();

  constructor(private readonly root: Uint8Array) {
    if (root.length < MESSAGE_KEY_BYTES) {
      throw new FabricError("INVALID_ARGUMENT", "the message key root must be 32 bytes");
    }
    this.events = new MessageKey(this.derive(EVENTS_LABEL));
  }

  /** The secret of one endpoint's messages (what its agent is given). */
  endpointSecret(endpointId: string): Uint8Array {
    // NUL between label and id: the label can never run into the id.
    return this.derive(`${ENDPOINT_LABEL}\u0000${endpointId}`);
  }

  /** The key of one endpoint's messages, both ways (cached: one key object per endpoint). */
  endpoint(endpointId: string): MessageKey {
    let k = this.endpoints.get(endpointId);
    if (!k) {
      k = new MessageKey(this.endpointSecret(endpointId));
      if (this.endpoints.size >= 10_000) this.endpoints.clear();
      this.endpoints.set(endpointId, k);
    }
    return k;
  }

  private derive(label: string): Uint8Array {
    return new Uint8Array(createHmac("sha256", this.root).update(label, "utf8").digest());
  }
}

/** How often a {@link DropLog} writes a line at most. */
const DROP_LOG_INTERVAL_MS = 10_000;

/** Options of a {@link DropLog}. */
export interface DropLogOptions {
  /** Shortest time between two lines. @default 10000 */
  readonly intervalMs?: number;
  /** Who should have signed, as the line says it: "not sent by <from>". @default "a broker" */
  readonly from?: string;
}

/**
 * Warns about messages dropped because they are not authentic, at most one line per interval: a
 * flood of forgeries must not flood the log. Each line counts the drops it stood for.
 */
export class DropLog {
  private quietUntil = 0;
  private suppressed = 0;
  private readonly intervalMs: number;
  private readonly from: string;

  constructor(
    private readonly log: Logger,
    private readonly what: string,
    opts: DropLogOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? DROP_LOG_INTERVAL_MS;
    this.from = opts.from ?? "a broker";
  }

  /** Records one dropped message on `subject`, refused because it was `reason` (a {@link MacCheck}). */
  drop(subject: string, reason: string): void {
    const now = Date.now();
    if (now < this.quietUntil) {
      this.suppressed++;
      return;
    }
    this.log.warn(
      { subject, reason, droppedSinceLastLine: this.suppressed },
      `${this.what} not sent by ${this.from} (${reason}) dropped`,
    );
    this.suppressed = 0;
    this.quietUntil = now + this.intervalMs;
  }
}
