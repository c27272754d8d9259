#!/usr/bin/env node
/**
 * `fabric-endpoint`: configure, start, stop and inspect endpoint agents on this machine.
 * Errors print one line to stderr and exit non-zero.
 */
import { spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
} from "node:fs";
import path from "node:path";
import type { Writable } from "node:stream";
import { fileURLToPath } from "node:url";

import { Command, CommanderError, InvalidArgumentError } from "commander";
import { stringify as toYaml } from "yaml";

import {
  FABRIC_VERSION,
  FabricError,
  bearer,
  callUnary,
  channelFor,
  clientOptions,
  createLogger,
  foregroundStream,
  prettyLines,
  toFabricError,
} from "../common/index.js";
import { EndpointServiceClient } from "../proto/index.js";
import type { DeleteEndpointResponse, GetEndpointResponse } from "../proto/index.js";
import { EndpointAgent, EndpointRejectedError } from "./agent/index.js";
import { loadConfig, resolveConfig } from "./config.js";
import { configTemplate } from "./config-template.js";
import type { EndpointConfigInput } from "./config.js";
import {
  endpointPaths,
  fabricHome,
  isAlive,
  readCredentials,
  removePidFile,
  runningAgentPid,
  validateEndpointName,
  writePidFile,
  writePrivateFile,
} from "./home.js";
import type { EndpointPaths } from "./home.js";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("expected a positive integer");
  return n;
}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function configuredPaths(name: string): EndpointPaths {
  const paths = endpointPaths(name);
  if (!existsSync(paths.config)) {
    throw new FabricError(
      "NOT_FOUND",
      `endpoint ${name} is not configured (no ${paths.config}): run \`fabric-endpoint configure ${name} --broker ADDR --token TOKEN\``,
    );
  }
  return paths;
}

function configure(
  name: string,
  o: {
    broker: string;
    token?: string;
    workers?: number;
    blocks?: number;
    description?: string;
    force?: boolean;
    caFile?: string;
    certFile?: string;
    keyFile?: string;
    natsCaFile?: string;
  },
): void {
  const paths = endpointPaths(name);
  if (existsSync(paths.config) && !o.force) {
    throw new FabricError(
      "ALREADY_EXISTS",
      `endpoint ${name} is already configured (${paths.config}); use --force to overwrite`,
    );
  }
  const doc: EndpointConfigInput = {
    broker: o.broker,
    ...(o.token ? { token: o.token } : {}),
    ...(o.description ? { description: o.description } : {}),
    ...(o.caFile || o.certFile || o.keyFile
      ? {
          brokerTls: {
            ...(o.caFile ? { caFile: path.resolve(o.caFile) } : {}),
            ...(o.certFile ? { certFile: path.resolve(o.certFile) } : {}),
            ...(o.keyFile ? { keyFile: path.resolve(o.keyFile) } : {}),
          },
        }
      : {}),
    ...(o.natsCaFile ? { natsTls: { caFile: path.resolve(o.natsCaFile) } } : {}),
    provider: {
      type: "local",
      initBlocks: o.blocks ?? 1,
      maxBlocks: o.blocks ?? 1,
      workersPerNode: o.workers ?? 2,
    },
  };
  // Validate before writing, so a bad flag never leaves a broken file behind.
  const resolved = resolveConfig(doc, {}, "the new configuration");
  channelFor(resolved.broker, resolved.brokerTls);
  writePrivateFile(paths.config, configTemplate(name, toYaml(doc)));
  out(`configured endpoint ${name} in ${paths.dir}`);
  if (o.token) out("the token is removed from config.yaml once the endpoint registers (at its first start)");
}

/** Names the descriptor a detaching `start` hands FABRIC_TOKEN over on (see startDetached). */
const TOKEN_FD_ENV = "FABRIC_TOKEN_FD";

/** FABRIC_TOKEN as a detaching `start` handed it over, read once; empty when none was. */
function handedToken(): { FABRIC_TOKEN?: string } {
  const fdText = process.env[TOKEN_FD_ENV];
  if (!fdText) return {};
  delete process.env[TOKEN_FD_ENV];
  const fd = Number(fdText);
  try {
    const token = readFileSync(fd, "utf8");
    return token ? { FABRIC_TOKEN: token } : {};
  } catch (err) {
    throw new FabricError(
      "FAILED_PRECONDITION",
      `cannot read FABRIC_TOKEN from descriptor ${fdText}: ${(err as Error).message}`,
    );
  } finally {
    // Not left open for the managers and jobs this agent starts.
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }
}

