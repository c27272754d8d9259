import { readFileSync } from "node:fs";
import { hostname } from "node:os";

import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";

import { FabricError, silentLogger, isTerminal, FABRIC_VERSION } from "../common/index.js";
import { EndpointServiceService, FunctionServiceService, TaskServiceService, Task } from "../proto/index.js";
import { AccessPolicy } from "./auth/authz.js";
import { HttpApi } from "./http/server.js";
import { endpointRoutes } from "./http/endpoint-routes.js";
import { functionRoutes } from "./http/routes.js";
import { taskRoutes } from "./http/task-routes.js";
import { dashboardRoutes, DASHBOARD_PATH } from "./http/dashboard.js";
import { taskStatsRoutes } from "./http/stats-routes.js";
import { accountOfUserJwt, jwtOfCredsFile, NatsCredentialMinter } from "./auth/nats-credentials.js";
import { OidcVerifier } from "./auth/oidc.js";
import { RateLimiter } from "./auth/rate-limit.js";
import { TokenAuthority } from "./auth/tokens.js";
import type { BrokerConfig } from "./config.js";
import { EndpointStatuses } from "./registry/endpoint-status.js";
import { endpointHandlers, endpointService } from "./registry/endpoints.js";
import { functionHandlers, functionService } from "./registry/functions.js";
import { OwnedRegistry } from "./registry/owned-registry.js";
import { requestGuards } from "./rpc/request-shapes.js";
import { tolerantService } from "./rpc/rpc.js";
import { ServerTlsContext, grpcServerCredentials, isLocalOnlyListen } from "./rpc/tls.js";
import { RecordCache, mapLimit, type TaskRecordCache } from "./state/records.js";
import { FabricStore } from "./state/store.js";
import { TaskBook } from "./tasks/book.js";
import { TaskEventHub } from "./tasks/event-hub.js";
import { TaskIndex, TaskLister } from "./tasks/task-index.js";
import { TaskGroups } from "./tasks/groups.js";
import { ResultIngest } from "./tasks/result-ingest.js";
import { taskService } from "./tasks/service.js";
import { TaskSubmitter } from "./tasks/submit.js";
import { TaskStatsCounter } from "./tasks/task-stats.js";
import { TaskWatcher } from "./tasks/watch.js";

const KEY_CHECK_SUBJECT = "fabric.broker-key-check";

/** How often a broker removes the payload buckets of deleted endpoints once they are empty. */
const PAYLOAD_SWEEP_INTERVAL_MS = 3_600_000;
/** The HTTP API's version, in its OpenAPI document. */
const BROKER_API_VERSION = FABRIC_VERSION;
/**
 * The cloud broker: a stateless gRPC front to the fabric's state in NATS JetStream. Several
 * replicas may serve one NATS (cluster).
 *
 * @example
 * const broker = new Broker(resolveBrokerConfig({ auth: { keyFile: "/srv/fabric/key.pem" } }), log);
 * await broker.start();
 */
export class Broker {
  private server: grpc.Server | undefined;
  private ingest: ResultIngest | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private store: FabricStore | undefined;
  private health: HealthImplementation | undefined;
  private http: HttpApi | undefined;
  private events: TaskEventHub | undefined;
  private tls: ServerTlsContext | undefined;
  private boundPort = 0;
  readonly brokerId: string;
  authority: TokenAuthority | undefined;

  constructor(
    readonly config: BrokerConfig,
    private readonly log: Logger = silentLogger,
  ) {
    this.brokerId = config.brokerId ?? `${hostname()}/${process.pid}`;
  }

  /** The port the HTTP API is bound to (0 without one). */
  get httpPort(): number {
    return this.http?.port ?? 0;
  }

