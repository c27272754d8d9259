import { isUtf8 } from "node:buffer";

import { FabricError, resourceExhausted } from "../../common/index.js";

/**
 * What one field of a request may hold, checked on the wire before the message is decoded.
 * `repeated` is the most occurrences the field may have (1 for a singular field: no encoder of
 * ours sends one twice, and a field repeated a million times would be decoded a million times).
 */
export type FieldRule =
  | { readonly kind: "string"; readonly name: string; readonly max: number; readonly repeated?: number }
  | { readonly kind: "bytes"; readonly name: string; readonly max: number; readonly repeated?: number }
  | { readonly kind: "varint"; readonly name: string; readonly repeated?: number }
  /** A repeated number or enum: packed (one length-delimited run of varints, at most `max` bytes) or not. */
  | { readonly kind: "packed"; readonly name: string; readonly max: number; readonly repeated?: number }
  | {
      readonly kind: "message";
      readonly name: string;
      readonly shape: MessageShape;
      readonly repeated?: number;
    };

/** The fields of one message type, by field number. */
export interface MessageShape {
  readonly fields: Readonly<Record<number, FieldRule>>;
}

/** Fields a newer client may send that this broker does not know: skipped, but not without end. */
const MAX_UNKNOWN_FIELDS = 64;
/** Nesting is fixed by the shapes; this only guards a shape that refers to itself. */
const MAX_DEPTH = 16;

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/**
 * Checks encoded protobuf bytes against `shape` without decoding them: every field has the wire
 * type its rule says, strings and bytes are within their length (strings valid UTF-8), repeated
 * fields within their count, and nothing runs past the end. Costs one pass over the bytes and no
 * allocation per field, so a hostile message of 64 MiB of one-byte entries is refused before it
 * becomes 64 million objects. Throws INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for counts) naming
 * the field.
 */
export function checkWire(bytes: Uint8Array, shape: MessageShape, what: string): void {
  try {
    scan(bytes, 0, bytes.length, shape, "", 0);
  } catch (err) {
    if (err instanceof Malformed) {
      const where = `${what} request: ${err.path || "the message"} ${err.message}`;
      throw err.tooLarge
        ? resourceExhausted(where)
        : new FabricError("INVALID_ARGUMENT", `malformed ${where}`);
    }
    throw err;
  }
}

/**
 * The value of top-level varint field `fieldNo` (the last occurrence), read without decoding the
 * rest; undefined when absent or when the bytes are not a message.
 */
export function peekVarint(bytes: Uint8Array, fieldNo: number): number | undefined {
  let found: number | undefined;
  try {
    let pos = 0;
    while (pos < bytes.length) {
      const [tag, afterTag] = readVarint(bytes, pos, bytes.length, "");
      const wire = tag % 8;
      if (wire === WIRE_VARINT) {
        const [value, after] = readVarint(bytes, afterTag, bytes.length, "");
        if (Math.floor(tag / 8) === fieldNo) found = value;
        pos = after;
      } else if (wire === WIRE_LEN) {
        const [len, after] = readVarint(bytes, afterTag, bytes.length, "");
        pos = after + len;
      } else if (wire === WIRE_I64) pos = afterTag + 8;
      else if (wire === WIRE_I32) pos = afterTag + 4;
      else return undefined;
    }
    return pos === bytes.length ? found : undefined;
  } catch {
    return undefined;
  }
}

/** A field that breaks its rule, at `path` (relative to the request). */
class Malformed extends Error {
  constructor(
    readonly path: string,
    what: string,
    /** Well formed, but more than the broker takes (RESOURCE_EXHAUSTED rather than INVALID_ARGUMENT). */
    readonly tooLarge = false,
  ) {
    super(what);
  }
}