async function startForeground(name: string): Promise<void> {
  const paths = configuredPaths(name);
  const config = loadConfig(paths.config, { ...process.env, ...handedToken() });
  // `config` has FABRIC_TOKEN now; taken out of the environment, the managers, workers and
  // batch jobs this agent starts never inherit the owner's token.
  delete process.env["FABRIC_TOKEN"];
  const other = runningAgentPid(paths);
  if (other !== undefined && other !== process.pid) {
    throw new FabricError("ALREADY_EXISTS", `endpoint ${name} is already running (pid ${other})`);
  }
  // On a terminal: pretty there, JSON in agent.log. Detached (stderr is agent.log) or under a
  // supervisor: JSON on stderr.
  const log = process.stderr.isTTY
    ? createLogger("fabric-endpoint", {
        stream: foregroundStream(paths.log, process.env["FABRIC_LOG_LEVEL"] ?? "info"),
      })
    : createLogger("fabric-endpoint");
  writePidFile(paths, process.pid);
  const agent = new EndpointAgent({
    paths,
    config,
    log,
    onStoppedItself: () => {
      removePidFile(paths, process.pid);
      setTimeout(() => process.exit(3), 100).unref();
    },
  });
  let signalled = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signalled++;
    if (signalled > 1) {
      log.warn({ signal: sig }, "second signal: exiting now");
      process.exit(1);
    }
    log.info({ signal: sig }, "stopping on signal");
    void agent.stop().finally(() => {
      removePidFile(paths, process.pid);
      setTimeout(() => process.exit(0), 100).unref();
    });
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  try {
    await agent.start();
  } catch (err) {
    await agent.stop().catch(() => undefined);
    removePidFile(paths, process.pid);
    if (signalled > 0) return;
    if (err instanceof EndpointRejectedError) log.fatal({ code: err.code }, err.message);
    throw err;
  }
}

/** Waits until the detached agent logs "endpoint ready", or exits, or `timeoutMs` passes. */
async function waitForReady(
  logFile: string,
  fromByte: number,
  pid: number,
  exited: () => number | null | undefined,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let text = "";
    try {
      if (statSync(logFile).size > fromByte) text = readFileSync(logFile, "utf8").slice(fromByte);
    } catch {
      // not written yet
    }
    for (const line of text.split("\n")) {
      if (!line.startsWith("{")) continue;
      let rec: { msg?: string; level?: number; pid?: number };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        continue;
      }
      if (rec.pid !== pid) continue;
      if (rec.msg === "endpoint ready") return;
      if ((rec.level ?? 0) >= 60)
        throw new FabricError("UNAVAILABLE", `the agent failed to start: ${rec.msg} (see ${logFile})`);
    }
    const code = exited();
    if (code !== undefined)
      throw new FabricError(
        "UNAVAILABLE",
        `the agent exited (code ${code}) before it was ready; see ${logFile}`,
      );
    await sleep(100);
  }
  throw new FabricError(
    "DEADLINE_EXCEEDED",
    `the agent (pid ${pid}) is not ready after ${timeoutMs / 1000} s; it keeps trying, see ${logFile}`,
  );
}

