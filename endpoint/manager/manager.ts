import net from "node:net";
import { hostname } from "node:os";

import { readMessages, writeFrame } from "../../common/lean.js";
import type { Logger } from "../../common/logger.js";
import type { WorkOutcome } from "../../proto/index.js";
// The worker protocol alone: the proto/index barrel also loads the gRPC service definitions and
// @grpc/grpc-js, which a manager never uses and which would slow every block's start.
import { AgentMessage, ManagerMessage } from "../../proto/messages.js";
import type { ContainerConfig } from "../runtime/config.js";
import type { WorkerLauncher } from "../runtime/launcher.js";
import type { EarlyWorkerLauncher } from "./early-workers.js";
import { PythonProcessLauncher, PythonSlotKind } from "./python-slot.js";
import { WorkerPool } from "./worker-pool.js";

/** Options of one worker manager. */
export interface ManagerOptions {
  /** Where the agent listens for managers. */
  readonly host: string;
  readonly port: number;
  readonly blockId: string;
  /** The block's secret, proving to the agent this manager is the one it launched. */
  readonly secret: string;
  readonly workers: number;
  readonly managerId: string;
  readonly log: Logger;
  /** How long to keep trying to reach the agent at start. @default 30000 */
  readonly connectTimeoutMs?: number;
  /** Worker entry file (tests). */
  readonly workerMain?: string;
  /** Where functions run (the endpoint's `container` section); bare processes without it. */
  readonly container?: ContainerConfig;
  /**
   * Bare workers already started by the manager process (ignored with a container runtime): the
   * pool takes them instead of starting its own. See early-workers.ts.
   */
  readonly earlyWorkers?: EarlyWorkerLauncher;
  /** Environment passed to every worker (walltime default, result limit). */
  readonly workerEnv?: Readonly<Record<string, string>>;
  /** The interpreter of Python functions (a name on PATH or a path). @default "python3" */
  readonly python?: string;
}

/** How long an outcome of a command killed by SIGTERM/SIGKILL waits to see whether the block is being cancelled. */
const SIGNALLED_OUTCOME_HOLD_MS = 1_000;

/**
 * How long a task's "started" notice waits before it goes to the agent: a task that finishes
 * sooner sends only its outcome (which carries when and where it started), one frame instead of two.
 */
const STARTED_HOLD_MS = 25;

/** Largest number of outcomes sent in one frame. */
const MAX_OUTCOMES_PER_FRAME = 500;

function connectOnce(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    sock.once("connect", () => {
      sock.removeListener("error", reject);
      resolve(sock);
    });
    sock.once("error", reject);
  });
}

async function connectWithRetry(opts: ManagerOptions, log: Logger): Promise<net.Socket> {
  const deadline = Date.now() + (opts.connectTimeoutMs ?? 30_000);
  let delay = 100;
  for (;;) {
    try {
      return await connectOnce(opts.host, opts.port);
    } catch (err) {
      if (Date.now() + delay > deadline) throw err;
      log.warn({ err: (err as Error).message, retryInMs: delay }, "cannot reach the agent yet");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2000);
    }
  }
}

/**
 * Runs a manager until the agent tells it to shut down (resolves 0) or the connection to the
 * agent is lost (resolves 1). Its workers are stopped either way: a manager never outlives
 * its agent, so no orphaned worker keeps running user code.
 */
