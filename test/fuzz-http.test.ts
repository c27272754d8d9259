/**
 * Hostile input to every route of the HTTP API, against a real broker, while valid tasks run on a
 * real endpoint agent: broken and deeply nested JSON, wrong types, unknown fields, huge values,
 * random bytes, wrong content types and methods, odd and very long path parameters, missing, bad
 * and expired tokens, junk query strings, and raw bytes that are not HTTP at all. Every answer
 * must be JSON `{code, message, details}` with a status that names the caller's mistake (never a
 * 500, a stack trace or HTML), the broker must stay up, and every valid task must succeed with
 * its result. The routes come from the served OpenAPI document, so routes added later are fuzzed
 * too. The run is seeded (printed; set FUZZ_SEED to replay one).
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { TokenAuthority } from "../cloud/index.js";
import { endpointRoutes, functionRoutes, OPENAPI_PATH, taskRoutes } from "../cloud/internal.js";
import { ErrorCode } from "../common/index.js";
import { LocalFabric, freePort } from "../devkit/index.js";
import {
  brokenJson,
  deeplyNested,
  ODD_STRINGS,
  Rng,
  sampleOf,
  withRawAt,
  withUnknownField,
  withWrongType,
  type Json,
  type JsonSchema,
} from "./support/json-fuzz.js";

/** Statuses a hostile request may get: each names what was wrong. 5xx never. */
const ALLOWED = new Set([200, 400, 401, 403, 404, 409, 412, 429]);
const CODES = new Set<string>(Object.values(ErrorCode));
const TERMINAL = new Set(["success", "failed", "cancelled", "expired"]);
const SEED = Number(process.env["FUZZ_SEED"] ?? Math.floor(Math.random() * 2 ** 31));
const FUZZED = 2_000;
const VALID_TASKS = 30;
/**
 * Listings that wait while their bucket keeps changing, as it does under this fuzz (mallory
 * registers, re-registers and deletes endpoints all the time): the registry lists through the KV
 * client's keys(), which ends on the message with nothing pending after it or else on the
 * consumer's idle heartbeat (5 s of quiet); such a listing took 5 s beside a few writers and over
 * 28 s under this fuzz. A state-layer limit, not the HTTP layer's: a listing may answer late here.
 */
const WAIT_FOR_QUIET = new Set(["listEndpoints", "listFunctions"]);
/**
 * Changes of one endpoint's task queue (deleting it, re-registering it) race each other in the
 * service layer: two at once can leave two consumers on the work-queue stream and answer INTERNAL
 * ("filtered consumer not unique"). Not the HTTP layer's: the fuzz sends those one at a time.
 */
const QUEUE_CHANGE = /^(DELETE \/v1\/endpoints\/|POST \/v1\/endpoints(\?|$))/;
/** Longest error answer: a message names what was wrong, it does not list a million items. */
const MAX_ERROR_BYTES = 16 * 1024;
/** An answer slower than this held the broker (a quiet broker answers these in milliseconds). */
const SLOW_MS = 10_000;

interface Operation {
  readonly operationId: string;
  readonly parameters?: readonly { name: string; in: string; schema?: JsonSchema }[];
  readonly requestBody?: { content: Record<string, { schema: JsonSchema }> };
  readonly responses: Record<string, { content?: Record<string, unknown> }>;
}
interface OpenApi {
  readonly paths: Record<string, Record<string, Operation>>;
}
/** An operation of the document: where it is and what it takes. */
interface RouteOp {
  readonly method: string;
  readonly path: string;
  readonly op: Operation;
  readonly body: JsonSchema | undefined;
  /** It may hold the call open (a stream, or a long poll with a `timeoutMs`). */
  readonly holds: boolean;
}

/** What came back: the status, the content type and the body text (none: no answer in time). */
interface Reply {
  readonly status: number;
  readonly type: string;
  readonly text: string;
}
/** One request: described for the failure message, and how to send it. */
interface Probe {
  readonly label: string;
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body?: string | Buffer;
  readonly holds?: boolean;
}

