/**
 * The demo: a whole fabric on this machine — a local nats-server (file store), the broker, one
 * endpoint with a local provider — then a JS function and a shell function, 1,000 tasks, and a
 * summary. Everything it starts, it stops. Run it with `npm run demo`.
 */
import { ensureDockerEngine, ensureWorkerImages, freePort, LocalFabric } from "../devkit/index.js";

const TOTAL = 1_000;
/** `npm run demo -- --containers`: every function runs in a warm, hardened Docker container. */
const CONTAINERS = process.argv.includes("--containers");
const SHELL_TASKS = 100;

/** A small analysis step: statistics of a synthetic detector trace. */
function analyseTrace(seed: number, samples: number) {
  let x = seed >>> 0;
  let sum = 0;
  let sumSq = 0;
  let peak = -Infinity;
  for (let i = 0; i < samples; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const v = Math.sin(i / 25) * 10 + (x / 2 ** 32 - 0.5);
    sum += v;
    sumSq += v * v;
    if (v > peak) peak = v;
  }
  const mean = sum / samples;
  return { seed, mean, std: Math.sqrt(sumSq / samples - mean * mean), peak };
}

/** What a notebook or curl does: register a function, run it and poll its result, as JSON over HTTP. */
async function oneTaskOverHttp(api: string, token: string, endpointId: string): Promise<unknown> {
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${api}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const json = (await res.json()) as Record<string, unknown>;
    if (!res.ok) throw new Error(`${method} ${path}: ${String(json["code"])}: ${String(json["message"])}`);
    return json;
  };
  const fn = (await call("POST", "/v1/functions", {
    name: "add",
    spec: { js: { source: "function add(a, b) { return a + b; }", entryPoint: "add" } },
  })) as { function: { id: string } };
  const submitted = (await call("POST", "/v1/tasks", {
    tasks: [{ functionId: fn.function.id, endpointId, args: [2, 3] }],
    noGroup: true,
  })) as { taskIds: string[] };
  for (let i = 0; i < 600; i++) {
    const { task } = (await call("GET", `/v1/tasks/${submitted.taskIds[0]}`)) as {
      task: { state: string; result?: unknown; error?: { message: string } };
    };
    if (task.state === "success") return task.result;
    if (["failed", "cancelled", "expired"].includes(task.state))
      throw new Error(`the HTTP task ${task.state}: ${task.error?.message ?? ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the HTTP task did not finish in 30 s");
}

async function main(): Promise<number> {
  const say = (s: string) => process.stdout.write(`${s}\n`);
  const httpPort = await freePort();
  const fabric = await LocalFabric.start({
    name: "demo",
    brokerConfig: { http: { listen: `127.0.0.1:${httpPort}` } },
  });
  try {
    say(`nats-server   ${fabric.nats.url} (JetStream file store in ${fabric.nats.storeDir})`);
    say(`broker        ${fabric.broker.address} (gRPC), http://127.0.0.1:${httpPort}/v1 (HTTP/JSON)`);
    let container: Record<string, unknown> | undefined;
    if (CONTAINERS) {
      const engine = fabric.adopt(await ensureDockerEngine());
      const tags = await ensureWorkerImages({
        docker: engine.docker,
        onProgress: (l) => say(`images        ${l}`),
      });
      container = { runtime: "docker", socket: engine.socketPath, image: tags.js, shellImage: tags.shell };
      say(`containers    docker (${engine.socketPath}), images ${tags.js}, ${tags.shell}`);
    }
    const endpoint = await fabric.startEndpoint("demo-user", "demo", {
      workers: 2,
      blocks: 1,
      ...(container ? { extra: { container } } : {}),
    });
    const endpointId = endpoint.endpointId();
    say(`endpoint      demo (${endpointId}), local provider, 1 block × 2 workers`);

    const client = await fabric.client("demo-user");
    const analyse = await client.registerFunction(analyseTrace, { name: "analyse-trace" });
    const checksum = await client.registerShellFunction("printf '%s' {sample} | sha256sum | cut -c1-16", {
      name: "checksum",
      walltimeSeconds: 60,
    });
    say(`functions     analyse-trace (JS) ${analyse}`);
    say(`              checksum (shell)   ${checksum}`);

    const t0 = performance.now();
    const tasks = Array.from({ length: TOTAL }, (_, i) =>
      i < TOTAL - SHELL_TASKS
        ? { functionId: analyse, endpointId, args: [i, 2_000] }
        : { functionId: checksum, endpointId, kwargs: { sample: `sample-${i}` } },
    );
    const { groupId } = await client.submitBatch(tasks);
    let succeeded = 0;
    let failed = 0;
    let example: unknown;
    let shellExample: unknown;
    for await (const outcome of client.results({ groupId }, { timeoutMs: 300_000 })) {
      if (outcome.ok) {
        succeeded++;
        const v = outcome.value as { seed?: number; stdout?: string };
        if (v.seed === 0) example = v;
        if (v.stdout !== undefined && shellExample === undefined) shellExample = v;
      } else {
        failed++;
        if (failed <= 3)
          say(`failed        ${outcome.taskId}: ${outcome.error.code}: ${outcome.error.message}`);
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    say(
      `results       ${succeeded} succeeded, ${failed} failed in ${seconds.toFixed(2)} s (${Math.round(TOTAL / seconds)} tasks/s)`,
    );
    say(`example       analyse-trace(0) = ${JSON.stringify(example)}`);
    say(`example       checksum = ${JSON.stringify(shellExample)}`);
    const viaHttp = await oneTaskOverHttp(
      `http://127.0.0.1:${httpPort}`,
      await fabric.broker.token("demo-user"),
      endpointId,
    );
    say(`over HTTP     add(2, 3) = ${JSON.stringify(viaHttp)} (curl works the same: docs/http.md)`);
    say(`demo: ${succeeded}/${TOTAL} tasks succeeded`);
    return succeeded === TOTAL && viaHttp === 5 ? 0 : 1;
  } finally {
    await fabric.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.stdout.write(`demo: 0/${TOTAL} tasks succeeded\n`);
    process.exit(1);
  },
);
