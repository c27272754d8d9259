import { readFileSync } from "node:fs";

import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";

import {
  LocalFabric,
  type EndpointProcess,
  type LocalEndpointOptions,
  type LocalFabricOptions,
} from "../../devkit/index.js";
import type { Client, ClientOptions } from "../../sdk/index.js";
import { RawClients } from "./raw-clients.js";

/** Options of {@link useFabric}: the fabric's own, and what to start on it before the tests. */
export interface FabricSuiteOptions extends Omit<LocalFabricOptions, "brokerConfig"> {
  /**
   * Extra broker config (see {@link LocalFabricOptions.brokerConfig}); a function is called when
   * the fabric starts, for config that names what earlier hooks started (an OIDC issuer's URL).
   * @default {}
   */
  readonly brokerConfig?: Record<string, unknown> | (() => Record<string, unknown>);
  /** The user the suite's {@link FabricSuite.client} signs in as. @default "alice" */
  readonly user?: string;
  /** Options of that client besides its address and token. @default {} */
  readonly clientOptions?: Omit<ClientOptions, "address" | "token">;
  /** An endpoint of that user's to start before the tests: its name and options. @default none */
  readonly endpoint?: LocalEndpointOptions & { readonly name: string };
  /** Other users to hold raw gRPC clients of ({@link FabricSuite.rawOf}). @default none */
  readonly rawUsers?: readonly string[];
  /** Open a NATS connection as the broker ({@link FabricSuite.admin}; operator mode only). @default false */
  readonly natsAdmin?: boolean;
  /** How long starting it all may take. @default 120_000 */
  readonly startTimeoutMs?: number;
}

/** The parts of a suite's fabric; read them in tests and hooks (they exist once the fabric started). */
export interface FabricSuite {
  readonly fabric: LocalFabric;
  /** A client of the suite's user. */
  readonly client: Client;
  /** The endpoint asked for in {@link FabricSuiteOptions.endpoint}. */
  readonly endpoint: EndpointProcess;
  /** Its id. */
  readonly endpointId: string;
  /** Raw gRPC clients of the suite's user, for calls below the SDK. */
  readonly raw: RawClients;
  /** Those of `user`: the suite's, or one of {@link FabricSuiteOptions.rawUsers}. */
  rawOf(user: string): RawClients;
  /** The NATS connection of {@link FabricSuiteOptions.natsAdmin} (see {@link connectAsBroker}). */
  readonly admin: NatsConnection;
}

/**
 * A {@link LocalFabric} for the describe block that calls this: started before its tests, with a
 * client of one user and, if asked, one endpoint of that user's; stopped after them, with all it
 * started. Hooks the block adds later run after the start and before the stop.
 *
 * @example
 * describe("end to end", () => {
 *   const stack = useFabric({ endpoint: { name: "e2e" } });
 *   it("runs a task", async () => {
 *     const fid = await stack.client.registerFunction((x: number) => x + 1);
 *     expect(await stack.client.waitForResult(await stack.client.run(fid, stack.endpointId, [1]))).toBe(2);
 *   });
 * });
 */
export function useFabric(options: FabricSuiteOptions = {}): FabricSuite {
  const {
    user = "alice",
    clientOptions,
    endpoint,
    rawUsers = [],
    natsAdmin = false,
    startTimeoutMs = 120_000,
    brokerConfig,
    ...rest
  } = options;
  let fabric: LocalFabric | undefined;
  let client: Client | undefined;
  let started: { process: EndpointProcess; id: string } | undefined;
  const raws = new Map<string, RawClients>();
  let admin: NatsConnection | undefined;

  beforeAll(async () => {
    const config = typeof brokerConfig === "function" ? brokerConfig() : brokerConfig;
    fabric = await LocalFabric.start({ ...rest, brokerConfig: config });
    client = await fabric.client(user, clientOptions);
    if (endpoint) {
      const { name, ...endpointOptions } = endpoint;
      const ep = await fabric.startEndpoint(user, name, endpointOptions);
      started = { process: ep, id: ep.endpointId() };
    }
    for (const name of [user, ...rawUsers]) raws.set(name, await RawClients.of(fabric, name));
    if (natsAdmin) admin = await connectAsBroker(fabric);
  }, startTimeoutMs);

  afterAll(async () => {
    await fabric?.stop();
  }, 120_000);

  const ready = <T>(part: T | undefined, what: string): T => {
    if (part === undefined)
      throw new Error(`the suite has no ${what}: its parts exist in its tests and hooks, once asked for`);
    return part;
  };
  return {
    get fabric() {
      return ready(fabric, "fabric");
    },
    get client() {
      return ready(client, "client");
    },
    get endpoint() {
      return ready(started, "endpoint").process;
    },
    get endpointId() {
      return ready(started, "endpoint").id;
    },
    get raw() {
      return ready(raws.get(user), "raw clients");
    },
    rawOf(name: string) {
      return ready(raws.get(name), `raw clients of ${name}`);
    },
    get admin() {
      return ready(admin, "NATS admin connection");
    },
  };
}

/**
 * A NATS connection with the broker's own credentials (a fabric in operator mode): it may publish
 * and subscribe anywhere, so it stands in for any path around the NATS permissions. Closed when
 * the fabric stops.
 */
export async function connectAsBroker(fabric: LocalFabric): Promise<NatsConnection> {
  const nc = await connect({
    servers: fabric.nats.url,
    authenticator: credsAuthenticator(readFileSync(fabric.nats.operator!.brokerCredsFile)),
  });
  fabric.adopt({ stop: () => nc.close() });
  return nc;
}