/**
 * A request through `agent` (keep-alive). Resolves with the answer; "held" when none came in
 * `timeoutMs`; "closed: …" when the connection ended without one.
 */
function send(port: number, agent: http.Agent, p: Probe, timeoutMs: number): Promise<Reply | string> {
  return new Promise((resolve) => {
    let failure: Error | undefined;
    let answered = false;
    const req = http.request(
      { host: "127.0.0.1", port, agent, method: p.method, path: p.path, headers: p.headers },
      (res) => {
        answered = true;
        const type = res.headers["content-type"] ?? "";
        if (type.startsWith("text/event-stream")) {
          // A stream that opened: its first bytes are all we need.
          res.destroy();
          resolve({ status: res.statusCode ?? 0, type, text: "" });
          return;
        }
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, type, text: Buffer.concat(chunks).toString("utf8") }),
        );
        res.on("error", (err) => resolve(`closed mid-answer: ${err.message}`));
      },
    );
    req.setTimeout(timeoutMs, () => {
      req.destroy();
      resolve("held");
    });
    // The broker may answer an oversized body before reading it all, then close: the answer counts.
    req.on("error", (err) => (failure = err));
    req.on("close", () => {
      if (!answered) resolve(`closed: ${failure?.message ?? "no answer"}`);
    });
    req.end(p.body);
  });
}

/** Raw bytes on a fresh connection; resolves with the first answer parsed from what came back. */
function sendRaw(port: number, bytes: Buffer, timeoutMs: number): Promise<Reply | "held"> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      const all = Buffer.concat(chunks).toString("latin1");
      const head = all.split("\r\n\r\n", 1)[0] ?? "";
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      const type = /\r\ncontent-type:\s*([^\r\n]*)/i.exec(head)?.[1] ?? "";
      const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? NaN);
      const rest = Buffer.from(all.slice(head.length + 4), "latin1");
      const text = (Number.isFinite(length) ? rest.subarray(0, length) : rest).toString("utf8");
      resolve(chunks.length === 0 ? "held" : { status, type, text });
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("close", finish);
    socket.on("error", () => undefined);
    socket.write(bytes);
  });
}

/** What is wrong with an answer, or undefined when it is a clear one. */
function problemOf(p: Probe, reply: Reply | string): string | undefined {
  if (reply === "held") return p.holds ? undefined : "no answer";
  if (typeof reply === "string") return reply;
  if (!ALLOWED.has(reply.status)) return `status ${reply.status}: ${reply.text.slice(0, 300)}`;
  // HEAD answers no body: its type is all there is to judge (a stream's, for a route of events).
  if (p.method === "HEAD")
    return reply.type.startsWith("application/json") ||
      (reply.status === 200 && reply.type.startsWith("text/event-stream"))
      ? undefined
      : `type ${reply.type}`;
  if (reply.type.startsWith("text/event-stream") && reply.status === 200) return undefined;
  if (!reply.type.startsWith("application/json")) return `type ${reply.type}: ${reply.text.slice(0, 300)}`;
  let body: unknown;
  try {
    body = JSON.parse(reply.text);
  } catch {
    return `not JSON: ${reply.text.slice(0, 300)}`;
  }
  if (/<html|<body/i.test(reply.text)) return `HTML: ${reply.text.slice(0, 300)}`;
  if (/\n\s+at .+:\d+:\d+/.test(reply.text) || /"stack"\s*:/.test(reply.text))
    return `a stack trace: ${reply.text.slice(0, 300)}`;
  if (reply.status === 200) return undefined;
  if (reply.text.length > MAX_ERROR_BYTES) return `an error of ${reply.text.length} bytes`;
  const e = body as { code?: unknown; message?: unknown; details?: unknown };
  if (typeof e.code !== "string" || !CODES.has(e.code)) return `no error code: ${reply.text.slice(0, 300)}`;
  if (typeof e.message !== "string" || e.message === "") return `no message: ${reply.text.slice(0, 300)}`;
  if (e.details === null || typeof e.details !== "object" || Array.isArray(e.details))
    return `no details: ${reply.text.slice(0, 300)}`;
  if (
    Object.keys(body as object)
      .sort()
      .join() !== "code,details,message"
  )
    return `other fields: ${reply.text.slice(0, 300)}`;
  return undefined;
}

