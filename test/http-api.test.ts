/**
 * The HTTP/JSON API against a real broker process (and NATS): the function routes, the same
 * tokens and owner rules as gRPC, JSON errors for bad input, and the OpenAPI document covering
 * every route. Tasks, endpoints and listing come next (issue 15).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { endpointRoutes, functionRoutes, taskRoutes } from "../cloud/internal.js";
import { LocalFabric, freePort } from "../devkit/index.js";
import { Client } from "../sdk/index.js";

interface FunctionJson {
  id: string;
  owner: string;
  name: string;
  sharedWith: string[];
  spec?: Record<string, unknown>;
}
/** What a call answered: any of the API's bodies (each test reads the fields its route has). */
interface TaskJson {
  id: string;
  state: string;
  result?: unknown;
  error?: { code: string; message: string; reason: string; remote?: { type: string; stack: string } };
  history: { state: string; actor: string }[];
  output?: { stdout: string; stderr: string };
}
interface EndpointAnswer {
  endpoint: { id: string; owner: string; name: string; sharedWith: string[]; credentialId?: string };
  status: { connection: string; queuedTasks: number };
}
interface Answer extends EndpointAnswer {
  endpointToken: string;
  endpoints: EndpointAnswer[];
  code: string;
  message: string;
  taskIds: string[];
  groupId: string;
  task: TaskJson;
  tasks: TaskJson[];
  function: FunctionJson;
  functions: FunctionJson[];
}
interface OpenApiDoc {
  openapi: string;
  paths: Record<
    string,
    Record<
      string,
      { operationId: string; requestBody: { content: Record<string, { schema: Record<string, unknown> }> } }
    >
  >;
}

