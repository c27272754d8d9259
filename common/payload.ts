/**
 * The one rule for payloads (a task's arguments, its result): a payload travels inline, inside the
 * NATS message that carries it, when it is at most the configured inline limit and fits the room
 * the message has left; otherwise it is written to the endpoint's payload object store under the
 * task's own object name (see `Bus.argsObject`, `Bus.kwargsObject`, `Bus.resultObject`) and the
 * message carries only that reference and the size. Broker and agent both decide with these
 * functions, so a payload never travels one way on one side and another way on the other.
 */
import type { Payload } from "../proto/messages.js";

/** Room an agent keeps in a NATS message for everything in a task update but an inline result. */
export const UPDATE_OVERHEAD_BYTES = 64 * 1024;

/** Room a broker keeps in a task message besides the function's spec and the inline payloads. */
export const TASK_MESSAGE_OVERHEAD_BYTES = 4 * 1024;

/** The smallest inline limit, however small the server's message size. */
const MIN_INLINE_BYTES = 1024;

/**
 * The largest payload that travels inline in a message of at most `maxMessageBytes` that keeps
 * `overheadBytes` for the rest: the configured limit, lowered to fit the server's message size.
 */
export function inlineLimitFor(
  configuredBytes: number,
  maxMessageBytes: number,
  overheadBytes: number,
): number {
  return Math.max(MIN_INLINE_BYTES, Math.min(configuredBytes, maxMessageBytes - overheadBytes));
}

/** Whether a payload of `bytes` travels inline under `limit`, with `room` left in its message. */
export function fitsInline(bytes: number, limit: number, room = Number.POSITIVE_INFINITY): boolean {
  return bytes <= Math.min(limit, room);
}

/** A payload carried inline. */
export function inlinePayload(json: Uint8Array): Payload {
  return { json, objectRef: "", size: json.length };
}

/** A payload kept in the payload object store as `objectRef`; `size` is its length in bytes. */
export function storedPayload(objectRef: string, size: number): Payload {
  return { json: new Uint8Array(0), objectRef, size };
}

/** Whether the payload lives in the object store (its bytes are not in the message). */
export function isStored(p: Payload | undefined): p is Payload {
  return !!p?.objectRef;
}

/** An inline payload's JSON bytes, copied out of the message buffer (empty when there is none). */
export function inlineBytes(p: Payload | undefined): Buffer {
  return p ? Buffer.from(p.json) : Buffer.alloc(0);
}
