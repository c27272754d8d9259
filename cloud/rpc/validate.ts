import { z } from "zod";

import { FabricError, ID_PATTERN, MAX_TIMEOUT_S, VERSION_PATTERN } from "../../common/index.js";
import { describeIssues } from "../config.js";
import { MAX_COMMAND_BYTES, MAX_SOURCE_BYTES } from "./request-shapes.js";

const idSchemas = new Map<string, z.ZodString>();

/** An id this system issued (schemas are built once per kind: this is on the submit hot path). */
export function idSchema(what: string): z.ZodString {
  let schema = idSchemas.get(what);
  if (!schema) {
    schema = z
      .string()
      .regex(ID_PATTERN, { message: `expected ${/^[aeiou]/.test(what) ? "an" : "a"} ${what} id (a UUID)` });
    idSchemas.set(what, schema);
  }
  return schema;
}

/** `value` as the id of a `what` ("function", "endpoint"), or INVALID_ARGUMENT naming it. */
export function checkId(what: string, value: unknown): string {
  return check(idSchema(what), value, `${what} id`);
}

/** A short human name. */
export const nameSchema = z.string().max(256, { message: "must be at most 256 characters" });
export const descriptionSchema = z.string().max(4096, { message: "must be at most 4096 characters" });

const IDENT_RE = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
/** A Python name, or a dotted path of them (`main`, `Model.predict`); ASCII only. */
const PY_ENTRY_RE = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;

/** One kind of function spec: `{ $case: kind, value }`, as the oneof is decoded. */
const specKind = <K extends string, V extends z.ZodRawShape>(kind: K, value: V) =>
  z.object({ $case: z.literal(kind), value: z.object(value) });
/**
 * Text a function cannot do without, at most `maxBytes`: in bytes on the wire (see
 * request-shapes.ts); a character is at least one byte.
 */
const requiredText = (maxBytes: number, missing: string, tooLong: string) =>
  z.string().min(1, { message: missing }).max(maxBytes, { message: tooLong });
/** Whole seconds, at most 30 days. */
const seconds = (tooLong: string) => z.number().int().min(0).max(MAX_TIMEOUT_S, { message: tooLong });

export const functionSpecSchema = z.object({
  kind: z.discriminatedUnion(
    "$case",
    [
      specKind("js", {
        source: requiredText(
          MAX_SOURCE_BYTES,
          "a JS function needs its source",
          "source must be at most 768 KiB",
        ),
        entryPoint: z
          .string()
          .max(256, { message: "entry point must be at most 256 characters" })
          .regex(IDENT_RE, { message: "entry point must be a JavaScript identifier" }),
      }),
      specKind("python", {
        source: requiredText(
          MAX_SOURCE_BYTES,
          "a Python function needs its source",
          "source must be at most 768 KiB",
        ),
        entryPoint: z
          .string()
          .max(256, { message: "entry point must be at most 256 characters" })
          .regex(PY_ENTRY_RE, { message: "entry point must be a Python name or a dotted path of names" }),
        minVersion: z.string().refine((v) => v === "" || VERSION_PATTERN.test(v), {
          message: 'min version must be empty or a version like "3.10" or "3.11.4"',
        }),
      }),
      specKind("shell", {
        command: requiredText(
          MAX_COMMAND_BYTES,
          "a shell function needs a command",
          "command must be at most 64 KiB",
        ),
        walltimeS: seconds("walltime must be at most 30 days"),
      }),
    ],
    { message: "spec.kind must be js, python or shell" },
  ),
  containerImage: z.string().max(512),
  maxRetries: z.number().int().min(0).max(100, { message: "at most 100 retries" }).optional(),
  timeoutS: seconds("timeout must be at most 30 days").optional(),
});

/** Parses `value` with `schema` or throws INVALID_ARGUMENT naming the bad fields. */
export function check<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new FabricError("INVALID_ARGUMENT", `invalid ${what}: ${describeIssues(parsed.error)}`);
  }
  return parsed.data;
}