export async function runManager(opts: ManagerOptions): Promise<number> {
  const log = opts.log.child({
    component: "endpoint.manager",
    managerId: opts.managerId,
    blockId: opts.blockId,
  });
  let sock: net.Socket | undefined;
  let outcomes: WorkOutcome[] = [];
  let flushScheduled = false;
  /** "Started" notices held back (see STARTED_HOLD_MS), by task id. */
  const heldStarts = new Map<string, NodeJS.Timeout>();
  // Set once the manager is told to terminate (a scheduler cancelling the block).
  let terminating = false;

  const send = (msg: ManagerMessage) => {
    if (sock && !sock.destroyed) writeFrame(sock, ManagerMessage.encode(msg).finish());
  };
  const flushOutcomes = () => {
    flushScheduled = false;
    while (outcomes.length > 0) {
      const batch = outcomes.slice(0, MAX_OUTCOMES_PER_FRAME);
      outcomes = outcomes.slice(MAX_OUTCOMES_PER_FRAME);
      send({ msg: { $case: "outcomes", value: { outcomes: batch } } });
    }
  };

  // Container runtimes (dockerode and its dependencies) are loaded only when configured: bare
  // processes, the common case, start without them.
  const launcher: WorkerLauncher | undefined =
    opts.container && opts.container.runtime !== "none"
      ? (await import("../runtime/runtimes.js")).createWorkerLauncher(opts.container, {
          managerId: opts.managerId,
          log,
        })
      : opts.earlyWorkers;
  if (opts.earlyWorkers && launcher !== opts.earlyWorkers) void opts.earlyWorkers.close();
  const pool = new WorkerPool(
    {
      size: opts.workers,
      managerId: opts.managerId,
      log,
      ...(opts.workerMain ? { workerMain: opts.workerMain } : {}),
      ...(launcher ? { launcher } : {}),
      ...(opts.container ? { container: opts.container } : {}),
      ...(opts.workerEnv ? { env: opts.workerEnv } : {}),
      // Python interpreters run where the JavaScript workers do: in containers of the Python
      // worker image (the same launcher), or as bare processes of the endpoint's interpreter.
      pythonSlotKind:
        launcher && launcher.runtime !== "none"
          ? new PythonSlotKind({ launcher, env: opts.workerEnv, log, ownsLauncher: false })
          : new PythonSlotKind({
              launcher: new PythonProcessLauncher(opts.python ?? "python3"),
              env: opts.workerEnv,
              log,
            }),
    },
    {
      onStarted: (taskId, workerId, atMs) => {
        clearTimeout(heldStarts.get(taskId));
        heldStarts.set(
          taskId,
          setTimeout(() => {
            heldStarts.delete(taskId);
            send({ msg: { $case: "started", value: { taskId, workerId, atMs } } });
          }, STARTED_HOLD_MS),
        );
      },
      onOutcome: (outcome) => {
        const held = heldStarts.get(outcome.taskId);
        if (held) {
          clearTimeout(held);
          heldStarts.delete(outcome.taskId);
        }
        if (terminating) return; // the agent fails it with the block's fate, not this side effect
        if (outcome.error?.shell?.signal === "SIGTERM" || outcome.error?.shell?.signal === "SIGKILL") {
          // A scheduler cancelling the job signals every process in it, the user's command
          // included, often before this manager hears of it. Hold such an outcome briefly: if the
          // manager is terminating, the task's failure is the job's (worker lost, job cancelled).
          setTimeout(() => {
            if (terminating) return;
            outcomes.push(outcome);
            setImmediate(flushOutcomes);
          }, SIGNALLED_OUTCOME_HOLD_MS);
          return;
        }
        outcomes.push(outcome);
        // Outcomes finishing in the same turn share one frame.
        if (!flushScheduled) {
          flushScheduled = true;
          setImmediate(flushOutcomes);
        }
      },
    },
  );
  // Workers boot while we connect: a new block is ready sooner.
  pool.start();

  try {
    sock = await connectWithRetry(opts, log);
  } catch (err) {
    log.error({ err: (err as Error).message }, "cannot reach the agent; exiting");
    await pool.stop();
    return 1;
  }
  sock.setNoDelay(true);
  sock.setKeepAlive(true, 10_000);
  log.info({ agent: `${opts.host}:${opts.port}`, workers: opts.workers }, "connected to the agent");
  send({
    msg: {
      $case: "hello",
      value: {
        managerId: opts.managerId,
        blockId: opts.blockId,
        hostname: hostname(),
        workers: opts.workers,
        secret: opts.secret,
      },
    },
  });

  let heartbeat: NodeJS.Timeout | undefined;
  const startHeartbeat = (intervalS: number) => {
    clearInterval(heartbeat);
    heartbeat = setInterval(
      () => send({ msg: { $case: "heartbeat", value: { idleWorkers: pool.idle, running: pool.running } } }),
      Math.max(1, intervalS) * 1000,
    );
  };
  startHeartbeat(5);

  let onSignal: (() => void) | undefined;
  const code = await new Promise<number>((resolve) => {
    readMessages(sock, AgentMessage, {
      onMessage: (msg) => {
        const m = msg.msg;
        switch (m?.$case) {
          case "welcome":
            log.info({ endpointId: m.value.endpointId }, "welcomed by the agent");
            if (m.value.heartbeatIntervalS > 0) startHeartbeat(m.value.heartbeatIntervalS);
            break;
          case "work":
            pool.submit(m.value.items);
            break;
          case "cancel":
            pool.cancel(m.value.taskIds);
            break;
          case "shutdown":
            log.info({ reason: m.value.reason }, "shutdown requested by the agent");
            resolve(0);
            break;
          default:
            break;
        }
      },
      onBadFrame: (err, problem) => {
        log.error({ err }, `${problem} on the agent link; disconnecting`);
        sock.destroy();
      },
    });
    sock.on("error", (err) => log.warn({ err: err.message }, "agent link error"));
    sock.on("close", () => {
      log.warn("lost the connection to the agent; stopping workers and exiting");
      resolve(1);
    });
    // A provider cancels a block with SIGTERM: stop the workers first, so no container is left.
    onSignal = () => {
      terminating = true;
      log.info("terminated; stopping workers and exiting");
      resolve(0);
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  });
  if (onSignal) {
    process.removeListener("SIGTERM", onSignal);
    process.removeListener("SIGINT", onSignal);
  }
  clearInterval(heartbeat);
  for (const t of heldStarts.values()) clearTimeout(t);
  flushOutcomes();
  await pool.stop();
  sock.end();
  sock.destroy();
  return code;
}
