/**
 * The worker process: runs user functions, one task at a time. It talks to its manager over
 * fd 3 (frames of WorkerRequest / WorkerResponse), so whatever the function prints on stdout or
 * stderr can never corrupt the protocol.
 *
 * In a container, fd 3 cannot be handed over: the worker connects instead to the unix socket named by
 * FABRIC_WORKER_SOCKET, which the manager listens on in a directory mounted read-only.
 *
 * Environment: FABRIC_WORKER_ID, FABRIC_SHELL_WALLTIME_S, FABRIC_MAX_RESULT_BYTES, FABRIC_WORKER_SOCKET.
 */
import net from "node:net";

import { readMessages, writeFrame } from "../../common/lean.js";
import type { Logger } from "../../common/logger.js";
// The worker protocol alone: the proto/index barrel also loads @grpc/grpc-js, which would slow
// every worker's start.
import { WorkerRequest, WorkerResponse } from "../../proto/messages.js";
import type { WorkItem } from "../../proto/index.js";
import { executeWorkItem } from "./execute.js";
import { OutputCapture } from "./output-capture.js";
import type { ExecuteOptions } from "./execute.js";
import { killRunningShellCommands } from "./shell.js";

function positiveEnv(name: string, fallback: number): number {
  const n = Number(process.env[name]);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}

const workerId = process.env["FABRIC_WORKER_ID"] || `worker-${process.pid}`;
/**
 * The logger, loaded at its first use: a worker logs only trouble, and loading the logging library
 * up front would slow every worker's start, which is on the path of a new block's first task.
 */
let logger: Promise<Logger> | undefined;
function log(): Promise<Logger> {
  logger ??= import("../../common/logger.js").then(({ createLogger }) =>
    createLogger("fabric-worker").child({ component: "endpoint.worker", workerId }),
  );
  return logger;
}
const opts: ExecuteOptions = {
  workerId,
  defaultWalltimeS: positiveEnv("FABRIC_SHELL_WALLTIME_S", 3600),
  maxResultBytes: positiveEnv("FABRIC_MAX_RESULT_BYTES", 10 * 1024 * 1024),
};

const socketPath = process.env["FABRIC_WORKER_SOCKET"];
const link = socketPath ? net.connect(socketPath) : new net.Socket({ fd: 3, readable: true, writable: true });
if (socketPath) link.setNoDelay(true);
const queue: WorkItem[] = [];
/** stdout and stderr of the tasks run here, one task at a time. */
const capture = new OutputCapture();
let busy = false;

function send(msg: WorkerResponse): void {
  writeFrame(link, WorkerResponse.encode(msg).finish());
}

async function drain(): Promise<void> {
  if (busy) return;
  busy = true;
  try {
    for (let item = queue.shift(); item; item = queue.shift()) {
      const outcome = await executeWorkItem(item, opts);
      // What a JavaScript function printed (a shell command's output is in the outcome already).
      const printed = capture.take();
      if (printed && !outcome.output) outcome.output = printed;
      send({ msg: { $case: "outcome", value: outcome } });
    }
  } finally {
    busy = false;
  }
}

function exitNow(code: number): never {
  killRunningShellCommands();
  process.exit(code);
}

/** Set once the worker is leaving because of a broken link: nothing more is read. */
let failing = false;

/** Logs why the manager link is unusable, then exits with code 2. */
function fail(err: unknown, why: string): void {
  if (failing) return;
  failing = true;
  link.pause();
  void log()
    .then((l) => l.error({ err }, why))
    .catch(() => undefined)
    .finally(() => exitNow(2));
}

readMessages(link, WorkerRequest, {
  onMessage: (req) => {
    if (failing || !req.item) return;
    queue.push(req.item);
    void drain();
  },
  onBadFrame: (err, problem) => fail(err, `${problem} on the manager link; exiting`),
});
// The manager is gone (or closed our pipe to stop us): nothing more to do.
link.on("close", () => exitNow(0));
link.on("error", () => exitNow(0));
process.on("SIGTERM", () => exitNow(0));
process.on("SIGINT", () => exitNow(0));
// A user function's stray rejection must not kill the worker between tasks.
process.on("unhandledRejection", (reason) => {
  void log().then((l) => l.warn({ reason: String(reason) }, "unhandled rejection in user code"));
});

send({ msg: { $case: "ready", value: workerId } });
