/**
 * The Python client's own round trip over the HTTP API: clients/python/bench_roundtrip.py (run +
 * get_result of a warm no-op Python function, sequential) against a fabric started here, whose
 * broker serves HTTP and whose endpoint runs FABRIC_BENCH_PYTHON (default /usr/bin/python3, which
 * runs the client too).
 */
import { execFile } from "node:child_process";
import path from "node:path";

import { LocalFabric, ROOT, freePort } from "../devkit/index.js";

const PYTHON = process.env["FABRIC_BENCH_PYTHON"] ?? "/usr/bin/python3";

/** Warm no-op round trips of the Python client: p50 and p99 over `calls`, after `warmup` (the broker's JIT warms up over a few hundred). */
export async function pythonClient(calls = 200, warmup = 500): Promise<Record<string, unknown>> {
  const port = await freePort();
  const fabric = await LocalFabric.start({
    name: "bench-pyclient",
    brokerConfig: { http: { listen: `127.0.0.1:${port}` } },
  });
  try {
    const endpoint = await fabric.startEndpoint("bench", "bench", {
      workers: 2,
      extra: { python: { executable: PYTHON } },
    });
    const env = {
      ...process.env,
      FABRIC_HTTP_ADDRESS: `http://127.0.0.1:${port}`,
      FABRIC_TOKEN: await fabric.broker.token("bench"),
      FABRIC_ENDPOINT_ID: endpoint.endpointId(),
    };
    const script = path.join(ROOT, "clients", "python", "bench_roundtrip.py");
    const args = [script, "--calls", String(calls), "--warmup", String(warmup)];
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(PYTHON, args, { env, timeout: 300_000, killSignal: "SIGKILL" }, (err, out, stderr) => {
        if (err) reject(new Error(`bench_roundtrip.py failed: ${err.message}\n${stderr}`));
        else resolve(out);
      });
    });
    const line = stdout.trim().split("\n").pop() ?? "";
    return JSON.parse(line) as Record<string, unknown>;
  } finally {
    await fabric.stop();
  }
}
