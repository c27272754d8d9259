import { createServer, Socket, type Server } from "node:net";

/**
 * A TCP proxy on 127.0.0.1 that a test puts between a client and a server to cut the network
 * link: `cut()` drops every open connection and refuses new ones (connections are accepted and
 * closed at once, as a broken route would), `restore()` lets connections through again.
 */
export class TcpProxy {
  private readonly pairs = new Set<{ client: Socket; upstream: Socket }>();
  private isCut = false;
  /** Connections accepted and forwarded so far. */
  forwarded = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly targetPort: number,
    readonly targetHost: string,
  ) {}

  /** Starts a proxy on a free port of 127.0.0.1 forwarding to `targetHost:targetPort`. */
  static async start(targetPort: number, targetHost = "127.0.0.1"): Promise<TcpProxy> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const addr = server.address();
    const port = typeof addr === "object" && addr ? addr.port : 0;
    const proxy = new TcpProxy(server, port, targetPort, targetHost);
    server.on("connection", (client: Socket) => proxy.accept(client));
    return proxy;
  }

  /** The proxy's address as a NATS URL. */
  get natsUrl(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** Whether the link is cut now. */
  get cutNow(): boolean {
    return this.isCut;
  }

  /** Open proxied connections. */
  get connections(): number {
    return this.pairs.size;
  }

  private accept(client: Socket): void {
    if (this.isCut) {
      client.destroy();
      return;
    }
    const upstream = new Socket();
    const pair = { client, upstream };
    this.pairs.add(pair);
    this.forwarded++;
    const close = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close).on("close", close);
    upstream.on("error", close).on("close", close);
    upstream.connect(this.targetPort, this.targetHost, () => {
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  /** Cuts the link: drops every connection at once and refuses new ones until {@link restore}. */
  cut(): void {
    this.isCut = true;
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  /** Lets connections through again. */
  restore(): void {
    this.isCut = false;
  }

  /** Closes the listener and every connection. */
  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
