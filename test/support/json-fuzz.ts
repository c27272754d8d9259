/**
 * Hostile JSON for fuzzing an API: samples of a JSON Schema (the OpenAPI document's request
 * schemas) and mutations of them: wrong types, unknown fields, deep nesting, huge values, cut
 * text. Pure and seeded, so a failing run can be replayed with its seed.
 */

/** A seeded pseudo-random source (mulberry32): the same seed, the same sequence. */
export class Rng {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from nothing");
    return items[this.int(items.length)]!;
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/** The part of JSON Schema (draft 2020-12, as zod writes it) the sampler reads. */
export interface JsonSchema {
  readonly type?: string | readonly string[];
  readonly properties?: Readonly<Record<string, JsonSchema>>;
  readonly required?: readonly string[];
  readonly additionalProperties?: boolean | JsonSchema;
  readonly items?: JsonSchema;
  readonly anyOf?: readonly JsonSchema[];
  readonly oneOf?: readonly JsonSchema[];
  readonly enum?: readonly unknown[];
  readonly const?: unknown;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly minItems?: number;
  readonly maxItems?: number;
}

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Odd strings: empty, control characters, other scripts, injection-looking, long. */
export const ODD_STRINGS: readonly string[] = [
  "",
  " ",
  "\u0000",
  "\u0000\u0001\u001f\u007f",
  "..",
  "../../etc/passwd",
  "a/b",
  "%2F",
  "🙂👩‍🔬",
  "\ud800",
  "\u202eevil",
  "'; DROP TABLE tasks; --",
  "${jndi:ldap://x}",
  "{{7*7}}",
  "<script>alert(1)</script>",
  "__proto__",
  "constructor",
  "group:",
  "x".repeat(10_000),
];

/** Values of every JSON type, including numbers at the edges of what JavaScript holds. */
export const ODD_VALUES: readonly Json[] = [
  null,
  true,
  false,
  0,
  -1,
  1.5,
  -0,
  1e308,
  -1e308,
  2 ** 53 + 2,
  Number.MAX_SAFE_INTEGER,
  "",
  "1",
  "true",
  [],
  [null],
  {},
  { $bytes: "not base64!" },
  { __proto__x: 1 },
  ...ODD_STRINGS.slice(0, 6),
];

/**
 * A value that fits `schema` as far as a schema says (a refinement such as "exactly one of" is
 * beyond it). `leaf(key)` may give a string for a property or array item named `key` (an id the
 * caller knows), else one is made up.
 */
export function sampleOf(
  schema: JsonSchema,
  rng: Rng,
  leaf: (key: string) => string | undefined,
  key = "",
  depth = 0,
): Json {
  if (schema.const !== undefined) return schema.const as Json;
  if (schema.enum && schema.enum.length > 0) return rng.pick(schema.enum) as Json;
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives && alternatives.length > 0) return sampleOf(rng.pick(alternatives), rng, leaf, key, depth);
  const type = Array.isArray(schema.type) ? rng.pick(schema.type as string[]) : (schema.type as string);
  switch (type) {
    case "object": {
      const out: { [key: string]: Json } = {};
      const required = new Set(schema.required ?? []);
      for (const [name, prop] of Object.entries(schema.properties ?? {})) {
        if (required.has(name) || rng.chance(0.5)) out[name] = sampleOf(prop, rng, leaf, name, depth + 1);
      }
      return out;
    }
    case "array": {
      const min = schema.minItems ?? 0;
      const max = Math.min(schema.maxItems ?? 3, min + 3);
      const n = min + rng.int(max - min + 1);
      const singular = key.endsWith("s") ? key.slice(0, -1) : key;
      return Array.from({ length: n }, () => sampleOf(schema.items ?? {}, rng, leaf, singular, depth + 1));
    }
    case "string":
      return leaf(key) ?? rng.pick(["x", "alice", "mallory", "group:x", rng.pick(ODD_STRINGS)]);
    case "integer":
    case "number": {
      const lo = schema.minimum ?? 0;
      const hi = schema.maximum ?? lo + 100;
      const n = lo + rng.int(Math.max(1, Math.min(hi - lo, 1000)) + 1);
      return type === "integer" ? Math.floor(n) : n + rng.next();
    }
    case "boolean":
      return rng.chance(0.5);
    case "null":
      return null;
    default:
      // Any value (a schema of `unknown`): small JSON of some type.
      return depth > 3 ? rng.pick(ODD_VALUES) : rng.pick<Json>([1, "a", [1, 2], { a: [true, null] }, null]);
  }
}