describe("the HTTP API", () => {
  let stack: LocalFabric;
  let base: string;
  let alice: string;
  let bob: string;

  beforeAll(async () => {
    const port = await freePort();
    stack = await LocalFabric.start({
      name: "http",
      brokerConfig: {
        http: { listen: `127.0.0.1:${port}` },
        // A small payload limit makes the body limit small (2 × 256 KiB + 1 MiB): a body over it
        // is written whole before the broker answers, so the client reads the 413 instead of
        // meeting a socket the server closed mid-write.
        limits: { maxPayloadBytes: 256 * 1024 },
      },
    });
    base = `http://127.0.0.1:${port}`;
    alice = await stack.broker.token("alice");
    bob = await stack.broker.token("bob");
  }, 60_000);

  afterAll(async () => {
    await stack?.stop();
  });

  const call = async (
    method: string,
    path: string,
    opts: { token?: string; body?: unknown; raw?: string } = {},
  ) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        ...(opts.body !== undefined || opts.raw !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(opts.raw !== undefined
        ? { body: opts.raw }
        : opts.body !== undefined
          ? { body: JSON.stringify(opts.body) }
          : {}),
    });
    const text = await res.text();
    return {
      status: res.status,
      type: res.headers.get("content-type") ?? "",
      json: JSON.parse(text) as Answer,
    };
  };

  it("registers, gets, lists, shares and deletes a function; gRPC sees the same one", async () => {
    const spec = { python: { source: "def main(x):\n    return x * 2\n", entryPoint: "main" }, timeoutS: 30 };
    const made = await call("POST", "/v1/functions", { token: alice, body: { name: "double", spec } });
    expect(made.status).toBe(200);
    const fn = made.json.function;
    expect(fn).toMatchObject({
      owner: "alice",
      name: "double",
      spec: { python: { entryPoint: "main" }, timeoutS: 30 },
    });
    expect((await call("GET", `/v1/functions/${fn.id}`, { token: alice })).json.function.id).toBe(fn.id);
    const listed = await call("GET", "/v1/functions", { token: alice });
    expect(listed.json.functions.map((f) => f.id)).toContain(fn.id);
    // The same object through gRPC: one service layer.
    const grpc = new Client({ address: stack.broker.address, token: alice });
    try {
      expect(await grpc.getFunction(fn.id)).toMatchObject({
        kind: "python",
        entryPoint: "main",
        owner: "alice",
      });
    } finally {
      grpc.close();
    }
    // Another user's function answers 404, exactly like an unknown id.
    const hidden = await call("GET", `/v1/functions/${fn.id}`, { token: bob });
    const otherId = fn.id.slice(0, -1) + (fn.id.endsWith("0") ? "1" : "0");
    const unknown = await call("GET", `/v1/functions/${otherId}`, { token: bob });
    expect(hidden.status).toBe(404);
    expect(unknown.status).toBe(404);
    expect(hidden.json.code).toBe("NOT_FOUND");
    expect(hidden.json.message.replace(fn.id, "ID")).toBe(unknown.json.message.replace(otherId, "ID"));
    const shared = await call("POST", `/v1/functions/${fn.id}/share`, {
      token: alice,
      body: { sharedWith: ["bob"] },
    });
    expect(shared.json.function.sharedWith).toEqual(["bob"]);
    expect((await call("GET", `/v1/functions/${fn.id}`, { token: bob })).status).toBe(200);
    expect((await call("DELETE", `/v1/functions/${fn.id}`, { token: bob })).status).toBe(403);
    expect((await call("DELETE", `/v1/functions/${fn.id}`, { token: alice })).status).toBe(200);
    expect((await call("GET", `/v1/functions/${fn.id}`, { token: alice })).status).toBe(404);
  });

  it("submits tasks, gets their results and errors as JSON, and cancels one", async () => {
    const ep = await stack.startEndpoint("alice", "http-ep", { workers: 2 });
    const endpointId = ep.endpointId();
    const js = await call("POST", "/v1/functions", {
      token: alice,
      body: {
        spec: {
          js: {
            source:
              "function f(x, o) { if (x < 0) throw new RangeError('negative: ' + x); console.log('got', x); return { twice: 2 * x, bytes: o && o.b }; }",
            entryPoint: "f",
          },
        },
      },
    });
    const slow = await call("POST", "/v1/functions", {
      token: alice,
      body: { spec: { shell: { command: "sleep 30" } } },
    });
    const submitted = await call("POST", "/v1/tasks", {
      token: alice,
      body: {
        tasks: [
          { functionId: js.json.function.id, endpointId, args: [21] },
          { functionId: js.json.function.id, endpointId, args: [-1] },
          { functionId: js.json.function.id, endpointId, args: [1], kwargs: { b: { $bytes: "AAEC" } } },
        ],
      },
    });
    expect(submitted.status).toBe(200);
    expect(submitted.json.taskIds).toHaveLength(3);
    const finished = async (id: string) => {
      for (let i = 0; i < 300; i++) {
        const t = (await call("GET", `/v1/tasks/${id}`, { token: alice })).json.task;
        if (["success", "failed", "cancelled", "expired"].includes(t.state)) return t;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`task ${id} did not finish`);
    };
    const [ok, bad, withBytes] = submitted.json.taskIds;
    const okTask = await finished(ok!);
    expect(okTask).toMatchObject({ state: "success", result: { twice: 42 } });
    expect(okTask.output?.stdout).toContain("got 21");
    expect(okTask.history.map((h) => h.state)).toContain("running");
    const badTask = await finished(bad!);
    expect(badTask.state).toBe("failed");
    expect(badTask.error?.message).toContain("negative: -1");
    expect(badTask.error?.remote?.type).toBe("RangeError");
    expect((await finished(withBytes!)).result).toEqual({ twice: 2, bytes: { $bytes: "AAEC" } });
    const many = await call("POST", "/v1/tasks/get", {
      token: alice,
      body: { taskIds: [bad, ok], omitResults: true },
    });
    expect(many.json.tasks.map((t) => t.id)).toEqual([bad, ok]);
    expect(many.json.tasks[1]!.result).toBeUndefined();
    // Bob sees none of them; a task of his own is another matter.
    expect((await call("GET", `/v1/tasks/${ok}`, { token: bob })).status).toBe(404);
    const long = await call("POST", "/v1/tasks", {
      token: alice,
      body: { tasks: [{ functionId: slow.json.function.id, endpointId }], noGroup: true },
    });
    const longId = long.json.taskIds[0]!;
    const cancelled = await call("POST", "/v1/tasks/cancel", { token: alice, body: { taskIds: [longId] } });
    expect(cancelled.status).toBe(200);
    expect((await finished(longId)).state).toBe("cancelled");
    const unknownFn = await call("POST", "/v1/tasks", {
      token: alice,
      body: { tasks: [{ functionId: js.json.function.id.slice(0, -1) + "x", endpointId }] },
    });
    expect(unknownFn.status).toBeGreaterThanOrEqual(400);
    expect(unknownFn.status).toBeLessThan(500);
  }, 60_000);

  it("registers, lists, gets, shares and deletes an endpoint", async () => {
    const made = await call("POST", "/v1/endpoints", { token: alice, body: { name: "beamline-7" } });
    expect(made.status).toBe(200);
    expect(made.json.endpoint).toMatchObject({ owner: "alice", name: "beamline-7" });
    expect(made.json.endpoint.credentialId).toBeUndefined();
    expect(made.json.endpointToken.split(".")).toHaveLength(3);
    const id = made.json.endpoint.id;
    const got = await call("GET", `/v1/endpoints/${id}`, { token: alice });
    expect(got.json.status).toMatchObject({ connection: "never-connected", queuedTasks: 0 });
    const listed = await call("GET", "/v1/endpoints", { token: alice });
    expect(listed.json.endpoints.map((e) => e.endpoint.id)).toContain(id);
    expect((await call("GET", `/v1/endpoints/${id}`, { token: bob })).status).toBe(404);
    const shared = await call("POST", `/v1/endpoints/${id}/policy`, {
      token: alice,
      body: { sharedWith: ["bob"] },
    });
    expect(shared.json.endpoint.sharedWith).toEqual(["bob"]);
    expect((await call("GET", `/v1/endpoints/${id}`, { token: bob })).status).toBe(200);
    // An endpoint's own credential is not a user's: it cannot delete it.
    const byAgent = await call("DELETE", `/v1/endpoints/${id}`, { token: made.json.endpointToken });
    expect(byAgent).toMatchObject({ status: 403, json: { code: "PERMISSION_DENIED" } });
    expect((await call("DELETE", `/v1/endpoints/${id}`, { token: alice })).status).toBe(200);
    expect((await call("GET", `/v1/endpoints/${id}`, { token: alice })).status).toBe(404);
  });

  it("answers bad input with a JSON error naming what was wrong, never a 500", async () => {
    const noToken = await call("GET", "/v1/functions");
    expect(noToken).toMatchObject({ status: 401, json: { code: "UNAUTHENTICATED" } });
    expect(noToken.json.message).toMatch(/no token/);
    const badToken = await call("GET", "/v1/functions", { token: "not-a-jwt" });
    expect(badToken).toMatchObject({ status: 401, json: { code: "UNAUTHENTICATED" } });
    // An empty body with a JSON content type is no body: a DELETE as curl users send it works,
    // a POST that needs one says so.
    const doomed = await call("POST", "/v1/functions", {
      token: alice,
      body: { spec: { js: { source: "function f() {}", entryPoint: "f" } } },
    });
    const deleted = await call("DELETE", `/v1/functions/${doomed.json.function.id}`, {
      token: alice,
      raw: "",
    });
    expect(deleted.status).toBe(200);
    const noBody = await call("POST", "/v1/functions", { token: alice, raw: "" });
    expect(noBody).toMatchObject({ status: 400, json: { code: "INVALID_ARGUMENT" } });
    const poisoned = await call("POST", "/v1/functions", {
      token: alice,
      raw: '{"__proto__": {"admin": true}}',
    });
    expect(poisoned).toMatchObject({ status: 400, json: { code: "INVALID_ARGUMENT" } });
    const badJson = await call("POST", "/v1/functions", { token: alice, raw: '{"spec": ' });
    expect(badJson).toMatchObject({ status: 400, json: { code: "INVALID_ARGUMENT" } });
    expect(badJson.json.message).toMatch(/not valid JSON/);
    const unknownField = await call("POST", "/v1/functions", {
      token: alice,
      body: { spec: { js: { source: "function f() {}", entryPoint: "f" } }, colour: "red" },
    });
    expect(unknownField).toMatchObject({ status: 400, json: { code: "INVALID_ARGUMENT" } });
    expect(unknownField.json.message).toMatch(/colour/);
    const wrongType = await call("POST", "/v1/functions", {
      token: alice,
      body: { spec: { js: { source: 3, entryPoint: "f" } } },
    });
    expect(wrongType.json.message).toMatch(/spec\.js\.source/);
    const twoKinds = await call("POST", "/v1/functions", {
      token: alice,
      body: { spec: { js: { source: "function f() {}", entryPoint: "f" }, shell: { command: "true" } } },
    });
    expect(twoKinds.json.message).toMatch(/exactly one of js, shell or python/);
    // The service's own checks answer the same way (an empty entry point).
    const service = await call("POST", "/v1/functions", {
      token: alice,
      body: { spec: { python: { source: "x = 1\n", entryPoint: "" } } },
    });
    expect(service).toMatchObject({ status: 400, json: { code: "INVALID_ARGUMENT" } });
    const route = await call("GET", "/v1/nothing-here", { token: alice });
    expect(route).toMatchObject({ status: 404, json: { code: "NOT_FOUND" } });
    expect(route.json.message).toMatch(/openapi\.json/);
    const method = await call("PUT", "/v1/functions", { token: alice, body: {} });
    expect(method.status).toBe(404);
    const big = await call("POST", "/v1/functions", {
      token: alice,
      raw: JSON.stringify({ spec: { js: { source: "x".repeat(1600 * 1024), entryPoint: "f" } } }),
    });
    expect(big, big.json.message).toMatchObject({ status: 429, json: { code: "RESOURCE_EXHAUSTED" } });
    expect(big.type).toMatch(/application\/json/);
  });

  it("serves an OpenAPI 3.1 document that has every route, generated from the validating schemas", async () => {
    const res = await fetch(`${base}/v1/openapi.json`);
    expect(res.status).toBe(200);
    const doc = { json: (await res.json()) as OpenApiDoc };
    expect(doc.json.openapi).toBe("3.1.0");
    const routes = [
      ...functionRoutes({} as never),
      ...endpointRoutes({} as never),
      ...taskRoutes({} as never),
    ];
    for (const r of routes) {
      const op = doc.json.paths[r.path]?.[r.method.toLowerCase()];
      expect(op, `${r.method} ${r.path}`).toBeDefined();
      expect(op?.operationId).toBe(r.operationId);
    }
    const register =
      doc.json.paths["/v1/functions"]!["post"]!.requestBody.content["application/json"]!.schema;
    expect(register.additionalProperties).toBe(false);
    expect(JSON.stringify(register)).toContain("entryPoint");
    expect(JSON.stringify(doc.json)).not.toContain("$ref");
  });
});
