/**
 * The worker-manager process: one per block (per node). It connects back to the agent (compute
 * nodes can usually reach the login node, not the other way round), says hello with its block's
 * secret, runs a pool of worker processes, and reports task starts and outcomes.
 *
 * Arguments: `--agent HOST:PORT --block ID --workers N` (or env FABRIC_AGENT_ADDR,
 * FABRIC_BLOCK_ID, FABRIC_WORKERS). The secret comes only from env FABRIC_BLOCK_SECRET, so it
 * never shows in `ps`. FABRIC_SHELL_WALLTIME_S and FABRIC_MAX_RESULT_BYTES pass through to workers.
 * FABRIC_CONTAINER holds the endpoint's `container` section as JSON (absent: bare processes).
 * FABRIC_PYTHON names the interpreter of Python functions (default `python3` on PATH).
 *
 * A block's start is a cold start for its first tasks, so this file imports only what starting
 * bare workers needs: they are spawned first, and boot while the manager loads the rest of its
 * code (logger, protocol, pool) and connects.
 */
import { hostname } from "node:os";
import { parseArgs } from "node:util";

import { newId } from "../../common/lean.js";
import type { ContainerConfig } from "../runtime/config.js";
import { EarlyWorkerLauncher, workerEnvOf, workerIdOf } from "./early-workers.js";

/** What is wrong with the arguments, found before the logger is loaded; reported with it. */
let problem: string | undefined;
const { values } = parseArgs({
  options: {
    agent: { type: "string" },
    block: { type: "string" },
    workers: { type: "string" },
  },
  strict: true,
});

const agent = values.agent ?? process.env["FABRIC_AGENT_ADDR"];
const blockId = values.block ?? process.env["FABRIC_BLOCK_ID"];
const secret = process.env["FABRIC_BLOCK_SECRET"];
const workers = Number(values.workers ?? process.env["FABRIC_WORKERS"] ?? "1");
const m = agent ? /^(.*):(\d+)$/.exec(agent) : null;
if (!agent) problem = "no agent address (--agent HOST:PORT)";
else if (!blockId) problem = "no block id (--block ID)";
else if (!secret) problem = "no block secret (env FABRIC_BLOCK_SECRET)";
else if (!Number.isInteger(workers) || workers <= 0)
  problem = `--workers must be a positive integer, got ${workers}`;
else if (!m) problem = `--agent must be HOST:PORT, got ${agent}`;

const workerEnv: Record<string, string> = {};
for (const k of ["FABRIC_SHELL_WALLTIME_S", "FABRIC_MAX_RESULT_BYTES", "FABRIC_LOG_LEVEL"]) {
  const v = process.env[k];
  if (v) workerEnv[k] = v;
}
const managerId = `${hostname()}-${newId().slice(0, 8)}`;
const containerJson = process.env["FABRIC_CONTAINER"];

// Bare workers start now, as the pool would start them (same ids, same environment).
let earlyWorkers: EarlyWorkerLauncher | undefined;
if (!problem && !containerJson) {
  earlyWorkers = new EarlyWorkerLauncher();
  for (let i = 0; i < workers; i++) {
    const id = workerIdOf(managerId, i);
    earlyWorkers.prestart({ id, image: "", network: false, env: workerEnvOf(workerEnv, id) });
  }
}

const { createLogger } = await import("../../common/logger.js");
const log = createLogger("fabric-manager");

function fail(message: string): never {
  log.fatal(message);
  process.exitCode = 2;
  throw new Error(message);
}

if (problem) fail(problem);

let container: ContainerConfig | undefined;
if (containerJson) {
  try {
    // Loaded only with containers: its schema library would slow every bare block's start.
    const { resolveContainerConfig } = await import("../runtime/config.js");
    container = resolveContainerConfig(JSON.parse(containerJson));
  } catch (err) {
    fail(`FABRIC_CONTAINER is not a valid container section: ${(err as Error).message}`);
  }
}

const { runManager } = await import("./manager.js");
const code = await runManager({
  host: m![1]!.replace(/^\[(.*)\]$/, "$1"),
  port: Number(m![2]),
  blockId: blockId!,
  secret: secret!,
  workers,
  managerId,
  log,
  workerEnv,
  ...(container ? { container } : {}),
  python: process.env["FABRIC_PYTHON"] || "python3",
  ...(earlyWorkers ? { earlyWorkers } : {}),
});
// Give pino a moment to flush, then leave even if a stray handle lingers.
setTimeout(() => process.exit(code), 50).unref();
process.exitCode = code;