async function startDetached(name: string, timeoutS: number): Promise<void> {
  const paths = configuredPaths(name);
  loadConfig(paths.config); // fail here, in the user's terminal, on a bad config
  const other = runningAgentPid(paths);
  if (other !== undefined)
    throw new FabricError("ALREADY_EXISTS", `endpoint ${name} is already running (pid ${other})`);
  const fromByte = existsSync(paths.log) ? statSync(paths.log).size : 0;
  const fd = openSync(paths.log, "a", 0o600);
  // FABRIC_TOKEN goes to the agent through a pipe, not its environment: a process's initial
  // environment stays readable (/proc/PID/environ) by its OS user's processes, functions included.
  const { FABRIC_TOKEN: token, ...env } = process.env;
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "start", name], {
    detached: true,
    stdio: ["ignore", fd, fd, ...(token ? (["pipe"] as const) : [])],
    env: token ? { ...env, [TOKEN_FD_ENV]: "3" } : env,
  });
  closeSync(fd);
  // An agent that died at once closed its end: its exit is what waitForReady reports.
  if (token) (child.stdio[3] as Writable).on("error", () => undefined).end(token);
  let exitCode: number | null | undefined;
  child.on("exit", (code) => (exitCode = code));
  const pid = child.pid;
  if (pid === undefined) throw new FabricError("UNAVAILABLE", "cannot start the agent process");
  writePidFile(paths, pid);
  try {
    await waitForReady(paths.log, fromByte, pid, () => exitCode, timeoutS * 1000);
  } catch (err) {
    if (exitCode !== undefined) removePidFile(paths, pid);
    // Whatever happened, this command returns: the agent (if alive) goes on without it.
    child.unref();
    (child.stdio[3] as Writable | undefined)?.destroy();
    const id = readCredentials(paths)?.endpointId;
    const fe = toFabricError(err);
    throw new FabricError(
      fe.code,
      `${fe.message}\nendpoint ${name}${id ? ` (${id})` : ""}: pid ${pid}${exitCode !== undefined ? " (exited)" : " (still running: `fabric-endpoint stop " + name + "` stops it)"}, log ${paths.log}`,
    );
  }
  child.unref();
  const id = readCredentials(paths)?.endpointId ?? "";
  out(`${pid}\nendpoint ${name}${id ? ` (${id})` : ""} is ready: pid ${pid}, log ${paths.log}`);
}

/** `logs`: agent.log for people (or as JSON), the last `lines`, then followed with --follow. */
async function logs(name: string, o: { follow?: boolean; lines?: number; json?: boolean }): Promise<void> {
  const paths = configuredPaths(name);
  const format = o.json ? (line: string) => `${line}\n` : prettyLines(process.stdout.isTTY === true);
  if (!existsSync(paths.log)) {
    if (!o.follow) {
      out(`endpoint ${name} has no log yet (${paths.log}): it has not been started`);
      return;
    }
  }
  let offset = 0;
  let partial = "";
  const emit = (text: string, onlyLast?: number) => {
    const lines = (partial + text).split("\n");
    partial = lines.pop() ?? "";
    const shown = onlyLast !== undefined ? lines.slice(Math.max(0, lines.length - onlyLast)) : lines;
    for (const line of shown) if (line !== "") process.stdout.write(format(line));
  };
  const readMore = (onlyLast?: number) => {
    let size: number;
    try {
      size = statSync(paths.log).size;
    } catch {
      return;
    }
    if (size < offset) offset = 0; // truncated or replaced: start again
    if (size === offset) return;
    const fd = openSync(paths.log, "r");
    try {
      const buf = Buffer.alloc(size - offset);
      readSync(fd, buf, 0, buf.length, offset);
      offset = size;
      emit(buf.toString("utf8"), onlyLast);
    } finally {
      closeSync(fd);
    }
  };
  readMore(o.lines);
  if (!o.follow) {
    if (partial) process.stdout.write(format(partial));
    return;
  }
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => readMore(), 250);
    const done = () => {
      clearInterval(timer);
      resolve();
    };
    process.once("SIGINT", done);
    process.once("SIGTERM", done);
  });
}

async function stop(name: string, quiet = false): Promise<void> {
  const paths = endpointPaths(name);
  const pid = runningAgentPid(paths);
  if (pid === undefined) {
    removePidFile(paths);
    if (!quiet) out(`endpoint ${name} is not running`);
    return;
  }
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 30_000;
  while (isAlive(pid) && Date.now() < deadline) await sleep(100);
  if (isAlive(pid)) {
    process.kill(pid, "SIGKILL");
    while (isAlive(pid)) await sleep(50);
    if (!quiet) out(`endpoint ${name} (pid ${pid}) did not stop in 30 s and was killed`);
  } else if (!quiet) {
    out(`endpoint ${name} (pid ${pid}) stopped`);
  }
  removePidFile(paths, pid);
}

function brokerClient(paths: EndpointPaths): EndpointServiceClient {
  const config = loadConfig(paths.config);
  const { target, credentials } = channelFor(config.broker, config.brokerTls);
  return new EndpointServiceClient(target, credentials, clientOptions);
}

