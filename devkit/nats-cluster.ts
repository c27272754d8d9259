import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { writeConfigFile } from "./config-file.js";
import { endChild, freePort, waitForPort } from "./nats-server.js";
import { reapOnExit } from "./reaper.js";

const NATS_BIN = process.env["NATS_SERVER_BIN"] ?? "nats-server";

/** Options of {@link NatsCluster.start}. */
export interface NatsClusterOptions {
  /**
   * Number of nodes (3 tolerates the loss of one with replicated streams).
   * @default 3
   */
  readonly size?: number;
  /** Cluster name, also the prefix of each node's `server_name`. @default "fabric" */
  readonly name?: string;
  /** Parent folder of every node's store; a temporary one (removed on stop) when absent. */
  readonly dir?: string;
  /** Milliseconds to wait until every node reports JetStream ready. @default 30000 */
  readonly readyTimeoutMs?: number;
}

/**
 * One node of a {@link NatsCluster}: a real nats-server with JetStream, its own free client and
 * cluster ports, a config file and a store directory. `kill()` and `restart()` simulate a crash.
 */
export class NatsClusterNode {
  private proc: ChildProcess | undefined;
  /** The node's stderr (log), capped. */
  log = "";

  constructor(
    /** The node's `server_name`, unique in the cluster (JetStream needs it). */
    readonly serverName: string,
    /** Client port on 127.0.0.1. */
    readonly port: number,
    /** Cluster (route) port on 127.0.0.1. */
    readonly clusterPort: number,
    readonly configFile: string,
    readonly storeDir: string,
  ) {}

  /** The node's client URL. */
  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** Whether the node's process is alive. */
  get running(): boolean {
    const p = this.proc;
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  /** Starts the node and resolves once it accepts clients; the cluster's JetStream readiness is checked separately. */
  async launch(timeoutMs = 15_000): Promise<void> {
    const proc = spawn(NATS_BIN, ["-c", this.configFile], { stdio: ["ignore", "ignore", "pipe"] });
    reapOnExit(proc);
    this.log = "";
    proc.stderr?.on("data", (d: Buffer) => {
      this.log += d.toString();
      if (this.log.length > 200_000) this.log = this.log.slice(-100_000);
    });
    const exited = new Promise<never>((_, reject) => {
      proc.once("error", (err) =>
        reject(
          new Error(`cannot start ${NATS_BIN}: ${err.message} (install it: apt-get install -y nats-server)`),
        ),
      );
      proc.once("exit", (code, signal) =>
        reject(
          new Error(`nats-server ${this.serverName} exited (${code ?? signal}): ${this.log.slice(-4000)}`),
        ),
      );
    });
    // Keep an early exit from becoming an unhandled rejection once we stop waiting on it.
    exited.catch(() => undefined);
    this.proc = proc;
    await Promise.race([waitForPort(this.port, timeoutMs), exited]);
  }

  /** Kills the node at once (SIGKILL), as a crash of its machine would. */
  async kill(): Promise<void> {
    await endChild(this.proc, "SIGKILL");
  }

  /** Kills the node and starts it again on the same ports and store. */
  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  /** SIGTERM (lame duck), then SIGKILL after `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    await endChild(this.proc, "SIGTERM", graceMs);
  }
}

/**
 * A real NATS cluster on loopback: `size` nats-servers with JetStream (file store), each with
 * free client and route ports, a temporary store directory, and a `cluster { name, listen,
 * routes }` block naming every peer. Used by tests and benchmarks of the scaled-out topology
 * (replicated streams, several broker replicas).
 *
 * @example
 * const cluster = await NatsCluster.start({ size: 3 });
 * // broker config: nats: { servers: cluster.urls, replicas: 3 }
 * await cluster.nodes[1]!.kill();
 * await cluster.stop();
 */
export class NatsCluster {
  private constructor(
    readonly name: string,
    readonly dir: string,
    private readonly ownsDir: boolean,
    readonly nodes: readonly NatsClusterNode[],
  ) {}

  /** Every node's client URL, to hand to clients as their server list. */
  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  /** Starts every node and waits until JetStream has a meta leader (the cluster can create streams). */
  static async start(options: NatsClusterOptions = {}): Promise<NatsCluster> {
    const size = options.size ?? 3;
    const name = options.name ?? "fabric";
    const dir = options.dir ?? mkdtempSync(path.join(tmpdir(), "fabric-nats-cluster-"));
    mkdirSync(dir, { recursive: true });
    const ports: Array<{ client: number; cluster: number }> = [];
    const taken = new Set<number>();
    while (ports.length < size) {
      const client = await freePort();
      const cluster = await freePort();
      if (client === cluster || taken.has(client) || taken.has(cluster)) continue;
      taken.add(client).add(cluster);
      ports.push({ client, cluster });
    }
    const nodes = ports.map((p, i) => {
      const serverName = `${name}-n${i + 1}`;
      const storeDir = path.join(dir, serverName);
      mkdirSync(storeDir, { recursive: true });
      const configFile = path.join(dir, `${serverName}.conf`);
      const routes = ports
        .filter((_, j) => j !== i)
        .map((o) => `    "nats-route://127.0.0.1:${o.cluster}"`)
        .join("\n");
      writeConfigFile(configFile, [
        `server_name: "${serverName}"`,
        `listen: "127.0.0.1:${p.client}"`,
        `jetstream {`,
        `  store_dir: "${storeDir}"`,
        `}`,
        `cluster {`,
        `  name: "${name}"`,
        `  listen: "127.0.0.1:${p.cluster}"`,
        `  routes: [`,
        routes,
        `  ]`,
        `}`,
      ]);
      return new NatsClusterNode(serverName, p.client, p.cluster, configFile, storeDir);
    });
    const cluster = new NatsCluster(name, dir, options.dir === undefined, nodes);
    try {
      await Promise.all(nodes.map((n) => n.launch()));
      await cluster.waitForJetStream(options.readyTimeoutMs ?? 30_000);
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  /**
   * Resolves once a JetStream meta leader is elected among the running nodes (their logs say
   * so), or rejects after `timeoutMs` with the nodes' logs.
   */
  async waitForJetStream(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const ready = () =>
      this.nodes.some(
        (n) =>
          n.running &&
          /JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/.test(n.log),
      );
    while (!ready()) {
      if (Date.now() > deadline) {
        throw new Error(
          `the NATS cluster elected no JetStream leader in ${timeoutMs} ms:\n${this.nodes
            .map((n) => `--- ${n.serverName}\n${n.log.slice(-2000)}`)
            .join("\n")}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops every node (SIGTERM, then SIGKILL) and removes the stores it created. */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true });
  }
}