/** Where each value inside `value` sits: [] is the value itself. */
function pathsOf(value: Json, at: (string | number)[] = [], out: (string | number)[][] = []) {
  out.push(at);
  if (Array.isArray(value)) value.forEach((v, i) => pathsOf(v, [...at, i], out));
  else if (value !== null && typeof value === "object")
    for (const [k, v] of Object.entries(value)) pathsOf(v, [...at, k], out);
  return out;
}

function valueAt(value: Json, path: readonly (string | number)[]): Json {
  let v = value;
  for (const k of path) v = (v as Record<string | number, Json>)[k]!;
  return v;
}

/** `value` with the value at `path` replaced by `by` (copied; `value` is left as it was). */
function replaceAt(value: Json, path: readonly (string | number)[], by: Json): Json {
  if (path.length === 0) return by;
  const [head, ...rest] = path;
  if (Array.isArray(value)) {
    const copy = [...value];
    copy[head as number] = replaceAt(copy[head as number]!, rest, by);
    return copy;
  }
  const obj = value as { [key: string]: Json };
  return { ...obj, [head!]: replaceAt(obj[head!]!, rest, by) };
}

/** One value of `value` (at a random place) swapped for a value of another type. */
export function withWrongType(value: Json, rng: Rng): Json {
  return replaceAt(value, rng.pick(pathsOf(value)), rng.pick(ODD_VALUES));
}

/** A field no schema knows, added to a random object inside `value` (or to the top). */
export function withUnknownField(value: Json, rng: Rng): Json {
  const objects = pathsOf(value).filter((p) => {
    const v = valueAt(value, p);
    return v !== null && typeof v === "object" && !Array.isArray(v);
  });
  const name = rng.pick(["colour", "__proto__", "constructor", "id", "owner", "$bytes", "", "x".repeat(300)]);
  if (objects.length === 0) return { [name]: value };
  const at = rng.pick(objects);
  // JSON text is built later, so a "__proto__" key stays a plain key in the body sent.
  const widened: Record<string, Json> = { ...(valueAt(value, at) as Record<string, Json>) };
  Object.defineProperty(widened, name, { value: rng.pick(ODD_VALUES), enumerable: true, writable: true });
  return replaceAt(value, at, widened);
}

/** JSON text nested `depth` levels deep: arrays, objects, or both in turn. */
export function deeplyNested(depth: number, rng: Rng): string {
  const kind = rng.int(3);
  const open = kind === 0 ? "[" : kind === 1 ? '{"a":' : '[{"a":';
  const close = kind === 0 ? "]" : kind === 1 ? "}" : "}]";
  return open.repeat(depth) + "1" + close.repeat(depth);
}

/**
 * `value` as JSON text with one value (at a random place) replaced by raw JSON text: deeply
 * nested, or a huge string or array.
 */
export function withRawAt(value: Json, raw: string, rng: Rng, preferArrays = false): string {
  const marker = `__raw_${rng.int(1e9)}__`;
  const paths = pathsOf(value);
  const arrays = paths.filter((p) => Array.isArray(valueAt(value, p)));
  const at = rng.pick(preferArrays && arrays.length > 0 ? arrays : paths);
  return JSON.stringify(replaceAt(value, at, marker)).replace(`"${marker}"`, raw);
}

/** JSON text that is not JSON: cut short, a byte changed, or a trailing comma or comment added. */
export function brokenJson(text: string, rng: Rng): string {
  switch (rng.int(5)) {
    case 0:
      return text.slice(0, Math.max(0, rng.int(text.length)));
    case 1: {
      const at = rng.int(Math.max(1, text.length));
      return (
        text.slice(0, at) +
        rng.pick(["{", "}", "]", ",", '"', "\\", ":", "\u0000", "NaN"]) +
        text.slice(at + 1)
      );
    }
    case 2:
      return text.replace(/}$/, ",}");
    case 3:
      return `/* c */ ${text}`;
    default:
      return `${text}${text}`;
  }
}