async function status(name: string, o: { json?: boolean }): Promise<void> {
  const paths = configuredPaths(name);
  const pid = runningAgentPid(paths);
  const creds = readCredentials(paths);
  let broker: GetEndpointResponse | undefined;
  let brokerError = "";
  if (creds) {
    const client = brokerClient(paths);
    try {
      broker = await callUnary(
        client.getEndpoint.bind(client),
        client,
        { endpointId: creds.endpointId },
        bearer(creds.endpointToken),
        { deadlineMs: 5000 },
      );
    } catch (err) {
      brokerError = (err as Error).message;
    } finally {
      client.close();
    }
  }
  const last = broker?.status?.last;
  const view = {
    name,
    endpointId: creds?.endpointId ?? null,
    local: pid !== undefined ? "running" : "stopped",
    pid: pid ?? null,
    broker: broker
      ? {
          connection: broker.status?.connection ?? "unknown",
          queuedTasks: broker.status?.queuedTasks ?? 0,
          ...(last
            ? {
                lastHeartbeatMs: last.atMs,
                workers: last.workers,
                idleWorkers: last.idleWorkers,
                runningTasks: last.runningTasks,
                outstandingTasks: last.outstandingTasks,
                lastError: last.lastError,
              }
            : {}),
        }
      : null,
    ...(brokerError ? { brokerError } : {}),
  };
  if (o.json) {
    out(JSON.stringify(view, null, 2));
    return;
  }
  out(`endpoint   ${name}`);
  out(`id         ${view.endpointId ?? "(not registered yet)"}`);
  out(`local      ${view.local}${pid !== undefined ? ` (pid ${pid})` : ""}`);
  if (view.broker) {
    out(`broker     ${view.broker.connection}, ${view.broker.queuedTasks} queued task(s)`);
    if (last)
      out(
        `workers    ${last.workers} (${last.idleWorkers} idle), ${last.runningTasks} running${last.lastError ? `; last error: ${last.lastError}` : ""}`,
      );
  } else if (brokerError) {
    out(`broker     unreachable: ${brokerError}`);
  }
}

function list(o: { json?: boolean }): void {
  const dir = `${fabricHome()}/endpoints`;
  const names = existsSync(dir)
    ? readdirSync(dir)
        .filter((n) => existsSync(endpointPaths(n).config))
        .sort()
    : [];
  const rows = names.map((name) => {
    const paths = endpointPaths(name);
    let id: string;
    try {
      id = readCredentials(paths)?.endpointId ?? "";
    } catch {
      id = "(unreadable credentials)";
    }
    const pid = runningAgentPid(paths);
    return {
      name,
      endpointId: id || null,
      state: pid !== undefined ? "running" : "stopped",
      pid: pid ?? null,
    };
  });
  if (o.json) {
    out(JSON.stringify(rows, null, 2));
    return;
  }
  if (rows.length === 0) {
    out("no endpoints configured");
    return;
  }
  const w = Math.max(4, ...rows.map((r) => r.name.length));
  out(`${"NAME".padEnd(w)}  ${"ID".padEnd(36)}  STATE`);
  for (const r of rows)
    out(
      `${r.name.padEnd(w)}  ${(r.endpointId ?? "-").padEnd(36)}  ${r.state}${r.pid ? ` (pid ${r.pid})` : ""}`,
    );
}

async function remove(name: string, o: { force?: boolean; token?: string }): Promise<void> {
  const paths = configuredPaths(name);
  const creds = readCredentials(paths);
  // Endpoint credentials may connect and read, not delete: that takes the owner's user token.
  const token = o.token ?? process.env["FABRIC_TOKEN"];
  if (creds && !token && !o.force) {
    throw new FabricError(
      "FAILED_PRECONDITION",
      `deleting endpoint ${creds.endpointId} at the broker needs its owner's user token: pass --token or set FABRIC_TOKEN (or --force to remove it here only)`,
    );
  }
  await stop(name, true);
  if (creds && token) {
    const client = brokerClient(paths);
    try {
      await callUnary<{ endpointId: string }, DeleteEndpointResponse>(
        client.deleteEndpoint.bind(client),
        client,
        { endpointId: creds.endpointId },
        bearer(token),
        { deadlineMs: 10_000 },
      );
    } catch (err) {
      const fe = err as FabricError;
      // Already gone at the broker: deleting locally is what is left to do.
      if (fe.code !== "NOT_FOUND" && !o.force) {
        throw new FabricError(
          fe.code ?? "UNKNOWN",
          `the broker did not delete endpoint ${creds.endpointId}: ${fe.message} (use --force to delete it locally anyway)`,
        );
      }
    } finally {
      client.close();
    }
  }
  rmSync(paths.dir, { recursive: true, force: true });
  out(`deleted endpoint ${name}${creds ? ` (${creds.endpointId})` : ""}`);
}

