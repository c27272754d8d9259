import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { NatsServer } from "../devkit/nats-server.js";
import { BrokerProcess, EndpointProcess } from "../devkit/processes.js";
import { Client } from "../sdk/index.js";

/** A local fabric for a benchmark: nats-server, broker, one endpoint with `workers` workers. */
export class BenchStack {
  private constructor(
    readonly dir: string,
    readonly nats: NatsServer,
    readonly broker: BrokerProcess,
    readonly endpoint: EndpointProcess,
    readonly client: Client,
    readonly endpointId: string,
  ) {}

  static async start(
    options: { workers?: number; endpointExtra?: Record<string, unknown> } = {},
  ): Promise<BenchStack> {
    const dir = mkdtempSync(path.join(tmpdir(), "fabric-bench-"));
    const started: { stop(): Promise<void> }[] = [];
    try {
      const nats = await NatsServer.start({ storeDir: path.join(dir, "nats") });
      started.push(nats);
      const broker = await BrokerProcess.start({ natsUrl: nats.url, dir: path.join(dir, "broker") });
      started.push(broker);
      const token = await broker.token("bench");
      const endpoint = await EndpointProcess.start({
        home: path.join(dir, "home"),
        name: "bench",
        broker: broker.address,
        token,
        workers: options.workers ?? 2,
        blocks: 1,
        ...(options.endpointExtra ? { extra: options.endpointExtra } : {}),
      });
      const client = new Client({ address: broker.address, token });
      return new BenchStack(dir, nats, broker, endpoint, client, endpoint.endpointId());
    } catch (err) {
      // Leave nothing running behind a failed start.
      for (const s of started.reverse()) await s.stop().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  async stop(): Promise<void> {
    this.client.close();
    await this.endpoint.stop().catch(() => undefined);
    await this.broker.stop().catch(() => undefined);
    await this.nats.stop().catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The p-th percentile (0..100) of `values`. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

export const round = (x: number, digits = 2) => Number(x.toFixed(digits));
