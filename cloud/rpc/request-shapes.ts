import type { BrokerConfig } from "../config.js";
import type { FieldRule, MessageShape } from "./wire-guard.js";

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Largest JavaScript function source, in bytes. A function's record (and every task message that
 * carries it to an agent) must fit in one NATS message, 1 MiB by default: the source leaves room
 * for the rest of the record and for the task's inline arguments.
 */
export const MAX_SOURCE_BYTES = 768 * KiB;
/** Largest shell command template, in bytes. */
export const MAX_COMMAND_BYTES = 64 * KiB;
/** Most entries in a share list. */
export const MAX_SHARE_ENTRIES = 1000;
/** Most function ids in an endpoint's allowed-functions list. */
export const MAX_ALLOWED_FUNCTIONS = 10_000;

// Names and descriptions are limited in characters by the zod schemas; on the wire a character
// takes up to 4 bytes of UTF-8.
const NAME_BYTES = 4 * 256;
const DESCRIPTION_BYTES = 4 * 4096;
/** An id is a UUID (36 characters); a little slack so a wrong id gets the schema's clearer error. */
const ID_BYTES = 64;

const str = (name: string, max: number, repeated?: number): FieldRule => ({
  kind: "string",
  name,
  max,
  repeated,
});
const num = (name: string): FieldRule => ({ kind: "varint", name });
const msg = (name: string, shape: MessageShape, repeated?: number): FieldRule => ({
  kind: "message",
  name,
  shape,
  repeated,
});
const empty: MessageShape = { fields: {} };
const byId = (field: string): MessageShape => ({ fields: { 1: str(field, ID_BYTES) } });
/** A Register request: a name, a description, and what is registered. */
const registration = (what: FieldRule): MessageShape => ({
  fields: { 1: str("name", NAME_BYTES), 2: str("description", DESCRIPTION_BYTES), 3: what },
});

const functionSpec: MessageShape = {
  fields: {
    1: msg("js", { fields: { 1: str("source", MAX_SOURCE_BYTES), 2: str("entry_point", NAME_BYTES) } }),
    2: msg("shell", { fields: { 1: str("command", MAX_COMMAND_BYTES), 2: num("walltime_s") } }),
    3: str("container_image", 4 * 512),
    4: num("network"),
    5: num("max_retries"),
    6: num("timeout_s"),
    7: msg("python", {
      fields: {
        1: str("source", MAX_SOURCE_BYTES),
        2: str("entry_point", NAME_BYTES),
        3: str("min_version", 64),
      },
    }),
  },
};

/** What a request of each method may hold, checked before it is decoded. */
export interface RequestGuard {
  /** Largest encoded request. */
  readonly maxBytes: number;
  readonly shape: MessageShape;
}

/** Get, List and Delete of one kind of owned record ("Function": GetFunction, ...): by id, or nothing. */
function lookupGuards(kind: string, idField: string): Record<string, RequestGuard> {
  return {
    [`Get${kind}`]: { maxBytes: KiB, shape: byId(idField) },
    [`List${kind}s`]: { maxBytes: KiB, shape: empty },
    [`Delete${kind}`]: { maxBytes: KiB, shape: byId(idField) },
  };
}

/** The guards of every method of the API, sized from the broker's limits. */
export function requestGuards(config: BrokerConfig): Readonly<Record<string, RequestGuard>> {
  const { limits } = config;
  const ids = (name: string): FieldRule => str(name, ID_BYTES, limits.maxIdsPerRequest);
  // Room for every id of a request (an id costs 38 bytes on the wire) and its other fields.
  const idsRequestBytes = limits.maxIdsPerRequest * (ID_BYTES + 3) + 4 * KiB;
  const taskSpec: MessageShape = {
    fields: {
      1: str("function_id", ID_BYTES),
      2: str("endpoint_id", ID_BYTES),
      3: { kind: "bytes", name: "args_json", max: limits.maxPayloadBytes },
      4: { kind: "bytes", name: "kwargs_json", max: limits.maxPayloadBytes },
      5: num("timeout_s"),
    },
  };
  const submit: MessageShape = {
    fields: {
      1: msg("tasks", taskSpec, limits.maxBatchSize),
      2: str("group_id", ID_BYTES),
      3: str("idempotency_key", NAME_BYTES),
      4: num("no_group"),
    },
  };
  const watch: MessageShape = { fields: { 1: ids("task_ids"), 2: str("group_id", ID_BYTES) } };
  // Batches carry their payloads inline: bounded by the gRPC message limit alone.
  const submitBytes = 64 * MiB;
  const sharing = str("shared_with", NAME_BYTES, MAX_SHARE_ENTRIES);
  return {
    RegisterFunction: {
      maxBytes: MAX_SOURCE_BYTES + MAX_COMMAND_BYTES + 64 * KiB,
      shape: registration(msg("spec", functionSpec)),
    },
    ...lookupGuards("Function", "function_id"),
    ShareFunction: {
      maxBytes: MAX_SHARE_ENTRIES * (NAME_BYTES + 3) + 4 * KiB,
      shape: { fields: { 1: str("function_id", ID_BYTES), 2: num("public"), 3: sharing } },
    },
    RegisterEndpoint: {
      maxBytes: NAME_BYTES + DESCRIPTION_BYTES + 4 * KiB,
      shape: registration(str("endpoint_id", ID_BYTES)),
    },
    ...lookupGuards("Endpoint", "endpoint_id"),
    UpdateEndpointPolicy: {
      maxBytes: MAX_SHARE_ENTRIES * (NAME_BYTES + 3) + MAX_ALLOWED_FUNCTIONS * (ID_BYTES + 3) + 4 * KiB,
      shape: {
        fields: {
          1: str("endpoint_id", ID_BYTES),
          2: sharing,
          3: str("allowed_functions", ID_BYTES, MAX_ALLOWED_FUNCTIONS),
        },
      },
    },
    ListEndpointTasks: {
      maxBytes: KiB,
      shape: { fields: { 1: str("endpoint_id", ID_BYTES), 2: num("limit") } },
    },
    ConnectEndpoint: {
      maxBytes: KiB,
      // A host name is at most 253 characters (RFC 1035); a version string is short.
      shape: { fields: { 1: str("agent_version", 128), 2: str("hostname", 255) } },
    },
    SubmitTasks: { maxBytes: submitBytes, shape: submit },
    GetTasks: {
      maxBytes: idsRequestBytes,
      shape: { fields: { 1: ids("task_ids"), 2: num("omit_results") } },
    },
    CancelTasks: { maxBytes: idsRequestBytes, shape: { fields: { 1: ids("task_ids") } } },
    ListTasks: {
      maxBytes: 4 * KiB,
      shape: {
        fields: {
          1: { kind: "packed", name: "states", max: 64, repeated: 16 },
          2: str("function_id", ID_BYTES),
          3: str("endpoint_id", ID_BYTES),
          4: str("group_id", ID_BYTES),
          5: num("created_after_ms"),
          6: num("created_before_ms"),
          7: num("limit"),
          8: str("cursor", 512),
        },
      },
    },
    WatchTasks: { maxBytes: idsRequestBytes, shape: watch },
    Session: {
      maxBytes: submitBytes,
      shape: {
        fields: { 1: num("ref"), 2: msg("submit", submit), 3: msg("watch", watch), 4: msg("unwatch", empty) },
      },
    },
  };
}