/** Builds the command line program. */
export function buildProgram(): Command {
  const program = new Command("fabric-endpoint")
    .description("Run a function-fabric endpoint agent on this machine (home: $FABRIC_HOME or ~/.fabric)")
    .version(`fabric-endpoint ${FABRIC_VERSION}`, "-V, --version", "print the version")
    .exitOverride()
    .configureOutput({
      writeErr: (s) => process.stderr.write(s),
      // Commander's own usage errors in the one-line shape of every other error (exit 2).
      outputError: (s, write) =>
        write(
          `error: INVALID_ARGUMENT: ${s
            .replace(/^error:\s*/, "")
            .replace(/\s*\n\s*/g, " ")
            .trim()}\n`,
        ),
    });

  program
    .command("configure")
    .description("write the endpoint's config.yaml")
    .argument("<name>", "endpoint name")
    .requiredOption("--broker <address>", "broker gRPC address: host:port, or grpcs://host:port for TLS")
    .option("--ca-file <pem>", "CA bundle the broker's certificate must chain to (default: trusted roots)")
    .option("--cert-file <pem>", "client certificate for a broker that requires one (mTLS)")
    .option("--key-file <pem>", "private key of --cert-file")
    .option("--nats-ca-file <pem>", "CA bundle of the NATS servers' certificates (default: --ca-file)")
    .option(
      "--token <jwt>",
      "your user token, used once to register the endpoint at its first start, then removed from the config (or env FABRIC_TOKEN at start)",
    )
    .option("--workers <n>", "worker processes per block", positiveInt)
    .option("--blocks <n>", "blocks to run", positiveInt)
    .option("--description <text>", "what the endpoint is")
    .option("--force", "overwrite an existing configuration")
    .action((name: string, o: Parameters<typeof configure>[1]) => {
      validateEndpointName(name);
      configure(name, o);
    });

  program
    .command("start")
    .description("start the agent (in the foreground unless --detach)")
    .argument("<name>", "endpoint name")
    .option("--detach", "run in the background, logging to agent.log; print its pid once it is ready")
    .option(
      "--timeout <seconds>",
      "with --detach, how long to wait for the agent to be ready",
      positiveInt,
      60,
    )
    .action(async (name: string, o: { detach?: boolean; timeout: number }) => {
      if (o.detach) await startDetached(name, o.timeout);
      else await startForeground(name);
    });

  program
    .command("stop")
    .description("stop a running agent (SIGTERM, SIGKILL after 30 s)")
    .argument("<name>", "endpoint name")
    .action(async (name: string) => stop(name));

  program
    .command("logs")
    .description("print the agent's log (agent.log), readable; -f follows it")
    .argument("<name>", "endpoint name")
    .option("-f, --follow", "keep printing what the agent logs (Ctrl-C stops)")
    .option("-n, --lines <n>", "only the last n lines", (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("a whole number of lines");
      return n;
    })
    .option("--json", "the log's own JSON lines, as they are")
    .action(async (name: string, o: { follow?: boolean; lines?: number; json?: boolean }) => logs(name, o));

  program
    .command("status")
    .description("show whether the agent runs here and what the broker knows of it")
    .argument("<name>", "endpoint name")
    .option("--json", "print JSON")
    .action(async (name: string, o: { json?: boolean }) => status(name, o));

  program
    .command("list")
    .description("list the endpoints configured here")
    .option("--json", "print JSON")
    .action((o: { json?: boolean }) => list(o));

  program
    .command("delete")
    .description("stop the agent, delete the endpoint at the broker, and remove its directory")
    .argument("<name>", "endpoint name")
    .option("--token <jwt>", "the owner's user token, to delete it at the broker (or env FABRIC_TOKEN)")
    .option("--force", "remove it locally even if the broker cannot be reached (or without a token)")
    .action(async (name: string, o: { force?: boolean; token?: string }) => remove(name, o));

  return program;
}

async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and the version are a success; a usage error was printed by outputError.
      process.exitCode = err.code === "commander.helpDisplayed" || err.code === "commander.version" ? 0 : 2;
      return;
    }
    const fe = toFabricError(err);
    process.stderr.write(`error: ${fe.code}: ${fe.message.split("\n").join("\n  ")}\n`);
    process.exitCode = 1;
  }
}

await main();
