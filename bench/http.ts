/**
 * `http_latency`: a warm no-op task through the HTTP API against the same task through the SDK's
 * gRPC path, on one fabric in one run, the two interleaved task by task so both see the same
 * machine. HTTP: a keep-alive connection, `POST /v1/tasks` then the long-poll `POST /v1/tasks/wait`
 * until it has finished. gRPC: `run` + `waitForResult` (what `latency` measures).
 */
import http from "node:http";

import { LocalFabric, freePort } from "../devkit/index.js";
import { LATENCY_WARMUP } from "./core.js";
import { percentile, round } from "./stats.js";

/** A JSON POST over `agent`; resolves with the parsed answer, rejects on any status but 200. */
function postJson(
  agent: http.Agent,
  port: number,
  token: string,
  path: string,
  body: unknown,
): Promise<unknown> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        agent,
        method: "POST",
        path,
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(payload),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          if (res.statusCode !== 200) reject(new Error(`POST ${path}: ${res.statusCode} ${text}`));
          else resolve(JSON.parse(text));
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

/**
 * `n` timed round trips each way (HTTP and gRPC alternating, which goes first switching every
 * task) after `warmup` untimed ones each; p50 and p99 of both, the difference of the p50s, and
 * the p50 of the HTTP submit alone.
 */
export async function httpLatency(n = 500, warmup = LATENCY_WARMUP): Promise<Record<string, number>> {
  const port = await freePort();
  const fabric = await LocalFabric.start({
    name: "bench-http",
    brokerConfig: { http: { listen: `127.0.0.1:${port}` } },
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const endpoint = await fabric.startEndpoint("bench", "bench", { workers: 2 });
    const endpointId = endpoint.endpointId();
    const client = await fabric.client("bench");
    const token = await fabric.broker.token("bench");
    const functionId = await client.registerFunction(function noop() {
      return null;
    });
    /** The submit's share of each HTTP round trip (the rest is the long-poll). */
    const submitMs: number[] = [];
    const viaHttp = async () => {
      const t0 = performance.now();
      // A task on its own joins no group, as the SDK's `run` does.
      const { taskIds } = (await postJson(agent, port, token, "/v1/tasks", {
        tasks: [{ functionId, endpointId, args: [] }],
        noGroup: true,
      })) as { taskIds: string[] };
      submitMs.push(performance.now() - t0);
      const { tasks } = (await postJson(agent, port, token, "/v1/tasks/wait", {
        taskIds,
        timeoutMs: 30_000,
      })) as { tasks: { state: string }[] };
      if (tasks[0]?.state !== "success") throw new Error(`task ${taskIds[0]}: ${JSON.stringify(tasks)}`);
      return performance.now() - t0;
    };
    const viaGrpc = async () => {
      const t0 = performance.now();
      await client.waitForResult(await client.run(functionId, endpointId, []), { timeoutMs: 30_000 });
      return performance.now() - t0;
    };
    for (let i = 0; i < warmup; i++) {
      await viaHttp();
      await viaGrpc();
    }
    submitMs.length = 0;
    const httpMs: number[] = [];
    const grpcMs: number[] = [];
    for (let i = 0; i < n; i++) {
      if (i % 2 === 0) {
        httpMs.push(await viaHttp());
        grpcMs.push(await viaGrpc());
      } else {
        grpcMs.push(await viaGrpc());
        httpMs.push(await viaHttp());
      }
    }
    const httpP50 = percentile(httpMs, 50);
    const grpcP50 = percentile(grpcMs, 50);
    return {
      http_p50_ms: round(httpP50),
      http_p99_ms: round(percentile(httpMs, 99)),
      http_submit_p50_ms: round(percentile(submitMs, 50)),
      grpc_p50_ms: round(grpcP50),
      grpc_p99_ms: round(percentile(grpcMs, 99)),
      p50_diff_ms: round(httpP50 - grpcP50),
      tasks: n,
    };
  } finally {
    agent.destroy();
    await fabric.stop();
  }
}
