/**
 * Encode and decode speed of the hot-path messages, generated two ways from the same .proto files:
 * ts-proto over `@bufbuild/protobuf`'s wire code (proto/gen/, what the fabric runs) and
 * protobufjs's static code (proto/gen-pbjs/, made by `node scripts/gen-proto.mjs --pbjs` when
 * missing or older than the .proto files). The two run in the same process, alternating which goes
 * first each round; every figure is the median over the rounds.
 */
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

import protobuf from "protobufjs/minimal.js";

import { ROOT } from "../devkit/index.js";
import {
  FunctionSpec,
  SubmitTasksRequest,
  SubmitTasksResponse,
  Task,
  TaskMessage,
  TaskState,
  TaskUpdate,
  TaskUpdateBatch,
} from "../proto/index.js";
import { percentile, round } from "./stats.js";

/** One generator's way with one message type. */
interface Codec {
  encode(message: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

/** What protobufjs's static code offers for each message type (the rest is not used here). */
interface PbjsType {
  encode(message: unknown): { finish(): Uint8Array };
  decode(bytes: Uint8Array): unknown;
}

interface TsProtoType<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(bytes: Uint8Array): T;
}

/** A message as both generators take it: ts-proto's shape and protobufjs's (oneofs differ). */
interface Case {
  readonly name: string;
  readonly type: string;
  readonly tsProto: Codec;
  readonly value: unknown;
}

const GENERATORS = ["ts-proto", "protobufjs"] as const;
type Generator = (typeof GENERATORS)[number];
const OPS = ["encode", "decode"] as const;
type Op = (typeof OPS)[number];

/** Rounds per (message, generator, op); each round times a fixed count of operations. */
const ROUNDS = 7;
/** Wall time one timed round aims at, and the untimed warm-up per (message, generator, op). */
const ROUND_MS = 100;
const WARMUP_MS = 300;

const encoder = new TextEncoder();
const PAYLOAD_64K = 64 * 1024;

/** A JSON text of `bytes` bytes: an array of numbers, like a result vector. */
function jsonOfSize(bytes: number): Uint8Array {
  const parts: string[] = [];
  let len = 2;
  for (let i = 0; len < bytes - 24; i++) {
    const item = (i * 0.618034).toFixed(6);
    parts.push(item);
    len += item.length + 1;
  }
  const text = `[${parts.join(",")}]`;
  return encoder.encode(text.padEnd(bytes, " "));
}

/** ~100 bytes of JSON, the size of a typical argument list or result. */
const SMALL_JSON = encoder.encode(
  JSON.stringify([
    {
      x: 1.5,
      label: "sample-0042",
      tags: ["calib", "run-7"],
      grid: [
        [1, 2],
        [3, 4],
      ],
    },
    20,
  ]),
);
const LARGE_JSON = jsonOfSize(PAYLOAD_64K);

const payload = (json: Uint8Array) => ({ json, objectRef: "", size: json.length });

const FUNCTION_SPEC: FunctionSpec = {
  kind: {
    $case: "js",
    value: {
      source:
        "function fit(sample, steps) {\n  let acc = 0;\n  for (let i = 0; i < steps; i++) acc += sample.x * i;\n" +
        "  return { label: sample.label, acc, tags: sample.tags.length };\n}\n",
      entryPoint: "fit",
    },
  },
  containerImage: "",
  maxRetries: 1,
  timeoutS: 600,
};

const now = 1_764_680_000_000;
const owner = randomUUID();
const endpointId = randomUUID();
const functionId = randomUUID();

function taskMessage(args: Uint8Array): TaskMessage {
  return {
    taskId: randomUUID(),
    functionId,
    function: FUNCTION_SPEC,
    args: payload(args),
    kwargs: payload(new Uint8Array()),
    owner,
    submittedAtMs: now,
    timeoutS: 600,
  };
}

function taskUpdate(result: Uint8Array): TaskUpdate {
  return {
    taskId: randomUUID(),
    state: TaskState.TASK_STATE_SUCCESS,
    atMs: now + 1234,
    actor: `manager/${randomUUID()}`,
    detail: "",
    result: payload(result),
    error: undefined,
    output: undefined,
    attempt: 1,
    startedAtMs: now + 1100,
    startedBy: `manager/${randomUUID()}`,
  };
}

function taskRecord(result: Uint8Array): Task {
  return {
    id: randomUUID(),
    owner,
    functionId,
    endpointId,
    groupId: randomUUID(),
    state: TaskState.TASK_STATE_SUCCESS,
    history: [
      { state: TaskState.TASK_STATE_RECEIVED, atMs: now, actor: `user/${owner}`, detail: "" },
      {
        state: TaskState.TASK_STATE_WAITING_FOR_ENDPOINT,
        atMs: now,
        actor: `broker/${randomUUID()}`,
        detail: "",
      },
      { state: TaskState.TASK_STATE_RUNNING, atMs: now + 1100, actor: `manager/${randomUUID()}`, detail: "" },
      { state: TaskState.TASK_STATE_SUCCESS, atMs: now + 1234, actor: `manager/${randomUUID()}`, detail: "" },
    ],
    result: payload(result),
    error: undefined,
    output: undefined,
    createdAtMs: now,
    completedAtMs: now + 1234,
    attempts: 1,
  };
}

const taskSpec = (args: Uint8Array) => ({
  functionId,
  endpointId,
  argsJson: args,
  kwargsJson: new Uint8Array(),
  timeoutS: undefined,
});

const codec = <T>(t: TsProtoType<T>): Codec => ({
  encode: (m) => t.encode(m as T).finish(),
  decode: (b) => t.decode(b),
});

/** The messages the broker and agents encode or decode for every task, by path. */
function cases(): Case[] {
  const batch = (updates: TaskUpdate[]): TaskUpdateBatch => ({ endpointId, updates });
  const submit = (n: number, args: Uint8Array): SubmitTasksRequest => ({
    tasks: Array.from({ length: n }, () => taskSpec(args)),
    groupId: "",
    idempotencyKey: randomUUID(),
    noGroup: undefined,
  });
  const taskMsg = codec(TaskMessage);
  const updates = codec(TaskUpdateBatch);
  const record = codec(Task);
  const request = codec(SubmitTasksRequest);
  return [
    // Broker → agent, one per task.
    { name: "task_message", type: "TaskMessage", tsProto: taskMsg, value: taskMessage(SMALL_JSON) },
    { name: "task_message_64k", type: "TaskMessage", tsProto: taskMsg, value: taskMessage(LARGE_JSON) },
    // Agent → broker: one update when idle, many when busy.
    {
      name: "update_batch_1",
      type: "TaskUpdateBatch",
      tsProto: updates,
      value: batch([taskUpdate(SMALL_JSON)]),
    },
    {
      name: "update_batch_100",
      type: "TaskUpdateBatch",
      tsProto: updates,
      value: batch(Array.from({ length: 100 }, () => taskUpdate(SMALL_JSON))),
    },
    {
      name: "update_batch_1_64k",
      type: "TaskUpdateBatch",
      tsProto: updates,
      value: batch([taskUpdate(LARGE_JSON)]),
    },
    // The tasks bucket: written at submit, read and rewritten per update.
    { name: "task_record", type: "Task", tsProto: record, value: taskRecord(SMALL_JSON) },
    { name: "task_record_64k", type: "Task", tsProto: record, value: taskRecord(LARGE_JSON) },
    // SDK → broker and back.
    { name: "submit_request_1", type: "SubmitTasksRequest", tsProto: request, value: submit(1, SMALL_JSON) },
    {
      name: "submit_request_100",
      type: "SubmitTasksRequest",
      tsProto: request,
      value: submit(100, SMALL_JSON),
    },
    {
      name: "submit_request_1_64k",
      type: "SubmitTasksRequest",
      tsProto: request,
      value: submit(1, LARGE_JSON),
    },
    {
      name: "submit_response_100",
      type: "SubmitTasksResponse",
      tsProto: codec(SubmitTasksResponse),
      value: { groupId: randomUUID(), taskIds: Array.from({ length: 100 }, () => randomUUID()) },
    },
  ];
}

/**
 * ts-proto's message as protobufjs's static code takes it: a oneof `{ $case, value }` becomes the
 * chosen field itself; unset fields are left out.
 */
function toPbjsShape(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(toPbjsShape);
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return value;
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    if (field === undefined) continue;
    if (typeof field === "object" && field !== null && "$case" in field) {
      const oneof = field as { $case: string; value: unknown };
      out[oneof.$case] = toPbjsShape(oneof.value);
    } else out[key] = toPbjsShape(field);
  }
  return out;
}

