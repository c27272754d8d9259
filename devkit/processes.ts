import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { parse, stringify as toYaml } from "yaml";

import { TokenAuthority } from "../cloud/index.js";
import { freePort, waitForPort } from "./nats-server.js";
import { reapOnExit } from "./reaper.js";

export const ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)));

/** Path of a compiled entry point; the suite runs the real binaries built by `npm run build`. */
export function distEntry(rel: string): string {
  const p = path.join(ROOT, "dist", rel);
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run build\` (npm test does it for you)`);
  return p;
}

/** A child process whose output is captured, with helpers to wait for a log line. */
export class ManagedProcess {
  output = "";
  private waiters: Array<{ re: RegExp; resolve: () => void }> = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    const onData = (d: Buffer) => {
      this.output += d.toString();
      if (this.output.length > 2_000_000) this.output = this.output.slice(-1_000_000);
      this.waiters = this.waiters.filter((w) => {
        if (w.re.test(this.output)) {
          w.resolve();
          return false;
        }
        return true;
      });
    };
    proc.stdout?.on("data", onData);
    proc.stderr?.on("data", onData);
    reapOnExit(proc);
    this.exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Resolves when the output matches `re`; rejects if the process exits first or after `timeoutMs`. */
  async waitFor(re: RegExp, timeoutMs = 30_000): Promise<void> {
    if (re.test(this.output)) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`${this.name}: no ${re} after ${timeoutMs} ms. Output:\n${this.output.slice(-4000)}`),
          ),
        timeoutMs,
      );
      this.waiters.push({
        re,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
      void this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(
          new Error(
            `${this.name} exited (${code ?? signal}) before ${re}. Output:\n${this.output.slice(-4000)}`,
          ),
        );
      });
    });
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (!this.running) return;
    this.proc.kill(signal);
    await this.exited;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    if (!this.running) return;
    this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export interface BrokerOptions {
  natsUrl: string | string[];
  dir: string;
  keyFile?: string;
  port?: number;
  extra?: Record<string, unknown>;
}

/** The broker as users run it: `fabric-broker start -c broker.yaml`, on a fixed free port. */
export class BrokerProcess {
  private proc: ManagedProcess | undefined;
  private constructor(
    readonly port: number,
    readonly configFile: string,
    readonly keyFile: string,
    private readonly tls: boolean,
  ) {}

  /** `grpcs://127.0.0.1:PORT` when the config has a `tls` block, else `127.0.0.1:PORT`. */
  get address(): string {
    return `${this.tls ? "grpcs://" : ""}127.0.0.1:${this.port}`;
  }

  get process(): ManagedProcess | undefined {
    return this.proc;
  }

  static async start(opts: BrokerOptions): Promise<BrokerProcess> {
    mkdirSync(opts.dir, { recursive: true });
    const port = opts.port ?? (await freePort());
    const keyFile = opts.keyFile ?? path.join(opts.dir, "broker-key.pem");
    const configFile = path.join(opts.dir, `broker-${port}.yaml`);
    const config = {
      listen: `127.0.0.1:${port}`,
      nats: { servers: Array.isArray(opts.natsUrl) ? opts.natsUrl : [opts.natsUrl] },
      auth: { keyFile },
      shutdownGraceSeconds: 2,
      ...opts.extra,
    };
    writeFileSync(configFile, toYaml(config));
    const b = new BrokerProcess(port, configFile, keyFile, "tls" in config && config.tls !== undefined);
    await b.launch();
    return b;
  }

  private async launch(): Promise<void> {
    const child = spawn(
      process.execPath,
      [
        `--max-old-space-size=${BROKER_HEAP_MB}`,
        ...nodeArgs("FABRIC_BROKER_NODE_ARGS"),
        distEntry("cloud/cli.js"),
        "start",
        "-c",
        this.configFile,
      ],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, FABRIC_LOG_LEVEL: childLogLevel() },
      },
    );
    this.proc = new ManagedProcess(`broker:${this.port}`, child);
    try {
      await this.proc.waitFor(/"broker ready"/, 30_000);
      await waitForPort(this.port, 5_000);
    } catch (err) {
      await this.proc.kill(); // never leave a half-started broker behind
      throw err;
    }
  }

  async kill(): Promise<void> {
    await this.proc?.kill("SIGKILL");
  }

  async restart(): Promise<void> {
    await this.proc?.kill("SIGKILL");
    await this.launch();
  }

  async stop(): Promise<void> {
    await this.proc?.stop();
  }

  /** A user token signed with this broker's key. */
  async token(user: string, ttlSeconds = 3600): Promise<string> {
    const auth = await TokenAuthority.fromKeyFile(this.keyFile, "fabric-broker", "fabric-api");
    return auth.issueUserToken(user, ttlSeconds);
  }
}