  /** The port the gRPC server is bound to (useful when listening on port 0). */
  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<void> {
    const log = this.log.child({ component: "cloud.broker", brokerId: this.brokerId });
    // First, so a missing or bad certificate stops the start before anything is touched.
    const credentials = this.listenerCredentials(log);
    const auth = await TokenAuthority.fromKeyFile(
      this.config.auth.keyFile,
      this.config.auth.issuer,
      this.config.auth.audience,
    );
    this.authority = auth;
    const natsCfg = this.config.nats;
    let minter: NatsCredentialMinter | undefined;
    if (natsCfg.accountSigningKeyFile && natsCfg.credentials) {
      minter = NatsCredentialMinter.fromSeed(
        readFileSync(natsCfg.accountSigningKeyFile, "utf8"),
        accountOfUserJwt(jwtOfCredsFile(natsCfg.credentials)),
      );
    }
    const store = await FabricStore.connect(this.config, auth.messageKeys, {
      name: `fabric-broker ${this.brokerId}`,
      onConnectionChange: (status) => {
        log.warn({ status }, "NATS connection changed");
        // Task events may have been missed: watches read what they wait for again.
        this.events?.connectionChanged();
      },
      onClusterForming: (message, retryInMs) =>
        log.warn(
          { err: message, retryInMs },
          "the NATS cluster cannot place the streams yet (still forming?); retrying",
        ),
    });
    this.store = store;
    await auth.followRevocations(await store.revocations(), log.child({ component: "cloud.auth" }));
    await checkSharedKey(store, auth, log);
    if (this.config.auth.oidc) auth.useOidc(new OidcVerifier(this.config.auth.oidc));
    auth.rateLimiter = new RateLimiter(this.config.limits.callsPerSecond, this.config.limits.callBurst);

    const policy = new AccessPolicy(this.config.groups);
    const functions = new OwnedRegistry(store.functions, "function", policy);
    const endpoints = new OwnedRegistry(store.endpoints, "endpoint", policy);
    const statuses = new EndpointStatuses(
      store,
      this.config.endpointOfflineAfterSeconds,
      auth.messageKeys,
      log.child({ component: "cloud.endpoints" }),
    );
    const records: TaskRecordCache = new RecordCache<Task>(Task, 50_000, (t) => !isTerminal(t.state));
    const events = new TaskEventHub(
      store,
      log.child({ component: "cloud.events" }),
      auth.messageKeys.events,
      (id) => records.forget(id),
    );
    this.events = events;
    const book = new TaskBook(store, this.config, events, records, auth.messageKeys);
    const index = new TaskIndex(
      store.taskIndex,
      log.child({ component: "cloud.index" }),
      this.config.resultRetentionSeconds * 1000,
    );
    events.observe((task) => index.finished(task));
    const readTask = async (id: string) => (await store.tasks.read(id))?.value ?? null;
    const lister = new TaskLister(index, readTask);
    const groups = new TaskGroups(store);
    const submitter = new TaskSubmitter(
      store,
      this.config,
      functions,
      endpoints,
      groups,
      this.brokerId,
      log.child({ component: "cloud.tasks" }),
      records,
      (endpointId) => statuses.python(endpointId),
      index,
    );
    const watcher = new TaskWatcher(book, events, groups);

    this.ingest = new ResultIngest(
      store,
      events,
      log.child({ component: "cloud.ingest" }),
      records,
      auth.messageKeys,
      minter !== undefined,
    );
    await this.ingest.start();

    // Housekeeping: payload buckets of deleted endpoints go once their last object has expired;
    // revocations of tokens that have expired anyway are forgotten.
    const sweep = () =>
      Promise.all([
        store.sweepPayloadBuckets().then(
          (n) => n > 0 && log.info({ deleted: n }, "payload buckets of deleted endpoints removed"),
          (err: unknown) => log.warn({ err }, "cannot sweep the payload buckets; will try again"),
        ),
        auth.pruneRevocations().then(
          (n) => n > 0 && log.info({ pruned: n }, "revocations of expired tokens forgotten"),
          (err: unknown) => log.warn({ err }, "cannot prune the token revocations; will try again"),
        ),
      ]);
    void sweep();
    this.sweeper = setInterval(() => void sweep(), PAYLOAD_SWEEP_INTERVAL_MS);
    this.sweeper.unref();

    const server = new grpc.Server({
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
      "grpc.keepalive_permit_without_calls": 1,
    });
    const rpcLog = log.child({ component: "cloud.rpc" });
    const guards = requestGuards(this.config);
    server.addService(
      tolerantService(FunctionServiceService, guards),
      functionService(store, functions, auth, rpcLog),
    );
    const endpointDeps = {
      store,
      registry: endpoints,
      statuses,
      config: this.config,
      auth,
      log: rpcLog,
      failQueuedTasks: (endpointId: string, actor: string) => book.failQueued(endpointId, actor),
      minter,
    };
    server.addService(tolerantService(EndpointServiceService, guards), endpointService(endpointDeps));
    server.addService(
      tolerantService(TaskServiceService, guards),
      taskService({ submitter, book, watcher, lister }, auth, rpcLog),
    );
    // The HTTP API: the same handlers as the gRPC services above, on its own listener.
    if (this.config.http) {
      // Room for a payload at its limit, JSON-escaped (up to twice as long), and the rest of the body.
      const bodyLimit = this.config.limits.maxPayloadBytes * 2 + 1024 * 1024;
      const http = new HttpApi({
        listen: this.config.http.listen,
        routes: [
          ...functionRoutes(functionHandlers(store, functions)),
          ...endpointRoutes(endpointHandlers(endpointDeps)),
          ...taskRoutes({ submitter, book, lister, watcher }),
          ...taskStatsRoutes(new TaskStatsCounter(index, (ids) => mapLimit(ids, 64, readTask))),
        ],
        extraRoutes: this.config.http.dashboard ? [dashboardRoutes()] : [],
        auth,
        log: log.child({ component: "cloud.http" }),
        bodyLimit,
        version: BROKER_API_VERSION,
        ...(this.tls ? { tls: this.tls } : {}),
      });
      await http.start().catch((err: unknown) => {
        throw listenFailure("http.listen", this.config.http!.listen, err);
      });
      this.http = http;
      log.info(
        {
          listen: this.config.http.listen,
          port: http.port,
          bodyLimit,
          tls: this.tls ? "on" : "off",
          dashboard: this.config.http.dashboard ? DASHBOARD_PATH : "off",
        },
        "HTTP API listening",
      );
      if (!this.tls && !isLocalOnlyListen(this.config.http.listen)) {
        log.warn(
          { listen: this.config.http.listen },
          "PLAINTEXT HTTP API on a non-loopback address: tokens cross the network in the clear; configure `tls` (the HTTP API then serves HTTPS with the same certificate) or put it behind a TLS-terminating proxy",
        );
      }
    }
    this.health = new HealthImplementation({ "": "SERVING" });
    this.health.addToServer(server);
    this.boundPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(this.config.listen, credentials, (err, port) =>
        err ? reject(listenFailure("listen", this.config.listen, err)) : resolve(port),
      );
    });
    this.server = server;
    log.info(
      {
        listen: this.config.listen,
        port: this.boundPort,
        tls: this.tls ? "on" : "off",
        nats: this.config.nats.servers,
        endpointIsolation: minter ? "per-endpoint NATS users" : "none (open NATS)",
      },
      "broker ready",
    );
  }

  /**
   * Reads the TLS certificate, key and client CA files again (on SIGHUP; file changes are picked
   * up by themselves). New connections get the new certificate; open ones are not dropped. A bad
   * pair is logged and the current one kept. Returns whether the files were loaded.
   */
  reloadTls(reason = "reload requested"): boolean {
    if (!this.tls) {
      this.log.info({ reason }, "no TLS configured: nothing to reload");
      return false;
    }
    return this.tls.reload(reason);
  }

  /** TLS credentials from the `tls` config, else plaintext, with a loud warning if others can reach it. */
  private listenerCredentials(log: Logger): grpc.ServerCredentials {
    const tlsConfig = this.config.tls;
    if (tlsConfig) {
      this.tls = ServerTlsContext.load(tlsConfig, log.child({ component: "cloud.tls" }));
      this.tls.watch();
      return grpcServerCredentials(this.tls);
    }
    if (!isLocalOnlyListen(this.config.listen)) {
      log.warn(
        { listen: this.config.listen },
        "PLAINTEXT gRPC listener on a non-loopback address: user tokens, endpoint tokens and the NATS " +
          "credentials handed to agents travel in clear. Configure tls.certFile and tls.keyFile " +
          "(README, TLS) or listen on 127.0.0.1 behind a TLS-terminating proxy",
      );
    }
    return grpc.ServerCredentials.createInsecure();
  }

  /** Stops taking calls, lets in-flight ones finish (up to the grace period), then closes. */
  async stop(): Promise<void> {
    this.health?.setStatus("", "NOT_SERVING");
    await this.http?.stop();
    const server = this.server;
    if (server) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, this.config.shutdownGraceSeconds * 1000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    clearInterval(this.sweeper);
    this.tls?.close();
    await this.ingest?.stop();
    this.events?.close();
    await this.store?.close();
    this.log.info({ brokerId: this.brokerId }, "broker stopped");
  }
}

