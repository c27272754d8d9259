/**
 * Python functions: warm round trip beside JavaScript's, throughput, and cold starts. The
 * endpoint runs FABRIC_BENCH_PYTHON (default /usr/bin/python3, Debian's, which has numpy).
 */
import { LATENCY_WARMUP, runInBatches, startBenchFabric, type BenchFabric } from "./core.js";
import { percentile, round } from "./stats.js";

const PYTHON = process.env["FABRIC_BENCH_PYTHON"] ?? "/usr/bin/python3";
const pythonEndpoint = (workers = 2) => startBenchFabric(workers, { python: { executable: PYTHON } });

const registerPyNoop = (stack: BenchFabric, name = "noop", body = "    return None") =>
  stack.client.registerFunction({ python: { source: `def ${name}():\n${body}\n`, entryPoint: name } });

/** Submit → result of one task, in ms. */
async function roundTrip(stack: BenchFabric, fid: string): Promise<number> {
  const t0 = performance.now();
  const tid = await stack.client.run(fid, stack.endpointId, []);
  await stack.client.waitForResult(tid, { timeoutMs: 60_000 });
  return performance.now() - t0;
}

/**
 * Sequential warm no-op round trips of a Python and a JavaScript function, alternating task by
 * task on one endpoint of 2 workers (one of each kind once warm), after a warm-up.
 */
export async function pythonLatency(n = 1_000): Promise<Record<string, number>> {
  const stack = await pythonEndpoint(2);
  try {
    const py = await registerPyNoop(stack);
    const js = await stack.client.registerFunction(function noop() {
      return null;
    });
    for (let i = 0; i < LATENCY_WARMUP; i++) {
      await roundTrip(stack, py);
      await roundTrip(stack, js);
    }
    const pySamples: number[] = [];
    const jsSamples: number[] = [];
    for (let i = 0; i < n; i++) {
      pySamples.push(await roundTrip(stack, py));
      jsSamples.push(await roundTrip(stack, js));
    }
    const pyP50 = percentile(pySamples, 50);
    const jsP50 = percentile(jsSamples, 50);
    return {
      p50_ms: round(pyP50),
      p99_ms: round(percentile(pySamples, 99)),
      js_p50_ms: round(jsP50),
      js_p99_ms: round(percentile(jsSamples, 99)),
      p50_ratio_to_js: round(pyP50 / jsP50),
      tasks: n,
    };
  } finally {
    await stack.fabric.stop();
  }
}

/** 100,000 no-op Python tasks in batches of 10,000: first submit to last result. */
export async function pythonThroughput(n = 100_000, batch = 10_000): Promise<Record<string, number>> {
  const stack = await pythonEndpoint(2);
  try {
    const fid = await registerPyNoop(stack);
    const task = { functionId: fid, endpointId: stack.endpointId };
    await runInBatches(stack.client, task, 200, 200, 60_000);
    const t0 = performance.now();
    const ok = await runInBatches(stack.client, task, n, batch, 600_000);
    const seconds = (performance.now() - t0) / 1000;
    return { tasks_per_s: round(n / seconds, 0), seconds: round(seconds), tasks: n, succeeded: ok };
  } finally {
    await stack.fabric.stop();
  }
}

/**
 * Cold starts, each on a new endpoint whose workers are warm Node workers: a first Python task
 * (an interpreter started for it, in place of an idle Node worker), then the first task of a
 * function that imports numpy (on that warm interpreter), then a second task of it. Medians of
 * `runs`.
 */
export async function pythonCold(runs = 5): Promise<Record<string, number>> {
  const first: number[] = [];
  const numpyFirst: number[] = [];
  const numpySecond: number[] = [];
  for (let r = 0; r < runs; r++) {
    const stack = await pythonEndpoint(1);
    try {
      // The Node worker is up and idle: the endpoint has run a task.
      const js = await stack.client.registerFunction(function noop() {
        return null;
      });
      await roundTrip(stack, js);
      first.push(await roundTrip(stack, await registerPyNoop(stack)));
      const heavy = await stack.client.registerFunction({
        python: { source: "import numpy\n\ndef main():\n    return numpy.__version__\n", entryPoint: "main" },
      });
      numpyFirst.push(await roundTrip(stack, heavy));
      numpySecond.push(await roundTrip(stack, heavy));
    } finally {
      await stack.fabric.stop();
    }
  }
  const med = (xs: number[]) => round(percentile(xs, 50), 1);
  return {
    new_interpreter_first_result_ms: med(first),
    numpy_function_first_task_ms: med(numpyFirst),
    numpy_function_second_task_ms: med(numpySecond),
    runs,
  };
}
