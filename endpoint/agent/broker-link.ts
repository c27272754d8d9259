/**
 * The agent's gRPC side of the broker: registering with the owner's user token (once), connecting
 * with the endpoint's own token, retrying while the broker is unreachable, and the endpoint's
 * policy (which functions may run here).
 */
import { setTimeout as sleep } from "node:timers/promises";

import {
  FabricError,
  isRetryable,
  toFabricError,
  bearer,
  callUnary,
  channelFor,
  clientOptions,
  type Logger,
} from "../../common/index.js";
import { EndpointServiceClient } from "../../proto/index.js";
import type {
  BusConnectInfo,
  ConnectEndpointResponse,
  GetEndpointResponse,
  RegisterEndpointResponse,
} from "../../proto/index.js";
import type { EndpointConfig } from "../config.js";
import { readCredentials, removeConfigToken, writeCredentials } from "../home.js";
import type { EndpointCredentials, EndpointPaths } from "../home.js";

/** Raised when the broker refuses the endpoint for good: retrying cannot help. */
export class EndpointRejectedError extends FabricError {
  override readonly name = "EndpointRejectedError";
}

/** Options and callbacks of a {@link BrokerLink}. */
export interface BrokerLinkOptions {
  readonly paths: EndpointPaths;
  readonly config: EndpointConfig;
  /** What ConnectEndpoint reports about this agent. */
  readonly agentVersion: string;
  readonly hostname: string;
  readonly log: Logger;
  stopping(): boolean;
  throwIfStopping(): void;
  noteError(message: string): void;
}

/** Registration, connection and policy: everything the agent asks the broker over gRPC. */
export class BrokerLink {
  private creds: EndpointCredentials | undefined;
  /** The endpoint's allowed-functions list as the broker reported it (empty: any). */
  private allowedFunctions = new Set<string>();
  private log: Logger;

  constructor(private readonly o: BrokerLinkOptions) {
    this.log = o.log;
  }

  /** The endpoint's id and token, once registered. */
  get credentials(): EndpointCredentials | undefined {
    return this.creds;
  }

  /** Logs from here on carry this logger's fields (the endpoint id, once known). */
  useLogger(log: Logger): void {
    this.log = log;
  }

  /** Whether the endpoint's policy lets a function run here. */
  allows(functionId: string): boolean {
    return this.allowedFunctions.size === 0 || this.allowedFunctions.has(functionId);
  }

  /** Takes the allowed-functions list the broker sent (at connect, or in a control message). */
  setAllowedFunctions(ids: readonly string[]): void {
    const next = new Set(ids);
    const same = next.size === this.allowedFunctions.size && ids.every((id) => this.allowedFunctions.has(id));
    this.allowedFunctions = next;
    if (!same) this.log.info({ allowedFunctions: next.size }, "the endpoint's allowed functions changed");
  }

  private client(): EndpointServiceClient {
    const { target, credentials } = channelFor(this.o.config.broker, this.o.config.brokerTls);
    return new EndpointServiceClient(target, credentials, clientOptions);
  }

  /** Calls the broker, retrying with backoff while it is unreachable; refusals are fatal. */
  private async withBrokerRetry<T>(what: string, call: () => Promise<T>): Promise<T> {
    let delay = 1000;
    for (;;) {
      this.o.throwIfStopping();
      try {
        return await call();
      } catch (err) {
        const fe = toFabricError(err);
        if (!isRetryable(fe)) throw fe;
        this.o.noteError(`${what}: ${fe.code}: ${fe.message}`);
        this.log.warn(
          { broker: this.o.config.broker, code: fe.code, err: fe.message, retryInMs: delay },
          `${what} failed; the broker is unavailable, retrying`,
        );
        const until = Date.now() + delay;
        while (Date.now() < until && !this.o.stopping()) await sleep(Math.min(200, until - Date.now()));
        delay = Math.min(delay * 2, 30_000);
      }
    }
  }

  /**
   * The endpoint's credentials: saved ones, else a registration with the owner's user token (which
   * is then removed from config.yaml). Rejects with {@link EndpointRejectedError} when there is
   * nothing to register with or the broker refuses.
   */
  async register(): Promise<EndpointCredentials> {
    this.creds = await this.ensureRegistered();
    return this.creds;
  }