/** Loads protobufjs's static code, generating it first when missing or older than the protos. */
async function loadPbjs(): Promise<Record<string, PbjsType>> {
  const js = path.join(ROOT, "proto", "gen-pbjs", "fabric.js");
  const protoDir = path.join(ROOT, "proto", "fabric", "v1");
  const newest = Math.max(
    statSync(path.join(ROOT, "scripts", "gen-proto.mjs")).mtimeMs,
    ...readdirSync(protoDir).map((f) => statSync(path.join(protoDir, f)).mtimeMs),
  );
  if (!existsSync(js) || statSync(js).mtimeMs < newest) {
    execFileSync(process.execPath, [path.join(ROOT, "scripts", "gen-proto.mjs"), "--pbjs"], {
      stdio: ["ignore", process.stderr, process.stderr],
    });
  }
  // 64-bit fields as plain numbers, as ts-proto's `forceLong=number` gives them: without a Long
  // implementation the reader returns numbers (`--force-number` alone changes only the types).
  (protobuf.util as { Long: unknown }).Long = undefined;
  protobuf.configure();
  const mod = (await import(pathToFileURL(js).href)) as { fabric: { v1: Record<string, PbjsType> } };
  return mod.fabric.v1;
}

const equalBytes = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;

/** Nanoseconds per operation over `n` runs of `fn`. */
function time(fn: () => unknown, n: number): number {
  let sink: unknown;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sink = fn();
  const ns = Number(process.hrtime.bigint() - t0);
  if (sink === undefined) throw new Error("nothing produced");
  return ns / n;
}

