import { createHash } from "node:crypto";

/** A UUID-shaped id derived from an idempotency key: the same inputs give the same id. */
export function derivedId(owner: string, key: string, count: number, what: string): string {
  const h = createHash("sha256").update(`${owner}\u0000${key}\u0000${count}\u0000${what}`).digest("hex");
  // Version 8 (custom) and the RFC variant, so it reads as a UUID.
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * The task ids of a submission with an idempotency key: the same inputs give the same ids. One
 * hash per submission; each task's id is it with the task's index mixed into its last 32 bits.
 */
export function derivedIds(owner: string, key: string, count: number): string[] {
  const h = createHash("sha256").update(`${owner}\u0000${key}\u0000${count}\u0000tasks`).digest();
  const ids = new Array<string>(count);
  const b = Buffer.alloc(16);
  for (let i = 0; i < count; i++) {
    h.copy(b, 0, 0, 16);
    b.writeUInt32BE((b.readUInt32BE(12) ^ i) >>> 0, 12);
    b[6] = (b[6]! & 0x0f) | 0x80; // version 8 (custom)
    b[8] = (b[8]! & 0x3f) | 0x80; // the RFC variant
    const x = b.toString("hex");
    ids[i] = `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  }
  return ids;
}