  private async ensureRegistered(): Promise<EndpointCredentials> {
    const { paths, config } = this.o;
    const saved = readCredentials(paths);
    if (saved) {
      // A token left from before (an older version kept it, or it was added by hand) is unused.
      this.removeUserToken();
      return saved;
    }
    const token = config.token;
    if (!token) {
      throw new EndpointRejectedError(
        "UNAUTHENTICATED",
        `endpoint ${paths.name} is not registered and has no token to register with: set FABRIC_TOKEN or run \`fabric-endpoint configure ${paths.name} --broker ADDR --token TOKEN --force\``,
      );
    }
    const client = this.client();
    try {
      const res = await this.withBrokerRetry("RegisterEndpoint", () =>
        callUnary<{ name: string; description: string; endpointId: string }, RegisterEndpointResponse>(
          client.registerEndpoint.bind(client),
          client,
          { name: paths.name, description: config.description, endpointId: "" },
          bearer(token),
          { deadlineMs: 15_000 },
        ),
      );
      if (!res.endpoint?.id || !res.endpointToken) {
        throw new EndpointRejectedError(
          "INTERNAL",
          "the broker registered the endpoint but returned no id or token",
        );
      }
      const creds = { endpointId: res.endpoint.id, endpointToken: res.endpointToken };
      writeCredentials(paths, creds);
      this.log.info({ endpointId: creds.endpointId }, "endpoint registered");
      this.removeUserToken();
      return creds;
    } catch (err) {
      const fe = toFabricError(err);
      if (fe instanceof EndpointRejectedError || fe.code === "CANCELLED") throw fe;
      throw new EndpointRejectedError(fe.code, `the broker refused to register the endpoint: ${fe.message}`);
    } finally {
      client.close();
    }
  }

  /**
   * Drops the owner's user token from config.yaml once the endpoint has its own credential, before
   * any block starts: functions on a bare endpoint run as the same OS user and could read it.
   */
  private removeUserToken(): void {
    const { paths } = this.o;
    try {
      if (removeConfigToken(paths))
        this.log.info(
          { config: paths.config },
          "removed the user token from the config: the endpoint uses its own credential",
        );
    } catch (err) {
      // Not worth refusing to run over, but the owner must know the token is still on disk.
      this.log.error(
        { config: paths.config, err: (err as Error).message },
        "cannot remove the user token from the config; delete its `token:` line by hand",
      );
    }
  }

  /**
   * ConnectEndpoint with the endpoint token, retrying while the broker is unreachable: takes the
   * endpoint's policy and returns how to reach NATS. A broker that does not know the endpoint
   * (deleted?) or names no NATS server rejects it with {@link EndpointRejectedError}.
   */
  async connect(): Promise<BusConnectInfo> {
    const res = await this.connectEndpoint();
    this.setAllowedFunctions(res.endpoint?.allowedFunctions ?? []);
    const bus = res.bus;
    if (!bus || bus.servers.length === 0) {
      throw new EndpointRejectedError("FAILED_PRECONDITION", "the broker gave no NATS servers to connect to");
    }
    return bus;
  }

  private async connectEndpoint(): Promise<ConnectEndpointResponse> {
    const client = this.client();
    const { endpointId, endpointToken } = this.creds!;
    try {
      return await this.withBrokerRetry("ConnectEndpoint", () =>
        callUnary<{ agentVersion: string; hostname: string }, ConnectEndpointResponse>(
          client.connectEndpoint.bind(client),
          client,
          { agentVersion: this.o.agentVersion, hostname: this.o.hostname },
          bearer(endpointToken),
          { deadlineMs: 15_000 },
        ),
      );
    } catch (err) {
      const fe = toFabricError(err);
      if (fe.code === "UNAUTHENTICATED" || fe.code === "NOT_FOUND" || fe.code === "PERMISSION_DENIED") {
        throw new EndpointRejectedError(
          fe.code,
          `the broker does not accept endpoint ${endpointId} (${fe.code}: ${fe.message}); it may have been deleted: run \`fabric-endpoint delete ${this.o.paths.name}\` and configure it again`,
        );
      }
      throw fe;
    } finally {
      client.close();
    }
  }

  /** Re-reads the endpoint's policy (allowed functions) from the broker; best effort. */
  async refreshPolicy(): Promise<void> {
    const client = this.client();
    const { endpointId, endpointToken } = this.creds!;
    try {
      const res = await callUnary<{ endpointId: string }, GetEndpointResponse>(
        client.getEndpoint.bind(client),
        client,
        { endpointId },
        bearer(endpointToken),
        { deadlineMs: 15_000 },
      );
      if (res.endpoint) this.setAllowedFunctions(res.endpoint.allowedFunctions);
    } catch (err) {
      this.log.warn({ err: toFabricError(err).message }, "cannot re-read the endpoint's policy");
    } finally {
      client.close();
    }
  }
}
