import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { stringify as toYaml } from "yaml";

import { TokenAuthority } from "../cloud/auth.js";
import { freePort, waitForPort } from "./nats-server.js";

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
    this.exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Resolves when the output matches `re`; rejects if the process exits first or after `timeoutMs`. */
  async waitFor(re: RegExp, timeoutMs = 30_000): Promise<void> {
    if (re.test(this.output)) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no ${re} after ${timeoutMs} ms. Output:\n${this.output.slice(-4000)}`)), timeoutMs);
      this.waiters.push({
        re,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
      void this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${code ?? signal}) before ${re}. Output:\n${this.output.slice(-4000)}`));
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
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
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
    const b = new BrokerProcess(port, configFile, keyFile);
    await b.launch();
    return b;
  }

  private async launch(): Promise<void> {
    const child = spawn(process.execPath, [distEntry("cloud/cli.js"), "start", "-c", this.configFile], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, FABRIC_LOG_LEVEL: process.env["FABRIC_LOG_LEVEL"] ?? "info" },
    });
    this.proc = new ManagedProcess(`broker:${this.port}`, child);
    await this.proc.waitFor(/"broker ready"/, 30_000);
    await waitForPort(this.port, 5_000);
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
