import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { NatsServer } from "../../devkit/nats-server.js";
import { BrokerProcess, EndpointProcess, type EndpointOptions } from "../../devkit/processes.js";

/** A whole fabric on this machine for one test file: nats-server, a broker, and endpoints on demand. */
export class TestStack {
  readonly endpoints: EndpointProcess[] = [];
  private constructor(
    readonly dir: string,
    readonly nats: NatsServer,
    readonly broker: BrokerProcess,
  ) {}

  /**
   * With `operator: true`, NATS runs in operator mode and the broker mints each agent its own
   * NATS user (per-endpoint isolation), as in production.
   */
  static async start(
    brokerExtra: Record<string, unknown> = {},
    options: { operator?: boolean } = {},
  ): Promise<TestStack> {
    const dir = mkdtempSync(path.join(tmpdir(), "fabric-test-"));
    const nats = await NatsServer.start({ storeDir: path.join(dir, "nats"), operator: options.operator });
    const natsExtra = options.operator
      ? { nats: { servers: [nats.url], ...nats.brokerNatsConfig(), ...(brokerExtra["nats"] as object) } }
      : {};
    const broker = await BrokerProcess.start({
      natsUrl: nats.url,
      dir: path.join(dir, "broker"),
      extra: { ...brokerExtra, ...natsExtra },
    });
    return new TestStack(dir, nats, broker);
  }

  /** Configures and starts an endpoint owned by `user`, in its own FABRIC_HOME. */
  async startEndpoint(
    user: string,
    name: string,
    opts: Partial<Omit<EndpointOptions, "home" | "name" | "broker" | "token">> & { launch?: boolean } = {},
  ): Promise<EndpointProcess> {
    const { launch = true, ...rest } = opts;
    const options: EndpointOptions = {
      home: path.join(this.dir, `home-${user}`),
      name,
      broker: this.broker.address,
      token: await this.broker.token(user),
      workers: 2,
      blocks: 1,
      ...rest,
    };
    const ep = await EndpointProcess.configure(options);
    // Tracked before it starts: an agent that never gets ready is still stopped with the stack.
    this.endpoints.push(ep);
    if (launch) await ep.launch();
    return ep;
  }

  async stop(): Promise<void> {
    for (const ep of this.endpoints) await ep.stop().catch(() => undefined);
    await this.broker.stop().catch(() => undefined);
    await this.nats.stop().catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