describe("hostile input to every route of the HTTP API, with valid tasks alongside", () => {
  let stack: LocalFabric;
  let port: number;
  let alice: string;
  let mallory: string;
  let routes: RouteOp[];
  /** Mallory's own objects (so fuzzed calls reach the service layer), and others' ids. */
  const ids: Record<"functionId" | "endpointId" | "taskId" | "groupId", string[]> = {
    functionId: [],
    endpointId: [],
    taskId: [],
    groupId: [],
  };
  let tokens: string[];
  const kept = new Set<string>();
  /** The endpoint the valid tasks run on (alice's, with a real agent). */
  let aliceEndpoint: string;
  /** Bodies the service takes, for some of the valid probes (a schema's sample seldom is one). */
  const VALID_BODIES: Record<string, () => Json> = {
    registerFunction: () => ({ spec: { js: { source: "function g() { return 1; }", entryPoint: "g" } } }),
    submitTasks: () => ({
      tasks: [{ functionId: ids.functionId[0]!, endpointId: ids.endpointId[0]!, args: [1] }],
    }),
    shareFunction: () => ({ sharedWith: ["bob"] }),
    updateEndpointPolicy: () => ({ sharedWith: ["bob"], allowedFunctions: [ids.functionId[0]!] }),
    getTasks: () => ({ taskIds: [ids.taskId[0]!] }),
    waitTasks: () => ({ taskIds: [ids.taskId[0]!], timeoutMs: 200 }),
  };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  const keyDir = mkdtempSync(path.join(tmpdir(), "fuzz-http-key-"));

  const call = async (method: string, p: string, token: string, body?: unknown) => {
    const reply = await send(
      port,
      agent,
      {
        label: "valid",
        method,
        path: p,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      },
      30_000,
    );
    if (typeof reply === "string") throw new Error(`${method} ${p}: ${reply}`);
    if (reply.status !== 200) throw new Error(`${method} ${p}: ${reply.status} ${reply.text}`);
    return JSON.parse(reply.text) as Record<string, unknown> & {
      function: { id: string };
      endpoint: { id: string };
      taskIds: string[];
      groupId: string;
      endpointToken: string;
      task: { state: string; result?: unknown; error?: unknown };
    };
  };

  beforeAll(async () => {
    port = await freePort();
    stack = await LocalFabric.start({
      name: "fuzz-http",
      brokerConfig: {
        http: { listen: `127.0.0.1:${port}` },
        // No rate limit, so every fuzzed call is looked at; a small payload limit keeps the body
        // limit (2 × 256 KiB + 1 MiB) within a quick upload.
        limits: { callsPerSecond: 0, maxPayloadBytes: 256 * 1024 },
      },
    });
    alice = await stack.broker.token("alice");
    mallory = await stack.broker.token("mallory");
    const res = await fetch(`http://127.0.0.1:${port}${OPENAPI_PATH}`);
    const doc = (await res.json()) as OpenApi;
    routes = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.entries(ops).map(([method, op]) => {
        const body = op.requestBody?.content["application/json"]?.schema;
        const holds =
          Object.values(op.responses).some((r) => r.content?.["text/event-stream"] !== undefined) ||
          body?.properties?.["timeoutMs"] !== undefined ||
          WAIT_FOR_QUIET.has(op.operationId);
        return { method: method.toUpperCase(), path: p, op, body, holds };
      }),
    );
    const ep = await stack.startEndpoint("alice", "fuzz-http", { workers: 2 });
    // Mallory's objects: two functions and two endpoints that never connect (the first of each
    // kept: never deleted), a task queued to one.
    const spec = { js: { source: "function f(x) { return x; }", entryPoint: "f" } };
    const fn = (await call("POST", "/v1/functions", mallory, { spec })).function.id;
    const fn2 = (await call("POST", "/v1/functions", mallory, { spec })).function.id;
    const made = await call("POST", "/v1/endpoints", mallory, { name: "mallory-ep" });
    const made2 = await call("POST", "/v1/endpoints", mallory, { name: "mallory-ep-2" });
    const task = await call("POST", "/v1/tasks", mallory, {
      tasks: [{ functionId: fn, endpointId: made.endpoint.id, args: [1] }],
    });
    kept.add(fn).add(made.endpoint.id);
    aliceEndpoint = ep.endpointId();
    ids.functionId.push(fn, fn2, randomUUID());
    ids.endpointId.push(made.endpoint.id, made2.endpoint.id, ep.endpointId(), randomUUID());
    ids.taskId.push(task.taskIds[0]!, randomUUID());
    ids.groupId.push(task.groupId, randomUUID());
    // Tokens: none, malformed, wrong scheme, expired, another broker's, no signature, too long,
    // an endpoint's credential; and mallory's own (most calls).
    const other = await TokenAuthority.fromKeyFile(path.join(keyDir, "k.pem"), "fabric-broker", "fabric-api");
    const [head = "", payload = ""] = mallory.split(".");
    tokens = [
      "",
      "Bearer",
      "Bearer ",
      "Bearer not-a-jwt",
      `Bearer ${mallory}x`,
      `Bearer ${Buffer.from('{"alg":"none"}').toString("base64url")}.${payload}.`,
      `Bearer ${head}.${payload}.${"A".repeat(86)}`,
      `Basic ${Buffer.from("mallory:secret").toString("base64")}`,
      `Bearer ${await stack.broker.token("mallory", -3600)}`,
      `Bearer ${await other.issueUserToken("alice", 3600)}`,
      `Bearer ${"A".repeat(9_000)}`,
      `bearer ${mallory}`,
      `Bearer ${mallory} ${mallory}`,
      `Bearer ${made.endpointToken}`,
    ];
  }, 90_000);

  afterAll(async () => {
    agent.destroy();
    await stack?.stop();
    rmSync(keyDir, { recursive: true, force: true });
  });

  /** Percent-encoded UTF-8 (a lone surrogate too, as U+FFFD: encodeURIComponent throws on it). */
  const pct = (s: string) =>
    [...Buffer.from(s, "utf8")].map((b) => `%${b.toString(16).padStart(2, "0")}`).join("");

  /** A path parameter, mostly one of the ids known (mallory's, another's, unknown), else an odd one. */
  const paramOf = (name: string, rng: Rng, odd: boolean, deleting: boolean): string => {
    // Mallory's first function and endpoint stay, so valid submissions keep reaching the service.
    const known = ids[name as keyof typeof ids]?.filter((id) => !deleting || !kept.has(id));
    if (!odd && known && known.length > 0) return encodeURIComponent(rng.pick(known));
    return rng.pick([
      pct(rng.pick(ODD_STRINGS)),
      "%00",
      "%zz",
      "%",
      "..",
      "%2e%2e",
      "a%2Fb",
      "x".repeat(101),
      "x".repeat(5_000),
      "x".repeat(20_000),
      rng.bytes(30).toString("base64url"),
      "caf\u00e9",
    ]);
  };

  /** A fuzzed request to `r`: one kind of hostility at a time, so each answer can be judged. */
  function probeOf(r: RouteOp, rng: Rng): Probe {
    const leaf = (key: string) => {
      const known = ids[key as keyof typeof ids];
      return known && rng.chance(0.8) ? rng.pick(known) : undefined;
    };
    const kind = rng.pick([
      "valid",
      "valid",
      "broken-json",
      "wrong-type",
      "unknown-field",
      "deep",
      "huge",
      "many",
      "random-bytes",
      "content-type",
      "method",
      "path-param",
      "token",
      "query",
    ] as const);
    const headers: Record<string, string> = { authorization: `Bearer ${mallory}` };
    const method =
      kind === "method"
        ? rng.pick(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND", "SEARCH"])
        : r.method;
    let p = r.path.replace(/\{(\w+)\}/g, (_m, name: string) =>
      paramOf(name, rng, kind === "path-param", method === "DELETE"),
    );
    let body: string | Buffer | undefined;
    const known = VALID_BODIES[r.op.operationId];
    const sample: Json =
      known && kind === "valid" && rng.chance(0.5) ? known() : r.body ? sampleOf(r.body, rng, leaf) : {};
    if (r.body || rng.chance(0.2)) {
      headers["content-type"] = "application/json";
      switch (kind) {
        case "broken-json":
          body = brokenJson(JSON.stringify(sample), rng);
          break;
        case "wrong-type":
          body = JSON.stringify(withWrongType(sample, rng));
          break;
        case "unknown-field":
          body = JSON.stringify(withUnknownField(sample, rng));
          break;
        case "deep":
          body = withRawAt(sample, deeplyNested(rng.pick([100, 1_000, 10_000, 100_000]), rng), rng);
          break;
        case "huge": {
          const n = rng.pick([1_000, 100_000, 2_000_000]);
          const raw = rng.chance(0.5) ? JSON.stringify("x".repeat(n)) : `[${"1,".repeat(n / 10)}1]`;
          body = withRawAt(sample, raw, rng);
          break;
        }
        case "many":
          // An array of the schema's (or any) with 200,000 bad items: a bomb for per-item checks.
          body = withRawAt(sample, `[${"1,".repeat(200_000)}1]`, rng, true);
          break;
        case "random-bytes":
          body = rng.bytes(rng.int(2_000));
          break;
        case "content-type":
          body = JSON.stringify(sample);
          headers["content-type"] = rng.pick([
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "application/xml",
            "application/json; charset=utf-16",
            "application/jsonx",
            "application/json, text/plain",
            "*/*",
            "",
          ]);
          if (headers["content-type"] === "" || rng.chance(0.2)) delete headers["content-type"];
          break;
        default:
          body = JSON.stringify(sample);
      }
    }
    if (kind === "method" && (method === "GET" || method === "HEAD")) body = undefined;
    if (kind === "token") {
      const t = rng.pick(tokens);
      if (t === "") delete headers["authorization"];
      else headers["authorization"] = t;
    }
    // The route's own query parameters, from their schemas (ids the known ones, mostly).
    const queryParams = (r.op.parameters ?? []).filter((q) => q.in === "query");
    if (queryParams.length > 0 && rng.chance(0.7)) {
      const pairs: string[] = [];
      for (const q of queryParams) {
        if (!rng.chance(0.5)) continue;
        const v = sampleOf(q.schema ?? {}, rng, leaf, q.name);
        for (const one of Array.isArray(v) ? v : [v])
          pairs.push(`${q.name}=${pct(typeof one === "string" ? one : JSON.stringify(one))}`);
      }
      if (pairs.length > 0) p += `?${pairs.join("&")}`;
    }
    if (kind === "query") {
      const junk = rng.pick([
        "?a=%zz&b[c]=1",
        "?__proto__[polluted]=1&constructor[prototype][polluted]=1",
        "?" + "a=1&".repeat(3_000),
        "?;;;&&&===",
        `?state=${pct(rng.pick(ODD_STRINGS))}&limit=-1&cursor=%00`,
        "?limit=1e309&timeoutMs=NaN&all=maybe&createdAfterMs=-1",
        "?taskId=" + "x,".repeat(2_000),
        "?%",
        "#fragment",
      ]);
      p += p.includes("?") ? junk.replace(/^\?/, "&") : junk;
    }
    if (body !== undefined) headers["content-length"] = String(Buffer.byteLength(body));
    const shown = typeof body === "string" ? body.slice(0, 120) : body ? `<${body.length} random bytes>` : "";
    return {
      label: `${kind}: ${method} ${p.slice(0, 120)} ${JSON.stringify(headers).slice(0, 160)} ${shown}`,
      method,
      path: p,
      headers,
      ...(body !== undefined ? { body } : {}),
      holds: r.holds,
    };
  }

  /** Bytes that are not a request fastify can route: each must still get a JSON error. */
  const RAW: readonly (readonly [string, Buffer])[] = [
    ["garbage line", Buffer.from("GARBAGE\r\n\r\n")],
    [
      "header without a colon",
      Buffer.from("GET /v1/functions HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n"),
    ],
    ["control character in the path", Buffer.from("GET /v1/fun\u0001ctions HTTP/1.1\r\nHost: x\r\n\r\n")],
    [
      "bad chunk size",
      Buffer.from(
        "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n{}\r\n0\r\n\r\n",
      ),
    ],
    [
      "two content lengths",
      Buffer.from("POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
    ],
    [
      "headers over the limit",
      Buffer.from(`GET /v1/functions HTTP/1.1\r\nHost: x\r\nX-Junk: ${"j".repeat(20_000)}\r\n\r\n`),
    ],
    [
      "URL over the limit",
      Buffer.from(`GET /v1/functions/${"f".repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`),
    ],
    ["HTTP/2 preface", Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")],
    ["HTTP/9.9", Buffer.from("GET /v1/functions HTTP/9.9\r\nHost: x\r\n\r\n")],
    ["unknown method", Buffer.from("BREW /v1/functions HTTP/1.1\r\nHost: x\r\n\r\n")],
    ["TLS hello", Buffer.from("160301020001000200030300", "hex")],
    ["bad URL escape", Buffer.from("GET /v1/functions/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")],
    [
      "absolute URL of another host",
      Buffer.from("GET http://evil.example/v1/functions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ],
  ];

  /**
   * Valid traffic meanwhile, over HTTP as alice: at least `n` tasks (and more while `more()`), in
   * `lanes` lanes, each result checked.
   */
  async function validTraffic(
    fn: string,
    endpointId: string,
    n: number,
    lanes: number,
    more: () => boolean = () => false,
  ): Promise<{ ran: number; wrong: string[] }> {
    const wrong: string[] = [];
    let next = 0;
    const lane = async () => {
      while (next < n || more()) {
        const i = next++;
        const submitted = await call("POST", "/v1/tasks", alice, {
          tasks: [{ functionId: fn, endpointId, args: [i, { k: "v" }] }],
        });
        const id = submitted.taskIds[0]!;
        const deadline = Date.now() + 30_000;
        for (;;) {
          const { task } = await call("GET", `/v1/tasks/${id}`, alice);
          if (TERMINAL.has(task.state)) {
            if (task.state !== "success" || JSON.stringify(task.result) !== JSON.stringify([i * 3, "v"]))
              wrong.push(`task ${i}: ${JSON.stringify(task)}`);
            break;
          }
          if (Date.now() > deadline) {
            wrong.push(`task ${i}: still ${task.state}`);
            break;
          }
          await new Promise((r) => setTimeout(r, 25));
        }
      }
    };
    await Promise.all(Array.from({ length: lanes }, lane));
    return { ran: next, wrong };
  }

  it(`answers ${FUZZED} fuzzed requests to every route with clear JSON errors while valid tasks all succeed (seed ${SEED})`, async () => {
    const known = [
      ...functionRoutes({} as never),
      ...endpointRoutes({} as never),
      ...taskRoutes({} as never),
    ];
    for (const r of known)
      expect(
        routes.some((o) => o.method === r.method && o.path === r.path),
        `${r.method} ${r.path} in the document`,
      ).toBe(true);
    const endpointId = aliceEndpoint;
    const fn = (
      await call("POST", "/v1/functions", alice, {
        spec: { js: { source: "function triple(x, o) { return [3 * x, o.k]; }", entryPoint: "triple" } },
      })
    ).function.id;
    let fuzzing = true;
    // A call that fails outright is a wrong answer too (and no rejection left unhandled meanwhile).
    const traffic = validTraffic(fn, endpointId, VALID_TASKS, 3, () => fuzzing).catch((err: unknown) => ({
      ran: 0,
      wrong: [String(err)],
    }));

    const rng = new Rng(SEED);
    const problems: string[] = [];
    const statuses = new Map<number, number>();
    const kinds = new Set<string>();
    const judge = (p: Probe, reply: Reply | string, ms: number) => {
      if (typeof reply !== "string") statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
      // Slow means the broker was held (its event loop, or a queue behind it): every caller waits.
      const problem =
        problemOf(p, reply) ?? (ms > SLOW_MS && !p.holds ? `answered after ${ms} ms` : undefined);
      if (problem) problems.push(`${p.label} → ${problem}`);
    };
    const probes = Array.from({ length: FUZZED }, (_, i) => probeOf(routes[i % routes.length]!, rng));
    for (const p of probes) kinds.add(p.label.split(":")[0]!);
    let at = 0;
    let queueChanges: Promise<unknown> = Promise.resolve();
    const worker = async () => {
      while (at < probes.length) {
        const p = probes[at++]!;
        const go = async () => {
          const t0 = Date.now();
          judge(p, await send(port, agent, p, p.holds ? 1_000 : 15_000), Date.now() - t0);
        };
        if (QUEUE_CHANGE.test(`${p.method} ${p.path}`)) {
          const turn = queueChanges.then(go);
          queueChanges = turn;
          await turn;
        } else await go();
      }
    };
    await Promise.all(Array.from({ length: 12 }, worker));
    fuzzing = false;
    for (const [label, bytes] of RAW) {
      const p: Probe = { label: `raw: ${label}`, method: "RAW", path: "", headers: {} };
      const t0 = Date.now();
      judge(p, await sendRaw(port, bytes, 5_000), Date.now() - t0);
    }

    const valid = await traffic;
    expect(problems, `seed ${SEED}`).toEqual([]);
    // The fuzz reached past the parser: the service layer answered, and some calls succeeded.
    expect(kinds.size).toBe(13);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(FUZZED / 5);
    expect(statuses.get(401) ?? 0).toBeGreaterThan(0);
    expect(statuses.get(404) ?? 0).toBeGreaterThan(0);
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
    expect(valid.wrong).toEqual([]);
    expect(valid.ran).toBeGreaterThanOrEqual(VALID_TASKS);
    expect(stack.broker.process!.running).toBe(true);
    expect(stack.endpoints[0]!.process!.running).toBe(true);
    // And the API still works for everyone afterwards.
    expect(await validTraffic(fn, endpointId, 3, 1)).toEqual({ ran: 3, wrong: [] });
  }, 120_000);

  it("bounds every typed array of a body, and refuses 600,000 bad items at once, briefly", async () => {
    // zod looks at each item of an array it checks: an unbounded one is a lever on the broker's
    // event loop (a 20 MiB body of bad items held it for a minute and gigabytes).
    const bombs: { route: RouteOp; field: string }[] = [];
    const unbounded: string[] = [];
    for (const r of routes) {
      for (const [field, prop] of Object.entries(r.body?.properties ?? {})) {
        const items = prop.items ?? prop.anyOf?.find((a) => a.items)?.items;
        const array = prop.type === "array" ? prop : prop.anyOf?.find((a) => a.type === "array");
        if (!array || !items || Object.keys(items).length === 0) continue;
        bombs.push({ route: r, field });
        if (array.maxItems === undefined) unbounded.push(`${r.method} ${r.path} ${field}`);
      }
    }
    expect(unbounded).toEqual([]);
    expect(bombs.length).toBeGreaterThanOrEqual(4);
    const items = `[${"1,".repeat(600_000)}1]`;
    for (const { route, field } of bombs) {
      const p = route.path.replace(
        /\{(\w+)\}/g,
        (_m, name: string) => ids[name as keyof typeof ids]?.[0] ?? "x",
      );
      const body = `{${JSON.stringify(field)}:${items}}`;
      const t0 = Date.now();
      const reply = await send(
        port,
        agent,
        {
          label: field,
          method: route.method,
          path: p,
          headers: { authorization: `Bearer ${mallory}`, "content-type": "application/json" },
          body,
        },
        15_000,
      );
      const ms = Date.now() - t0;
      expect(typeof reply === "string" ? reply : reply.status, `${route.method} ${p} ${field}`).toBe(400);
      expect((reply as Reply).text.length, `${route.method} ${p} ${field}`).toBeLessThan(MAX_ERROR_BYTES);
      expect(ms, `${route.method} ${p} ${field}: ${ms} ms`).toBeLessThan(1_000);
    }
  }, 60_000);
});
