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
