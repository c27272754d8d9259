import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { Client, type ClientOptions } from "../sdk/index.js";
import { NatsServer } from "./nats-server.js";
import { BrokerProcess, EndpointProcess, type EndpointOptions } from "./processes.js";

/** Options of {@link LocalFabric.start}. */
export interface LocalFabricOptions {
  /** What the fabric is for, in the name of its temporary directory (`fabric-NAME-XXXXXX`). @default "local" */
  readonly name?: string;
  /**
   * Run NATS in operator (decentralized JWT) mode: the broker mints each agent its own NATS user
   * (per-endpoint isolation), as in production. @default false
   */
  readonly operator?: boolean;
  /**
   * Extra broker config fields, merged over the generated `broker.yaml`. A `nats` block is merged
   * into the one that names the local server (and, in operator mode, the broker's credentials); an
   * `auth` block into the one that names the broker's key file (`DIR/broker/broker-key.pem`).
   * @default {}
   */
  readonly brokerConfig?: Record<string, unknown>;
  /**
   * Puts something between the agents and NATS (a TCP proxy a test can cut): started once NATS is
   * up, before the broker, which hands agents its URL (`nats.agentServers`) while itself staying
   * on NATS directly. The fabric stops it after the broker. @default none: agents reach NATS directly
   */
  readonly agentLink?: (nats: NatsServer) => Promise<AgentLink>;
}

/** What agents reach NATS through instead of NATS itself (see {@link LocalFabricOptions.agentLink}). */
export interface AgentLink extends Stoppable {
  /** The NATS URL agents are given. */
  readonly natsUrl: string;
}

/** Options of {@link LocalFabric.startEndpoint}: those of the CLI's `configure`, less what the fabric fills in. */
export type LocalEndpointOptions = Partial<Omit<EndpointOptions, "home" | "name" | "broker" | "token">> & {
  /** Start the agent too; with `false` it is only configured (call `launch()` later). @default true */
  readonly launch?: boolean;
};

/** Something the fabric stops with itself (a container engine, a client). */
export interface Stoppable {
  stop(): Promise<void>;
}

/**
 * A whole fabric on this machine — a nats-server with a file store, a broker, and endpoints on
 * demand — each on a free port, all under one temporary directory. This is how tests, benchmarks
 * and the demo start a fabric. {@link stop} ends every process the fabric started (each by its own
 * pid: endpoints, then what was {@link adopt}ed, then the broker, the agents' link, then NATS) and
 * removes the directory; a {@link start} that fails half-way stops what it had started before it
 * throws.
 *
 * @example
 * const fabric = await LocalFabric.start({ name: "demo" });
 * try {
 *   const endpoint = await fabric.startEndpoint("alice", "laptop");
 *   const client = await fabric.client("alice");
 *   await client.run(functionId, endpoint.endpointId(), []);
 * } finally {
 *   await fabric.stop();
 * }
 */
export class LocalFabric {
  /** Every endpoint started (or configured) through this fabric; push one configured by hand to stop it too. */
  readonly endpoints: EndpointProcess[] = [];
  private readonly adopted: Stoppable[] = [];
  private readonly clients: Client[] = [];
  private stopped = false;

  private constructor(
    /** The temporary directory everything lives under (removed by {@link stop}). */
    readonly dir: string,
    readonly nats: NatsServer,
    readonly broker: BrokerProcess,
    private readonly agentLink: AgentLink | undefined,
  ) {}

  /** Starts nats-server and a broker on it, in a fresh temporary directory. */
  static async start(options: LocalFabricOptions = {}): Promise<LocalFabric> {
    const dir = mkdtempSync(path.join(tmpdir(), `fabric-${options.name ?? "local"}-`));
    let nats: NatsServer | undefined;
    let link: AgentLink | undefined;
    try {
      nats = await NatsServer.start({ storeDir: path.join(dir, "nats"), operator: options.operator });
      link = await options.agentLink?.(nats);
      const extra = options.brokerConfig ?? {};
      const brokerDir = path.join(dir, "broker");
      const keyFile = path.join(brokerDir, "broker-key.pem");
      const broker = await BrokerProcess.start({
        natsUrl: nats.url,
        dir: brokerDir,
        keyFile,
        extra: {
          ...extra,
          nats: {
            servers: [nats.url],
            ...(link && { agentServers: [link.natsUrl] }),
            ...nats.brokerNatsConfig(),
            ...(extra["nats"] as object | undefined),
          },
          auth: { keyFile, ...(extra["auth"] as object | undefined) },
        },
      });
      return new LocalFabric(dir, nats, broker, link);
    } catch (err) {
      // A broker that fails to start has already killed itself; the rest is ours to end.
      await link?.stop().catch(() => undefined);
      await nats?.stop().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Configures an endpoint owned by `user` with the real CLI, in that user's own FABRIC_HOME
   * (`DIR/home-USER`), and starts its agent unless `launch: false`. Defaults: 1 block × 2 workers.
   */
  async startEndpoint(user: string, name: string, opts: LocalEndpointOptions = {}): Promise<EndpointProcess> {
    const { launch = true, ...rest } = opts;
    const ep = await EndpointProcess.configure({
      home: path.join(this.dir, `home-${user}`),
      name,
      broker: this.broker.address,
      token: await this.broker.token(user),
      workers: 2,
      blocks: 1,
      ...rest,
    });
    // Tracked before it starts: an agent that never gets ready is still stopped with the fabric.
    this.endpoints.push(ep);
    if (launch) await ep.launch();
    return ep;
  }

  /** An SDK client of the broker, signed in as `user` (with other `options` if given); closed by {@link stop}. */
  async client(user: string, options: Omit<ClientOptions, "address" | "token"> = {}): Promise<Client> {
    const client = new Client({
      ...options,
      address: this.broker.address,
      token: await this.broker.token(user),
    });
    this.clients.push(client);
    return client;
  }

  /** Has {@link stop} stop `thing` too, after the endpoints and before the broker. Returns it. */
  adopt<T extends Stoppable>(thing: T): T {
    this.adopted.push(thing);
    return thing;
  }

  /** Stops everything the fabric started and removes its directory. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const c of this.clients) c.close();
    for (const ep of this.endpoints) await ep.stop().catch(() => undefined);
    for (const thing of [...this.adopted].reverse()) await thing.stop().catch(() => undefined);
    await this.broker.stop().catch(() => undefined);
    await this.agentLink?.stop().catch(() => undefined);
    await this.nats.stop().catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