/**
 * Every broker on one NATS must sign with the same key (tokens, and the signatures on every message
 * between brokers and agents, derive from it). The first broker leaves a check value (a MAC of a
 * fixed text: it tells nothing of the key) that later ones compare with theirs, so a replica
 * started with another key file says so loudly instead of quietly dropping what the others sign.
 */
async function checkSharedKey(store: FabricStore, auth: TokenAuthority, log: Logger): Promise<void> {
  const mine = new TextEncoder().encode(auth.messageKeys.events.mac(KEY_CHECK_SUBJECT, new Uint8Array(0)));
  if (!(await store.matchesKeyCheck(mine))) {
    log.error(
      "another broker on this NATS signs with a different key: every replica must use the same auth.keyFile, or tokens fail on some replicas and their messages are dropped (delete the key-check entry of the fabric_brokers bucket after replacing the key everywhere)",
    );
  }
}

/**
 * A listener that could not bind, in words: the address in use or not this machine's, and which
 * setting names it (grpc-js says "No address added out of total 1 resolved").
 */
function listenFailure(setting: string, address: string, err: unknown): FabricError {
  const text = err instanceof Error ? err.message : String(err);
  const code = (err as NodeJS.ErrnoException).code ?? "";
  const why =
    code === "EADDRINUSE" || /EADDRINUSE|address already in use|No address added/i.test(text)
      ? "the port is in use (another broker, or another program: `ss -ltnp` shows which)"
      : code === "EADDRNOTAVAIL" || /EADDRNOTAVAIL/.test(text)
        ? "that address is not one of this machine's"
        : code === "EACCES" || /EACCES/.test(text)
          ? "ports below 1024 need privileges"
          : text;
  return new FabricError("FAILED_PRECONDITION", `cannot listen on ${address} (${setting}): ${why}`, {
    cause: err,
  });
}
