import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

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

/**
 * A real nats-server with JetStream (file store) on a free port and a temporary store directory.
 * `restart()` brings it back on the same port and store, as after a crash.
 */
export class NatsServer {
  private proc: ChildProcess | undefined;
  private constructor(
    readonly port: number,
    readonly storeDir: string,
    private readonly ownsDir: boolean,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  static async start(options: { storeDir?: string } = {}): Promise<NatsServer> {
    const storeDir = options.storeDir ?? mkdtempSync(path.join(tmpdir(), "fabric-nats-"));
    const server = new NatsServer(await freePort(), storeDir, options.storeDir === undefined);
    await server.launch();
    return server;
  }

  private async launch(): Promise<void> {
    const proc = spawn(NATS_BIN, ["-js", "-a", "127.0.0.1", "-p", String(this.port), "-sd", this.storeDir], {
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
    await Promise.race([waitForPort(this.port, 10_000), exited]);
    // JetStream is ready once the server says so; poll the log rather than sleep.
    const deadline = Date.now() + 10_000;
    while (!/Server is ready/.test(stderr) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
  }

  /** Kills the server at once (SIGKILL), as a crash would. */
  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGKILL");
    await gone;
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 5_000);
      await gone;
      clearTimeout(timer);
    }
    if (this.ownsDir) rmSync(this.storeDir, { recursive: true, force: true });
  }
}
