import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

import { createOperatorSetup, type OperatorSetup } from "../cloud/index.js";
import { writeConfigFile } from "./config-file.js";
import { reapOnExit } from "./reaper.js";

/** A free TCP port on 127.0.0.1 (the OS picks it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves when something accepts TCP connections on host:port, or rejects after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs: number, host = "127.0.0.1"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = new Socket();
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
      s.connect(port, host);
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const NATS_BIN = process.env["NATS_SERVER_BIN"] ?? "nats-server";

/** The `tls { … }` block of a nats-server config (see {@link NatsServer.start}). */
export interface NatsServerTls {
  /** PEM certificate the server presents. */
  readonly certFile: string;
  /** Its private key. */
  readonly keyFile: string;
  /** CAs that client certificates must chain to (needed with `verify`). */
  readonly caFile?: string;
  /** Require a client certificate from every client (mTLS). */
  readonly verify?: boolean;
}

/**
 * A real nats-server with JetStream (file store) on a free port and a temporary store directory.
 * `restart()` brings it back on the same port and store, as after a crash.
 */
export class NatsServer {
  private proc: ChildProcess | undefined;

  /** The server's process id while it runs. */
  get pid(): number | undefined {
    return this.proc?.exitCode === null ? this.proc.pid : undefined;
  }
  /** In operator mode: the broker's credentials and the account signing key (see {@link start}). */
  operator: OperatorSetup | undefined;
  private configFile: string | undefined;
  private constructor(
    readonly port: number,
    readonly storeDir: string,
    private readonly ownsDir: boolean,
    private readonly tls: NatsServerTls | undefined,
  ) {}

  /** Broker config fields (`nats.credentials`, `nats.accountSigningKeyFile`) for operator mode; `{}` otherwise. */
  brokerNatsConfig(): Record<string, string> {
    if (!this.operator) return {};
    return {
      credentials: this.operator.brokerCredsFile,
      accountSigningKeyFile: this.operator.signingKeyFile,
    };
  }

  /** `tls://127.0.0.1:PORT` when started with `tls` (clients must use TLS), else `nats://…`. */
  get url(): string {
    return `${this.tls ? "tls" : "nats"}://127.0.0.1:${this.port}`;
  }

  /**
   * Starts the server. With `operator: true` it runs in operator (decentralized JWT) mode: a fresh
   * operator, a system account and an application account with JetStream and a signing key,
   * preloaded with `resolver: MEMORY`; the broker's creds and the signing key are written (0600)
   * next to the store, and {@link brokerNatsConfig} names them. With `tls` it requires TLS from
   * every client, with that certificate (and, with `verify`, a client certificate from `caFile`).
   */
  static async start(
    options: { storeDir?: string; operator?: boolean; tls?: NatsServerTls } = {},
  ): Promise<NatsServer> {
    const storeDir = options.storeDir ?? mkdtempSync(path.join(tmpdir(), "fabric-nats-"));
    const server = new NatsServer(await freePort(), storeDir, options.storeDir === undefined, options.tls);
    if (options.operator || options.tls) {
      const lines = [
        `listen: "127.0.0.1:${server.port}"`,
        `jetstream: { store_dir: "${path.join(storeDir, "js")}" }`,
      ];
      let confDir = storeDir;
      if (options.operator) {
        confDir = path.join(storeDir, "operator");
        const setup = await createOperatorSetup(confDir);
        server.operator = setup;
        lines.push(setup.serverConfig);
      }
      if (options.tls) lines.push(natsTlsBlock(options.tls));
      mkdirSync(confDir, { recursive: true });
      server.configFile = path.join(confDir, "nats-server.conf");
      writeConfigFile(server.configFile, lines, 0o600);
    }
    await server.launch();
    return server;
  }

  private async launch(): Promise<void> {
    const args = this.configFile
      ? ["-c", this.configFile]
      : ["-js", "-a", "127.0.0.1", "-p", String(this.port), "-sd", this.storeDir];
    const proc = spawn(NATS_BIN, args, {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    proc.stderr?.on("data", (d: Buffer) => {
      if (stderr.length < 20_000) stderr += d.toString();
    });
    const exited = new Promise<never>((_, reject) => {
      proc.once("error", (err) =>
        reject(
          new Error(`cannot start ${NATS_BIN}: ${err.message} (install it: apt-get install -y nats-server)`),
        ),
      );
      proc.once("exit", (code) => reject(new Error(`nats-server exited with ${code}: ${stderr}`)));
    });
    this.proc = proc;
    reapOnExit(proc);
    try {
      await Promise.race([waitForPort(this.port, 10_000), exited]);
    } catch (err) {
      // Never leave a half-started server behind (one that failed to spawn has no pid).
      if (proc.pid !== undefined) await endChild(proc, "SIGKILL");
      throw err;
    }
    // JetStream is ready once the server says so; poll the log rather than sleep.
    const deadline = Date.now() + 10_000;
    while (!/Server is ready/.test(stderr) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
  }

  /** Kills the server at once (SIGKILL), as a crash would. */
  async kill(): Promise<void> {
    await endChild(this.proc, "SIGKILL");
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  async stop(): Promise<void> {
    await endChild(this.proc, "SIGTERM", 5_000);
    if (this.ownsDir) rmSync(this.storeDir, { recursive: true, force: true });
  }
}

/** A nats-server `tls { … }` block (the documented server TLS config). */
export function natsTlsBlock(tls: NatsServerTls): string {
  return [
    "tls {",
    `  cert_file: ${JSON.stringify(tls.certFile)}`,
    `  key_file: ${JSON.stringify(tls.keyFile)}`,
    ...(tls.caFile ? [`  ca_file: ${JSON.stringify(tls.caFile)}`] : []),
    ...(tls.verify ? ["  verify: true"] : []),
    "  timeout: 2",
    "}",
  ].join("\n");
}

/**
 * Ends a child process and resolves once it has exited: `signal` first, then SIGKILL after
 * `graceMs` (for a signal other than SIGKILL). A process already gone resolves at once.
 */
export async function endChild(
  proc: ChildProcess | undefined,
  signal: NodeJS.Signals,
  graceMs = 5_000,
): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const gone = new Promise((r) => proc.once("exit", r));
  proc.kill(signal);
  const timer = signal === "SIGKILL" ? undefined : setTimeout(() => proc.kill("SIGKILL"), graceMs);
  await gone;
  clearTimeout(timer);
}