/** Runs `fn` for about `ms` and returns how many runs make one timed round. */
function calibrate(fn: () => unknown, ms: number): number {
  let n = 1;
  let spent = 0;
  const until = performance.now() + ms;
  while (performance.now() < until) {
    spent = time(fn, n) * n;
    if (spent < 5e6) n *= 2;
  }
  return Math.max(1, Math.round((ROUND_MS * 1e6 * n) / Math.max(spent, 1)));
}

/**
 * `npm run bench -- codec`: prints one line per (message, generator, op) and returns the ratios
 * of protobufjs's speed to ts-proto's (above 1: protobufjs is faster).
 */
export async function codecBench(): Promise<Record<string, unknown>> {
  const pbjs = await loadPbjs();
  const all = cases();
  const codecs = new Map<string, Record<Generator, Codec>>();
  const bytes = new Map<string, Uint8Array>();
  const inputs = new Map<string, Record<Generator, unknown>>();
  const mismatched: string[] = [];
  for (const c of all) {
    const type = pbjs[c.type];
    if (!type) throw new Error(`protobufjs code has no ${c.type}`);
    const pb: Codec = { encode: (m) => type.encode(m).finish(), decode: (b) => type.decode(b) };
    codecs.set(c.name, { "ts-proto": c.tsProto, protobufjs: pb });
    const pbValue = toPbjsShape(c.value);
    inputs.set(c.name, { "ts-proto": c.value, protobufjs: pbValue });
    // Both must write the same bytes and read back all of them, or the race is not fair.
    const ours = c.tsProto.encode(c.value);
    const theirs = pb.encode(pbValue);
    const same =
      equalBytes(ours, theirs) &&
      equalBytes(c.tsProto.encode(c.tsProto.decode(ours)), ours) &&
      equalBytes(pb.encode(pb.decode(ours)), ours);
    if (!same) mismatched.push(c.name);
    bytes.set(c.name, ours);
  }

  const run = (name: string, gen: Generator, op: Op): (() => unknown) => {
    const cd = codecs.get(name)![gen];
    const input = inputs.get(name)![gen];
    const encoded = bytes.get(name)!;
    return op === "encode" ? () => cd.encode(input) : () => cd.decode(encoded);
  };
  const counts = new Map<string, number>();
  const samples = new Map<string, number[]>();
  const key = (name: string, gen: Generator, op: Op) => `${name}/${gen}/${op}`;
  for (const c of all)
    for (const gen of GENERATORS)
      for (const op of OPS) {
        counts.set(key(c.name, gen, op), calibrate(run(c.name, gen, op), WARMUP_MS));
        samples.set(key(c.name, gen, op), []);
      }
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? GENERATORS : [...GENERATORS].reverse();
    for (const c of all)
      for (const gen of order)
        for (const op of OPS) {
          const k = key(c.name, gen, op);
          samples.get(k)!.push(time(run(c.name, gen, op), counts.get(k)!));
        }
  }

  const ratios: Record<string, Record<Op, number>> = {};
  const logRatios: Record<Op, number[]> = { encode: [], decode: [] };
  for (const c of all) {
    ratios[c.name] = { encode: NaN, decode: NaN };
    for (const op of OPS) {
      const ns = {} as Record<Generator, number>;
      for (const gen of GENERATORS) {
        ns[gen] = percentile(samples.get(key(c.name, gen, op))!, 50);
        const line = {
          bench: "codec",
          message: c.name,
          type: c.type,
          generator: gen,
          op,
          bytes: bytes.get(c.name)!.length,
          ops_per_s: round(1e9 / ns[gen], 0),
          ns_per_op: round(ns[gen], 1),
          rounds: ROUNDS,
        };
        process.stdout.write(`${JSON.stringify(line)}\n`);
      }
      const ratio = ns["ts-proto"] / ns.protobufjs;
      ratios[c.name]![op] = round(ratio, 3);
      logRatios[op].push(Math.log(ratio));
    }
  }
  const geomean = (xs: number[]) => round(Math.exp(xs.reduce((a, b) => a + b, 0) / xs.length), 3);
  return {
    summary: "protobufjs ops/s divided by ts-proto ops/s (above 1: protobufjs faster)",
    geomean_encode: geomean(logRatios.encode),
    geomean_decode: geomean(logRatios.decode),
    geomean: geomean([...logRatios.encode, ...logRatios.decode]),
    ratios,
    same_bytes: mismatched.length === 0 ? true : mismatched,
  };
}
