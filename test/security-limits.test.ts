import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";

import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";

import { FabricError } from "../common/index.js";
import { ConnectEndpointRequest, RegisterFunctionRequest } from "../proto/index.js";
import { Client } from "../sdk/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { jsSpec, RawClients } from "./support/raw-clients.js";

const KiB = 1024;

/** `count` copies of `entry` after `head`: a message of many repeated fields, built without objects. */
function repeated(head: Uint8Array, entry: number[], count: number): Buffer {
  const out = Buffer.allocUnsafe(head.length + entry.length * count);
  out.set(head, 0);
  const one = Buffer.from(entry);
  out.set(one, head.length);
  // Doubling copies: 50 MB in a few dozen calls.
  let filled = entry.length;
  const total = entry.length * count;
  while (filled < total) {
    const n = Math.min(filled, total - filled);
    out.copy(out, head.length + filled, head.length, head.length + n);
    filled += n;
  }
  return out;
}

/** A length-delimited field `fieldNo` holding `value`. */
function lenField(fieldNo: number, value: Uint8Array): Buffer {
  const len: number[] = [];
  let n = value.length;
  while (n >= 0x80) {
    len.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  len.push(n);
  return Buffer.concat([Buffer.from([(fieldNo << 3) | 2, ...len]), value]);
}

/** Calls `path` with raw request bytes; resolves the status (0 = OK) and its details. */
function rawUnary(
  c: RawClients,
  path: string,
  bytes: Uint8Array,
  md: grpc.Metadata,
): Promise<{ code: number; details: string }> {
  return new Promise((resolve) => {
    c.tasks.makeUnaryRequest(
      path,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => b,
      bytes,
      md,
      { deadline: Date.now() + 30_000 },
      (err) => resolve(err ? { code: err.code, details: err.details } : { code: 0, details: "" }),
    );
  });
}

describe("hostile requests: sizes, counts and strings are checked before anything is decoded", () => {
  const stack = useFabric({
    brokerConfig: { limits: { callsPerSecond: 0 } },
    endpoint: { name: "limits", workers: 2 },
  });
  const noToken = new grpc.Metadata();

  async function stillServes(): Promise<void> {
    expect(stack.fabric.broker.process!.running).toBe(true);
    const fid = await stack.client.registerFunction(function inc(x: number) {
      return x + 1;
    });
    expect(
      await stack.client.waitForResult(await stack.client.run(fid, stack.endpointId, [41]), {
        timeoutMs: 30_000,
      }),
    ).toBe(42);
  }

  it("a 50 MB request of 16.7 million one-character ids without a token is refused UNAUTHENTICATED, three at once, and the broker lives", async () => {
    const body = repeated(new Uint8Array(0), [0x0a, 0x01, 0x61], 16_700_000);
    expect(body.length).toBeGreaterThan(50_000_000);
    const answers = await Promise.all(
      [0, 1, 2].map(() => rawUnary(stack.raw, "/fabric.v1.TaskService/GetTasks", body, noToken)),
    );
    for (const a of answers) expect(a.code).toBe(grpc.status.UNAUTHENTICATED);
    await stillServes();
  }, 120_000);

  it("the same with a token: a ShareFunction of 16.7 million entries and a GetTasks past the id limit are RESOURCE_EXHAUSTED", async () => {
    const fid = await stack.client.registerFunction(function one() {
      return 1;
    });
    const share = repeated(lenField(1, Buffer.from(fid)), [0x1a, 0x01, 0x61], 16_700_000);
    const shared = await rawUnary(stack.raw, "/fabric.v1.FunctionService/ShareFunction", share, stack.raw.md);
    expect(shared.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(shared.details).toMatch(/a ShareFunction request is \d+ bytes; this method accepts at most \d+/);

    const ids = repeated(new Uint8Array(0), [...lenField(1, Buffer.from(randomUUID()))], 100_001);
    const got = await rawUnary(stack.raw, "/fabric.v1.TaskService/GetTasks", ids, stack.raw.md);
    expect(got.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(got.details).toMatch(/GetTasks request: task_ids has more than 100,000 entries/);

    // 16 million empty tasks in 32 MB: within the size a batch may have, far past its count.
    const tasks = repeated(new Uint8Array(0), [0x0a, 0x00], 16_000_000);
    const submitted = await rawUnary(stack.raw, "/fabric.v1.TaskService/SubmitTasks", tasks, stack.raw.md);
    expect(submitted.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(submitted.details).toMatch(/SubmitTasks request: tasks has more than 10,000 entries/);
    await stillServes();
  }, 120_000);

  it("a function source of exactly the limit registers and runs, with inline arguments beside it; one byte more is INVALID_ARGUMENT", async () => {
    const body = "function big(x) { return x.length; }\n//";
    const source = body + "x".repeat(768 * KiB - body.length);
    expect(Buffer.byteLength(source)).toBe(768 * KiB);
    const fid = await stack.raw.registerJs(source, "big");
    // Arguments of exactly the inline limit (256 KiB of JSON): not beside 768 KiB of source in one
    // 1 MiB message, so they go through the object store instead.
    const arg = "y".repeat(256 * KiB - 4);
    expect(
      await stack.client.waitForResult(await stack.client.run(fid, stack.endpointId, [arg]), {
        timeoutMs: 30_000,
      }),
    ).toBe(arg.length);

    const over = RegisterFunctionRequest.encode({
      name: "too-big",
      description: "",
      spec: jsSpec(source + "x", "big"),
    }).finish();
    const tooBig = await rawUnary(
      stack.raw,
      "/fabric.v1.FunctionService/RegisterFunction",
      over,
      stack.raw.md,
    );
    expect(tooBig.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(tooBig.details).toMatch(/spec\.js\.source is 786,433 bytes; at most 786,432 are allowed/);
  }, 120_000);

  it("a 5 MB entry point or hostname is refused by size, a long one naming the field; invalid UTF-8 is INVALID_ARGUMENT; no log line carries them", async () => {
    const register = (entryPointBytes: number) =>
      rawUnary(
        stack.raw,
        "/fabric.v1.FunctionService/RegisterFunction",
        RegisterFunctionRequest.encode({
          name: "e",
          description: "",
          spec: jsSpec("function f() {}", "f".repeat(entryPointBytes)),
        }).finish(),
        stack.raw.md,
      );
    const e = await register(5_000_000);
    expect(e.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    // Past the request's own size limit already (a name or entry point is short).
    expect(e.details).toMatch(/RegisterFunction request is 5000\d+ bytes/);
    const e2 = await register(300_000);
    expect(e2.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(e2.details).toMatch(/spec\.js\.entry_point is 300,000 bytes; at most 1,024 are allowed/);

    const epMd = new grpc.Metadata();
    epMd.set("authorization", `Bearer ${(await stack.raw.newEndpoint("host-name")).token}`);
    const connect = (hostnameBytes: number) =>
      rawUnary(
        stack.raw,
        "/fabric.v1.EndpointService/ConnectEndpoint",
        ConnectEndpointRequest.encode({ agentVersion: "1", hostname: "h".repeat(hostnameBytes) }).finish(),
        epMd,
      );
    const h = await connect(5_000_000);
    expect(h.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    const h2 = await connect(300);
    expect(h2.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(h2.details).toMatch(/ConnectEndpoint request: hostname is 300 bytes; at most 255/);

    // A name whose bytes are not UTF-8 (0xff never is), and arguments that are not.
    const badName = Buffer.concat([
      lenField(1, Buffer.from([0x61, 0xff, 0x62])),
      lenField(
        3,
        lenField(
          1,
          Buffer.concat([lenField(1, Buffer.from("function f() {}")), lenField(2, Buffer.from("f"))]),
        ),
      ),
    ]);
    const n = await rawUnary(stack.raw, "/fabric.v1.FunctionService/RegisterFunction", badName, stack.raw.md);
    expect(n.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(n.details).toMatch(/RegisterFunction request: name is not valid UTF-8/);
    const fid = await stack.client.registerFunction(function id(x: unknown) {
      return x;
    });
    const task = Buffer.concat([
      lenField(1, Buffer.from(fid)),
      lenField(2, Buffer.from(stack.endpointId)),
      lenField(3, Buffer.from([0x5b, 0x22, 0xc3, 0x28, 0x22, 0x5d])), // ["\xc3("]: a broken sequence
    ]);
    const t = await rawUnary(
      stack.raw,
      "/fabric.v1.TaskService/SubmitTasks",
      lenField(1, task),
      stack.raw.md,
    );
    expect(t).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: "tasks[0].args is not valid UTF-8" });

    const longest = Math.max(...stack.fabric.broker.process!.output.split("\n").map((l) => l.length));
    expect(longest).toBeLessThan(10_000);
    await stillServes();
  }, 120_000);

  it("an over-long token is answered UNAUTHENTICATED at once, from grpc-js and from Python's grpcio; the SDK refuses one itself", async () => {
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${"a".repeat(100 * KiB)}`);
    const a = await rawUnary(stack.raw, "/fabric.v1.FunctionService/ListFunctions", new Uint8Array(0), md);
    expect(a.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(a.details).toMatch(/the token is 102407 characters/);

    // An independent client (C-core): up to HTTP/2's 64 KiB per header it gets the broker's answer.
    // Past it nghttp2 closes the connection (GOAWAY, COMPRESSION_ERROR) before the broker sees the
    // call, and grpcio waits for its deadline: the README states that limit.
    const py = [
      "import grpc, sys",
      `ch = grpc.insecure_channel("${stack.fabric.broker.address}")`,
      'm = ch.unary_unary("/fabric.v1.FunctionService/ListFunctions", request_serializer=lambda b: b, response_deserializer=lambda b: b)',
      "for n in (17000, 60000):",
      "    try:",
      '        m(b"", metadata=[("authorization", "Bearer " + "a" * n)], timeout=10)',
      '        print(n, "OK")',
      "    except grpc.RpcError as e:",
      "        print(n, e.code().name, e.details())",
    ].join("\n");
    const out = execFileSync("/usr/bin/python3", ["-c", py], { encoding: "utf8", timeout: 30_000 });
    expect(out).toMatch(/^17000 UNAUTHENTICATED the token is 17007 characters/m);
    expect(out).toMatch(/^60000 UNAUTHENTICATED the token is 60007 characters/m);

    expect(() => new Client({ address: stack.fabric.broker.address, token: "a".repeat(17 * KiB) })).toThrow(
      /token: a token is at most 16 KiB/,
    );
    await stillServes();
  }, 60_000);

  it("endpoint credentials may connect and read their endpoint, but not delete it", async () => {
    const { id, token } = await stack.raw.newEndpoint("no-delete");
    const asEndpoint = new Client({ address: stack.fabric.broker.address, token });
    try {
      expect((await asEndpoint.getEndpoint(id)).id).toBe(id);
      const err = await asEndpoint.deleteEndpoint(id).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FabricError);
      expect((err as FabricError).code).toBe("PERMISSION_DENIED");
      expect((err as FabricError).message).toMatch(/endpoint credentials cannot delete an endpoint/);
      expect((await stack.client.getEndpoint(id)).id).toBe(id);
    } finally {
      asEndpoint.close();
    }
  }, 60_000);
});