/** The project root: the nearest folder above `from` holding package.json (works from source and dist). */
function findRoot(from: string): string {
  let dir = from;
  while (!existsSync(path.join(dir, "package.json"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${from}`);
    dir = up;
  }
  return dir;
}

export interface EndpointOptions {
  /** FABRIC_HOME of the endpoint owner (config and credentials live under it). */
  home: string;
  name: string;
  broker: string;
  token: string;
  workers?: number;
  blocks?: number;
  /** Extra YAML fields merged into the generated config. */
  extra?: Record<string, unknown>;
  /** Extra `fabric-endpoint configure` flags (e.g. `--ca-file`). */
  configureArgs?: string[];
}

/** An endpoint agent as its owner runs it: `fabric-endpoint configure NAME` then `start NAME`. */
export class EndpointProcess {
  private proc: ManagedProcess | undefined;
  private constructor(readonly opts: EndpointOptions) {}

  get process(): ManagedProcess | undefined {
    return this.proc;
  }

  /** Writes the endpoint's config with the real CLI (and extra fields), without starting it. */
  static async configure(opts: EndpointOptions): Promise<EndpointProcess> {
    const args = ["configure", opts.name, "--broker", opts.broker, "--token", opts.token];
    if (opts.workers !== undefined) args.push("--workers", String(opts.workers));
    if (opts.blocks !== undefined) args.push("--blocks", String(opts.blocks));
    args.push(...(opts.configureArgs ?? []));
    await runCli("endpoint/cli.js", args, opts.home);
    if (opts.extra) {
      const file = path.join(opts.home, "endpoints", opts.name, "config.yaml");
      const doc = { ...(parse(readFileSync(file, "utf8")) as Record<string, unknown>), ...opts.extra };
      writeFileSync(file, toYaml(doc), { mode: 0o600 });
    }
    return new EndpointProcess(opts);
  }

  static async start(opts: EndpointOptions): Promise<EndpointProcess> {
    const ep = await EndpointProcess.configure(opts);
    await ep.launch();
    return ep;
  }

  /** Starts the agent in the foreground (as a child of this process) and waits until it is ready. */
  async launch(): Promise<void> {
    const child = spawn(
      process.execPath,
      [...nodeArgs("FABRIC_AGENT_NODE_ARGS"), distEntry("endpoint/cli.js"), "start", this.opts.name],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          ...process.env,
          FABRIC_HOME: this.opts.home,
          FABRIC_LOG_LEVEL: childLogLevel(),
        },
      },
    );
    this.proc = new ManagedProcess(`endpoint:${this.opts.name}`, child);
    try {
      await this.proc.waitFor(/"endpoint ready"/, 60_000);
    } catch (err) {
      await this.proc.kill(); // never leave a half-started agent behind
      throw err;
    }
  }

  /** The endpoint id the agent saved after registering. */
  endpointId(): string {
    const file = path.join(this.opts.home, "endpoints", this.opts.name, "credentials.json");
    const creds = JSON.parse(readFileSync(file, "utf8")) as { endpointId: string };
    return creds.endpointId;
  }

  /** Kills the agent and every process in its tree at once, as a crash of the login node's session would. */
  async kill(): Promise<void> {
    await this.proc?.kill("SIGKILL");
  }

  async stop(): Promise<void> {
    await this.proc?.stop(30_000);
  }
}

/** Runs a CLI entry point to completion; rejects with its output when it fails. */
export async function runCli(entry: string, args: string[], home: string): Promise<string> {
  const child = spawn(process.execPath, [distEntry(entry), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, FABRIC_HOME: home },
  });
  const p = new ManagedProcess(`${entry} ${args[0] ?? ""}`, child);
  const { code } = await p.exited;
  if (code !== 0) throw new Error(`${entry} ${args.join(" ")} failed (${code}):\n${p.output}`);
  return p.output;
}

/** Children log at info at least: the harness waits for their "ready" lines. */
function childLogLevel(): string {
  const level = process.env["FABRIC_LOG_LEVEL"];
  return level === "debug" || level === "trace" ? level : "info";
}

/**
 * The broker's V8 old-space limit, as the README recommends for production
 * (`NODE_OPTIONS=--max-old-space-size=192`). Its live heap stays near 125 MB with 50,000 tasks in
 * flight; without a limit V8 lets garbage pile up to ~500 MB RSS before it collects.
 */
const BROKER_HEAP_MB = 192;

/** Extra node flags for a child, from an env var (e.g. FABRIC_BROKER_NODE_ARGS="--cpu-prof"), for profiling. */
function nodeArgs(envVar: string): string[] {
  return (process.env[envVar] ?? "").split(/\s+/).filter(Boolean);
}
