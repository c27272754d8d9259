import { isUtf8 } from "node:buffer";

import { FabricError } from "./errors.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a value as UTF-8 JSON; values JSON cannot represent are INVALID_ARGUMENT. */
export function encodeJson(value: unknown, what = "value"): Uint8Array {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new FabricError("INVALID_ARGUMENT", `${what} cannot be encoded as JSON: ${(err as Error).message}`);
  }
  if (text === undefined) {
    throw new FabricError("INVALID_ARGUMENT", `${what} cannot be encoded as JSON (got ${typeof value})`);
  }
  return encoder.encode(text);
}

/** Decodes UTF-8 JSON; an empty buffer decodes to `fallback`. */
export function decodeJson(bytes: Uint8Array, what = "value", fallback: unknown = undefined): unknown {
  if (bytes.length === 0) return fallback;
  try {
    return JSON.parse(decoder.decode(bytes)) as unknown;
  } catch (err) {
    throw new FabricError("INVALID_ARGUMENT", `${what} is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * The fabric's convention for bytes inside JSON payloads: `{"$bytes": "<base64>"}`, an object of
 * exactly that one key. Python functions receive such a value as `bytes` and return `bytes` as
 * one; the SDK sends a `Uint8Array` (or `Buffer`) argument as one and gives a result's back as a
 * `Buffer`. So arrays can travel as `.npy` bytes.
 */
export const BYTES_KEY = "$bytes";

/** {@link encodeJson}, with every `Uint8Array` inside `value` sent as `{"$bytes": base64}`. */
export function encodeJsonWithBytes(value: unknown, what = "value"): Uint8Array {
  // Most payloads are scalars or empty lists: nothing to walk.
  if (typeof value !== "object" || value === null || (Array.isArray(value) && value.length === 0))
    return encodeJson(value, what);
  return encodeJson(bytesToJson(value, new Set()), what);
}

/** `value` with its Uint8Arrays replaced; `path` holds the objects above it (a cycle is left for JSON.stringify to refuse). */
function bytesToJson(value: unknown, path: Set<object>): unknown {
  if (value instanceof Uint8Array)
    return { [BYTES_KEY]: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  if (typeof value !== "object" || value === null || path.has(value)) return value;
  if (Array.isArray(value)) {
    path.add(value);
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      const w = typeof v === "object" && v !== null ? bytesToJson(v, path) : v;
      if (w !== v) (out ??= value.slice())[i] = w;
    }
    path.delete(value);
    return out ?? value;
  }
  if (Object.getPrototypeOf(value) === Object.prototype) {
    path.add(value);
    let out: Record<string, unknown> | undefined;
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      const w = typeof v === "object" && v !== null ? bytesToJson(v, path) : v;
      if (w !== v) (out ??= { ...(value as Record<string, unknown>) })[k] = w;
    }
    path.delete(value);
    return out ?? value;
  }
  return value;
}

/** {@link decodeJson}, with every `{"$bytes": base64}` inside turned into a `Buffer`. */
export function decodeJsonWithBytes(
  bytes: Uint8Array,
  what = "value",
  fallback: unknown = undefined,
): unknown {
  const value = decodeJson(bytes, what, fallback);
  // Most payloads hold no bytes: look for the key before walking the value.
  return bytes.length > 9 &&
    Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).includes('"$bytes"')
    ? bytesFromJson(value)
    : value;
}

function bytesFromJson(value: unknown): unknown {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = bytesFromJson(value[i]);
    return value;
  }
  if (typeof value === "object" && value !== null) {
    const o = value as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 1 && keys[0] === BYTES_KEY && typeof o[BYTES_KEY] === "string")
      return Buffer.from(o[BYTES_KEY], "base64");
    for (const k of keys) o[k] = bytesFromJson(o[k]);
  }
  return value;
}

/** Deepest nesting of arrays and objects accepted in a payload (Python's json module stops near 1,000). */
export const MAX_JSON_DEPTH = 512;

const WS = new Uint8Array(256);
for (const c of [0x20, 0x09, 0x0a, 0x0d]) WS[c] = 1;
const ESCAPES = new Uint8Array(256);
for (const c of '"\\/bfnrt') ESCAPES[c.charCodeAt(0)] = 1;
const isDigit = (c: number | undefined) => c !== undefined && c >= 0x30 && c <= 0x39;
const isHex = (c: number | undefined) =>
  c !== undefined && ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66));

/**
 * Checks that `bytes` are one JSON value in valid UTF-8, without building it: a payload of
 * millions of tiny values costs one pass, not millions of objects in the broker's heap. Returns
 * the kind of the top-level value; throws INVALID_ARGUMENT naming `what` and the byte offset.
 */
export function checkJsonSyntax(bytes: Uint8Array, what: string): "array" | "object" | "scalar" {
  if (!isUtf8(bytes)) throw new FabricError("INVALID_ARGUMENT", `${what} is not valid UTF-8`);
  const b = bytes;
  const n = b.length;
  let i = 0;
  const fail = (why: string) =>
    new FabricError("INVALID_ARGUMENT", `${what} is not valid JSON: ${why} at byte ${i}`);
  const ws = () => {
    while (i < n && WS[b[i]!]) i++;
  };
  const str = () => {
    i++; // the opening quote
    for (;;) {
      if (i >= n) throw fail("unterminated string");
      const c = b[i]!;
      if (c === 0x22) {
        i++;
        return;
      }
      if (c < 0x20) throw fail("control character in a string");
      if (c !== 0x5c) {
        i++;
        continue;
      }
      const e = b[i + 1];
      if (e === 0x75) {
        if (!(isHex(b[i + 2]) && isHex(b[i + 3]) && isHex(b[i + 4]) && isHex(b[i + 5]))) {
          throw fail("bad \\u escape");
        }
        i += 6;
      } else if (e !== undefined && ESCAPES[e]) i += 2;
      else throw fail("bad escape");
    }
  };
  const key = () => {
    ws();
    if (b[i] !== 0x22) throw fail("expected a property name");
    str();
    ws();
    if (b[i] !== 0x3a) throw fail("expected ':'");
    i++;
  };
  const digits = () => {
    if (!isDigit(b[i])) throw fail("bad number");
    while (isDigit(b[i])) i++;
  };
  const num = () => {
    if (b[i] === 0x2d) i++;
    if (b[i] === 0x30) i++;
    else digits();
    if (b[i] === 0x2e) {
      i++;
      digits();
    }
    if (b[i] === 0x65 || b[i] === 0x45) {
      i++;
      if (b[i] === 0x2b || b[i] === 0x2d) i++;
      digits();
    }
  };
  const word = (w: string) => {
    for (let k = 0; k < w.length; k++) if (b[i + k] !== w.charCodeAt(k)) throw fail("unexpected character");
    i += w.length;
  };
  // 1: inside an array, 2: inside an object.
  const stack = new Uint8Array(MAX_JSON_DEPTH);
  let depth = 0;
  let expectValue = true;
  ws();
  const first = b[i];
  for (;;) {
    ws();
    if (expectValue) {
      const c = b[i];
      if (c === 0x5b || c === 0x7b) {
        if (depth === MAX_JSON_DEPTH) throw fail(`nested deeper than ${MAX_JSON_DEPTH} levels`);
        stack[depth++] = c === 0x5b ? 1 : 2;
        i++;
        ws();
        if (b[i] === (c === 0x5b ? 0x5d : 0x7d)) {
          i++;
          depth--;
          expectValue = false;
        } else if (c === 0x7b) key();
        continue;
      }
      if (c === 0x22) str();
      else if (c === 0x2d || isDigit(c)) num();
      else if (c === 0x74) word("true");
      else if (c === 0x66) word("false");
      else if (c === 0x6e) word("null");
      else throw fail(i >= n ? "unexpected end" : "unexpected character");
      expectValue = false;
      continue;
    }
    if (depth === 0) break;
    const c = b[i];
    const inside = stack[depth - 1];
    if (c === 0x2c) {
      i++;
      if (inside === 2) key();
      expectValue = true;
    } else if ((c === 0x5d && inside === 1) || (c === 0x7d && inside === 2)) {
      i++;
      depth--;
    } else throw fail(i >= n ? "unexpected end" : `expected ',' or '${inside === 1 ? "]" : "}"}'`);
  }
  ws();
  if (i !== n) throw fail("unexpected data after the value");
  return first === 0x5b ? "array" : first === 0x7b ? "object" : "scalar";
}