function scan(
  buf: Uint8Array,
  start: number,
  end: number,
  shape: MessageShape,
  path: string,
  depth: number,
): void {
  if (depth > MAX_DEPTH) throw malformed(path, "is nested too deeply");
  const counts = new Map<number, number>();
  let unknown = 0;
  let pos = start;
  while (pos < end) {
    const [tag, afterTag] = readVarint(buf, pos, end, path);
    pos = afterTag;
    const fieldNo = Math.floor(tag / 8);
    const wire = tag % 8;
    if (fieldNo === 0) throw malformed(path, "has a field numbered 0");
    const rule = shape.fields[fieldNo];
    const fieldName = rule ? rule.name : `#${fieldNo}`;
    const fieldPath = path ? `${path}.${fieldName}` : fieldName;
    let len = 0;
    switch (wire) {
      case WIRE_VARINT:
        pos = readVarint(buf, pos, end, fieldPath)[1];
        break;
      case WIRE_I64:
        pos += 8;
        break;
      case WIRE_I32:
        pos += 4;
        break;
      case WIRE_LEN: {
        const [n, after] = readVarint(buf, pos, end, fieldPath);
        len = n;
        pos = after;
        if (len > end - pos) throw malformed(fieldPath, "runs past the end of the message");
        break;
      }
      default:
        // Groups (3, 4) are not proto3, and 6, 7 are no wire type at all.
        throw malformed(fieldPath, `has wire type ${wire}, which this API never uses`);
    }
    if (pos > end) throw malformed(fieldPath, "runs past the end of the message");
    if (!rule) {
      if (++unknown > MAX_UNKNOWN_FIELDS)
        throw malformed(path, `has more than ${MAX_UNKNOWN_FIELDS} unknown fields`);
      if (wire === WIRE_LEN) pos += len;
      continue;
    }
    const count = (counts.get(fieldNo) ?? 0) + 1;
    counts.set(fieldNo, count);
    const most = rule.repeated ?? 1;
    if (count > most) {
      if (most === 1) throw malformed(fieldPath, "is given more than once");
      throw new Malformed(fieldPath, `has more than ${most.toLocaleString("en-US")} entries`, true);
    }
    if (rule.kind === "varint" || (rule.kind === "packed" && wire === WIRE_VARINT)) {
      if (wire !== WIRE_VARINT) throw malformed(fieldPath, "must be a number");
      continue;
    }
    if (rule.kind === "packed") {
      if (wire !== WIRE_LEN) throw malformed(fieldPath, "must be numbers");
      if (len > rule.max) throw malformed(fieldPath, `holds more than ${rule.max} bytes of numbers`);
      for (let p = pos; p < pos + len;) p = readVarint(buf, p, pos + len, fieldPath)[1];
      pos += len;
      continue;
    }
    if (wire !== WIRE_LEN)
      throw malformed(fieldPath, `must be a ${rule.kind === "message" ? "message" : rule.kind}`);
    const entryPath = most > 1 ? `${fieldPath}[${count - 1}]` : fieldPath;
    if (rule.kind === "message") {
      scan(buf, pos, pos + len, rule.shape, entryPath, depth + 1);
    } else {
      if (len > rule.max && rule.kind === "bytes") {
        throw new Malformed(
          entryPath,
          `is ${len} bytes, over the ${rule.max}-byte payload limit; pass large data by reference (a path or URL)`,
          true,
        );
      }
      if (len > rule.max) {
        throw malformed(
          entryPath,
          `is ${len.toLocaleString("en-US")} bytes; at most ${rule.max.toLocaleString("en-US")} are allowed`,
        );
      }
      if (rule.kind === "string" && len > 0 && !isUtf8(buf.subarray(pos, pos + len))) {
        throw malformed(entryPath, "is not valid UTF-8");
      }
    }
    pos += len;
  }
}

/** Reads a varint at `pos`; returns [value, position after it]. Values past 2^53 are refused. */
function readVarint(buf: Uint8Array, pos: number, end: number, path: string): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw malformed(path, "ends inside a number");
    const b = buf[pos++]!;
    value += (b & 0x7f) * scale;
    if (b < 0x80) {
      if (value > Number.MAX_SAFE_INTEGER) throw malformed(path, "holds a number out of range");
      return [value, pos];
    }
    scale *= 128;
  }
  throw malformed(path, "holds a number longer than 10 bytes");
}

function malformed(path: string, what: string): Malformed {
  return new Malformed(path, what);
}
