/**
 * Micro-benchmark of the Python worker runtime alone (no agent, no manager): spawn-to-hello time,
 * and round trips per second of a no-op function through ONE runtime over fd 3, with one task in
 * flight (a worker's latency-bound loop) and with a window of tasks in flight (the runtime's own
 * ceiling), the first task's time, and the CPU time per task of the runtime and of this process.
 * Prints medians of several runs. Not part of the bench list; run it by hand after `npm run build`:
 *
 *   node endpoint/worker/python/bench-runtime.mjs [--python python3] [--runs 5] [--tasks 20000] [--window 16]
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { readFrames } from "../../../dist/common/framing.js";
import {
  decodePythonFrame,
  encodePythonRunFrame,
  pythonRuntimePath,
} from "../../../dist/endpoint/worker/python-protocol.js";

const { values } = parseArgs({
  options: {
    python: { type: "string", default: "python3" },
    runs: { type: "string", default: "5" },
    tasks: { type: "string", default: "20000" },
    window: { type: "string", default: "16" },
  },
});
const runs = Number(values.runs);
const tasks = Number(values.tasks);
const window = Number(values.window);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const noop = "def noop():\n    return None\n";
const empty = new Uint8Array(0);

/** A runtime over fd 3, its messages delivered in order to `onMessage`. */
function start(onMessage) {
  const t0 = process.hrtime.bigint();
  const child = spawn(values.python, [pythonRuntimePath()], {
    stdio: ["ignore", "inherit", "inherit", "pipe"],
  });
  const link = child.stdio[3];
  const hello = new Promise((resolve, reject) => {
    let first = true;
    readFrames(
      link,
      (frame) => {
        const msg = decodePythonFrame(frame);
        if (first) {
          first = false;
          resolve(Number(process.hrtime.bigint() - t0) / 1e6);
        } else onMessage(msg);
      },
      reject,
    );
    child.on("exit", (code, signal) => reject(new Error(`runtime exited (${code ?? signal})`)));
  });
  return { child, link, hello };
}

/** CPU seconds (user + system) a process has used, from /proc (clock ticks of 10 ms). */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function stop(rt) {
  const exited = new Promise((resolve) => rt.child.on("exit", resolve));
  rt.link.end();
  await exited;
}

/** Round trips per second of `count` no-op tasks, `inFlight` at a time. */
async function roundTrips(count, inFlight) {
  let sent = 0;
  let done = 0;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const send = () => {
    sent++;
    rt.link.write(
      encodePythonRunFrame({
        taskId: `t${sent}`,
        functionId: "noop",
        source: noop,
        entryPoint: "noop",
        argsJson: empty,
        kwargsJson: empty,
      }),
    );
  };
  const rt = start((msg) => {
    if (msg.op !== "result" || !msg.ok) throw new Error(`unexpected ${JSON.stringify(msg)}`);
    done++;
    if (done === count) finish(process.hrtime.bigint());
    else if (sent < count) send();
  });
  await rt.hello;
  const cpu0 = cpuSeconds(rt.child.pid);
  const node0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < Math.min(inFlight, count); i++) send();
  const t1 = await finished;
  const node = process.cpuUsage(node0);
  cpuPerTask.python.push(((cpuSeconds(rt.child.pid) - cpu0) / count) * 1e6);
  cpuPerTask.node.push((node.user + node.system) / count);
  await stop(rt);
  return count / (Number(t1 - t0) / 1e9);
}
const cpuPerTask = { python: [], node: [] };

const hellos = [];
const firsts = [];
for (let i = 0; i < Math.max(runs, 10); i++) {
  let answered;
  const first = new Promise((resolve) => (answered = resolve));
  const rt = start(() => answered(process.hrtime.bigint()));
  hellos.push(await rt.hello);
  const t0 = process.hrtime.bigint();
  rt.link.write(
    encodePythonRunFrame({
      taskId: "t",
      functionId: "noop",
      source: noop,
      entryPoint: "noop",
      argsJson: empty,
      kwargsJson: empty,
    }),
  );
  firsts.push(Number((await first) - t0) / 1e6);
  await stop(rt);
}
await roundTrips(2000, 1); // warm the page cache and the JIT
cpuPerTask.python.length = cpuPerTask.node.length = 0;
const serial = [];
const windowed = [];
for (let i = 0; i < runs; i++) {
  serial.push(await roundTrips(tasks, 1));
  windowed.push(await roundTrips(tasks, window));
}
const fmt = (x) => Math.round(x).toLocaleString("en-US");
console.log(`python: ${values.python} (runtime ${pythonRuntimePath()})`);
console.log(
  `spawn to hello: median ${median(hellos).toFixed(1)} ms over ${hellos.length} starts (min ${Math.min(...hellos).toFixed(1)} ms)`,
);
console.log(`first no-op task after hello (compiling it): median ${median(firsts).toFixed(2)} ms`);
console.log(
  `no-op round trips, 1 in flight: median ${fmt(median(serial))}/s over ${runs} runs of ${tasks} (${serial.map(fmt).join(", ")})`,
);
console.log(
  `no-op round trips, ${window} in flight: median ${fmt(median(windowed))}/s (${windowed.map(fmt).join(", ")})`,
);
console.log(
  `CPU per task (all runs): runtime ${median(cpuPerTask.python).toFixed(1)} µs, this Node process ${median(cpuPerTask.node).toFixed(1)} µs (medians)`,
);
