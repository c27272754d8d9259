/**
 * The worker-manager process: one per block (per node). It connects back to the agent (compute
 * nodes can usually reach the login node, not the other way round), says hello with its block's
 * secret, runs a pool of worker processes, and reports task starts and outcomes.
 *
 * Arguments: `--agent HOST:PORT --block ID --workers N` (or env FABRIC_AGENT_ADDR,
 * FABRIC_BLOCK_ID, FABRIC_WORKERS). The secret comes only from env FABRIC_BLOCK_SECRET, so it
 * never shows in `ps`. FABRIC_SHELL_WALLTIME_S and FABRIC_MAX_RESULT_BYTES pass through to workers.
 * FABRIC_CONTAINER holds the endpoint's `container` section as JSON (absent: bare processes).
 */
import { hostname } from "node:os";
import { parseArgs } from "node:util";

import { newId } from "../../common/ids.js";
import { createLogger } from "../../common/logger.js";
import { resolveContainerConfig } from "../runtime/config.js";
import type { ContainerConfig } from "../runtime/config.js";
import { runManager } from "./manager.js";

const log = createLogger("fabric-manager");

function fail(message: string): never {
  log.fatal(message);
  process.exitCode = 2;
  throw new Error(message);
}

const { values } = parseArgs({
  options: {
    agent: { type: "string" },
    block: { type: "string" },
    workers: { type: "string" },
  },
  strict: true,
});

const agent =
  values.agent ?? process.env["FABRIC_AGENT_ADDR"] ?? fail("no agent address (--agent HOST:PORT)");
const blockId = values.block ?? process.env["FABRIC_BLOCK_ID"] ?? fail("no block id (--block ID)");
const secret = process.env["FABRIC_BLOCK_SECRET"] ?? fail("no block secret (env FABRIC_BLOCK_SECRET)");
const workers = Number(values.workers ?? process.env["FABRIC_WORKERS"] ?? "1");
if (!Number.isInteger(workers) || workers <= 0) fail(`--workers must be a positive integer, got ${workers}`);
const m = /^(.*):(\d+)$/.exec(agent);
if (!m) fail(`--agent must be HOST:PORT, got ${agent}`);

let container: ContainerConfig | undefined;
const containerJson = process.env["FABRIC_CONTAINER"];
if (containerJson) {
  try {
    container = resolveContainerConfig(JSON.parse(containerJson));
  } catch (err) {
    fail(`FABRIC_CONTAINER is not a valid container section: ${(err as Error).message}`);
  }
}
const workerEnv: Record<string, string> = {};
for (const k of ["FABRIC_SHELL_WALLTIME_S", "FABRIC_MAX_RESULT_BYTES", "FABRIC_LOG_LEVEL"]) {
  const v = process.env[k];
  if (v) workerEnv[k] = v;
}

const code = await runManager({
  host: m[1]!.replace(/^\[(.*)\]$/, "$1"),
  port: Number(m[2]),
  blockId,
  secret,
  workers,
  managerId: `${hostname()}-${newId().slice(0, 8)}`,
  log,
  workerEnv,
  ...(container ? { container } : {}),
});
// Give pino a moment to flush, then leave even if a stray handle lingers.
setTimeout(() => process.exit(code), 50).unref();
process.exitCode = code;
