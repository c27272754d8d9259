import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { jetstream } from "@nats-io/jetstream";
import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import type { ObjectStore } from "@nats-io/obj";
import { connect, jwtAuthenticator } from "@nats-io/transport-node";
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";

import { Bus } from "../common/bus-layout.js";
import { FabricError, errorToInfo, isRetryable, toFabricError } from "../common/errors.js";
import { bearer, callUnary, channelFor, clientOptions } from "../common/grpc-client.js";
import { natsTlsOption } from "../common/nats-tls.js";
import { newId } from "../common/ids.js";
import type { Logger } from "../common/logger.js";
import { DropLog, MAC_HEADER, MessageKey } from "../common/message-auth.js";
import {
  UPDATE_OVERHEAD_BYTES,
  fitsInline,
  inlineBytes,
  inlineLimitFor,
  inlinePayload,
  isStored,
  storedPayload,
} from "../common/payload.js";
import {
  EndpointControl,
  EndpointServiceClient,
  EndpointStatus,
  TaskMessage,
  TaskState,
  TaskUpdateBatchReply,
} from "../proto/index.js";
import type {
  BlockStatus,
  BusConnectInfo,
  ConnectEndpointResponse,
  ErrorInfo,
  GetEndpointResponse,
  Payload,
  RegisterEndpointResponse,
  TaskUpdate,
  WorkItem,
  WorkOutcome,
} from "../proto/index.js";
import { BlockScaler } from "./agent/block-scaler.js";
import type { BlockView } from "./agent/block-scaler.js";
import { scalingOf } from "./config.js";
import type { EndpointConfig } from "./config.js";
import { readCredentials, removeConfigToken, writeCredentials } from "./home.js";
import type { EndpointCredentials, EndpointPaths } from "./home.js";
import { ManagerServer } from "./agent/manager-server.js";
import type { ManagerConnection } from "./agent/manager-server.js";
import { ObjectReader } from "./agent/object-reader.js";
import { isJobEnded } from "./provider.js";
import type { BlockJobStatus, ExecutionProvider } from "./provider.js";
import { parseWalltime } from "./providers/batch-script.js";
import { blockLogTail } from "./providers/block-log.js";
import { createProvider } from "./providers/create-provider.js";
import { QueueSizer } from "./agent/queue-sizing.js";
import { UpdatePublisher } from "./agent/update-publisher.js";

/** Version the agent reports to the broker. */
export const AGENT_VERSION = "0.1.0";

/** The manager entry, beside this file once compiled (dist/endpoint/manager/main.js). */
export const MANAGER_MAIN = fileURLToPath(new URL("./manager/main.js", import.meta.url));

/** Options of an {@link EndpointAgent}. */
export interface EndpointAgentOptions {
  readonly paths: EndpointPaths;
  readonly config: EndpointConfig;
  readonly log: Logger;
  /** @default a LocalProvider */
  readonly provider?: ExecutionProvider;
  /** Entry file of the worker manager. @default MANAGER_MAIN */
  readonly managerMain?: string;
  /** How often the provider is asked for job states. @default 1000 (local), statusIntervalSeconds (batch) */
  readonly blockPollIntervalMs?: number;
}

/** Where one task is in the agent. */
type Phase = "resolving" | "queued" | "dispatched" | "running" | "reporting";

interface InFlightTask {
  readonly taskId: string;
  /** The newest delivery of the task message: the one to ack, extend or nak. */
  msg: JsMsg;
  phase: Phase;
  item: WorkItem | undefined;
  manager: ManagerConnection | undefined;
  attempt: number;
}

interface BlockRecord {
  readonly blockId: string;
  readonly secret: string;
  jobId: string;
  /** What status shows; `draining`: near its walltime, takes no new tasks. */
  state: "submitting" | "pending" | "held" | "running" | "connected" | "draining" | "ended" | "cancelling";
  sinceMs: number;
  /** The scheduler's word on it (pending reason, why it ended). */
  reason: string;
  /** Cancelled by us: its end is not a failure. */
  cancelRequested: boolean;
  readonly logFile: string;
  /** When its job started running (scheduler's time if it says, else when first seen running). */
  startedAtMs: number | undefined;
  /** Managers of this block connected now. */
  managers: number;
  everConnected: boolean;
  /** Since when none of its managers has had a task (undefined: busy). */
  idleSinceMs: number | undefined;
  draining: boolean;
}

/** Ended blocks stay visible in status this long, so their reasons can be read. */
const ENDED_BLOCK_VISIBLE_MS = 10 * 60_000;
/** How long the agent waits for a dead manager's job to show its final state. */
const JOB_END_WAIT_MS = 4000;

/** Raised when the broker refuses the endpoint for good: retrying cannot help. */
export class EndpointRejectedError extends FabricError {
  override readonly name = "EndpointRejectedError";
}

const RECENT_DONE_LIMIT = 10_000;
/** Backoff before a function's retry: 1 s, 2 s, 4 s, … up to 60 s. */
const RETRY_BASE_MS = 1_000;
const RETRY_MAX_MS = 60_000;
/** How much of a failed task's output, stack and message is kept in its ErrorInfo. */
const ERROR_FIELD_CAP = 64 * 1024;
const FETCH_EXPIRES_MS = 5000;
/** How long a broker has to record updates sent directly before they go through the stream. */
const DIRECT_UPDATE_TIMEOUT_MS = 2_000;
/** Largest batch of updates sent to a broker directly; larger ones go through the stream. */
const DIRECT_UPDATE_MAX = 16;
const SCALE_TICK_MS = 200;
/** Delay of a status published because managers came or went (several in a row make one). */
const STATUS_SOON_MS = 100;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function tail(s: string, cap: number): string {
  if (Buffer.byteLength(s) <= cap) return s;
  const buf = Buffer.from(s);
  return `[... ${buf.length - cap} bytes truncated ...]\n${buf.subarray(buf.length - cap).toString("utf8")}`;
}

/** Keeps a failed task's ErrorInfo small enough to travel in one message, keeping the ends of output. */
function fitError(info: ErrorInfo): ErrorInfo {
  return {
    ...info,
    message: tail(info.message, ERROR_FIELD_CAP / 4),
    remote: info.remote
      ? {
          ...info.remote,
          message: tail(info.remote.message, ERROR_FIELD_CAP / 4),
          stack: tail(info.remote.stack, ERROR_FIELD_CAP),
        }
      : undefined,
    shell: info.shell
      ? {
          ...info.shell,
          stdout: tail(info.shell.stdout, ERROR_FIELD_CAP),
          stderr: tail(info.shell.stderr, ERROR_FIELD_CAP),
        }
      : undefined,
  };
}

/**
 * The endpoint agent: registers with the broker, takes this endpoint's tasks from NATS, runs them
 * on worker managers it launches through a provider, and reports results.
 *
 * The rule that keeps tasks safe: a task message is acked only after the PubAck of the update
 * carrying its terminal state. Until then its delivery is kept alive with `working()`, and if the
 * agent dies the broker's consumer hands the task out again.
 */
export class EndpointAgent {
  private log: Logger;
  private readonly cfg: EndpointConfig;
  private readonly provider: ExecutionProvider;
  private readonly startedAtMs = Date.now();
  private readonly host = hostname();

  private creds: EndpointCredentials | undefined;
  private bus: BusConnectInfo | undefined;
  /**
   * Key of this endpoint's messages, from ConnectEndpoint: only task and control messages a broker
   * signed with it are run or obeyed, and the agent signs its own (result batches, status) with
   * it, as brokers believe nothing else from this endpoint. Undefined: the broker does not sign
   * (older), nor check.
   */
  private messageKey: MessageKey | undefined;
  private droppedTasks: DropLog | undefined;
  private droppedControl: DropLog | undefined;
  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private consumer: Consumer | undefined;
  private objects: ObjectStore | undefined;
  private objectReader: ObjectReader | undefined;
  private publisher: UpdatePublisher | undefined;
  private managerServer: ManagerServer | undefined;
  private managerAddress = "";

  private readonly inflight = new Map<string, InFlightTask>();
  private readonly ready: InFlightTask[] = [];
  private readonly recentlyDone = new Set<string>();
  /** Tasks cancelled by their owners before they reached this agent: dropped on arrival. */
  private readonly cancelledIds = new Set<string>();
  private readonly blocks = new Map<string, BlockRecord>();
  private readonly scaler: BlockScaler;
  /** Recently ended blocks, newest first, for status. */
  private endedBlocks: BlockRecord[] = [];
  private scaling = false;
  private polling = false;
  private failingWaiting = false;
  private lastDemandCheckMs = 0;

  private requested = 0;
  private readonly fetches = new Set<ConsumerMessages>();
  private pumpScheduled = false;
  private numPending = 0;
  private lastError = "";
  private timers: NodeJS.Timeout[] = [];
  private maintaining = false;
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private running = false;
  private inlineLimit: number;
  /** The endpoint's allowed-functions list as the broker reported it at connect (empty: any). */
  private allowedFunctions = new Set<string>();
  /** Queue depths, from task run times unless the config fixes them. */
  private readonly sizer: QueueSizer;
  /** Workers of the blocks started at start (at least one block): the prefetch's floor. */
  private readonly blockWorkers: number;

  constructor(private readonly opts: EndpointAgentOptions) {
    this.cfg = opts.config;
    this.log = opts.log.child({ component: "endpoint.agent", endpoint: opts.paths.name });
    this.provider = opts.provider ?? createProvider(this.cfg.provider, opts.log);
    this.scaler = new BlockScaler({
      ...scalingOf(this.cfg.provider),
      failTasksAfterMs: this.cfg.provider.failTasksWithoutBlocksAfterSeconds * 1000,
    });
    this.inlineLimit = this.cfg.limits.inlinePayloadBytes;
    this.sizer = new QueueSizer(this.cfg);
    // At least one block's worth of prefetch, so an endpoint whose blocks come and go still pulls.
    const scaling = scalingOf(this.cfg.provider);
    this.blockWorkers = Math.max(1, scaling.initBlocks) * scaling.workersPerBlock;
  }

  /** The endpoint's id, once known. */
  get endpointId(): string | undefined {
    return this.creds?.endpointId;
  }

  /**
   * Registers if needed, connects to the broker and NATS, launches blocks and starts taking
   * tasks. Resolves once the endpoint is ready; rejects with {@link EndpointRejectedError} when
   * the broker refuses it, or with a FabricError when stopped while starting.
   */
  async start(): Promise<void> {
    this.creds = await this.ensureRegistered();
    const endpointId = this.creds.endpointId;
    this.log = this.log.child({ endpointId });
    const res = await this.connectEndpoint();
    this.setAllowedFunctions(res.endpoint?.allowedFunctions ?? []);
    const bus = res.bus;
    if (!bus || bus.servers.length === 0) {
      throw new EndpointRejectedError("FAILED_PRECONDITION", "the broker gave no NATS servers to connect to");
    }
    this.bus = bus;
    if (bus.messageKey.length > 0) {
      this.messageKey = new MessageKey(bus.messageKey);
    } else {
      this.log.warn(
        "the broker does not sign its task and control messages (an older broker): they are accepted unverified",
      );
    }
    this.droppedTasks = new DropLog(this.log, "task message");
    this.droppedControl = new DropLog(this.log, "control message");
    this.throwIfStopping();

    this.nc = await connect({
      servers: bus.servers,
      ...natsTlsOption(bus.servers, this.cfg.natsTls, "natsTls"),
      name: `fabric-endpoint-${endpointId}`,
      maxReconnectAttempts: -1,
      // No stack captured per request (ack, publish): it costs more than the request itself.
      noAsyncTraces: true,
      // A silent network hole is noticed within ~30 s (the client default is minutes).
      pingInterval: 10_000,
      maxPingOut: 3,
      ...(bus.userJwt
        ? { authenticator: jwtAuthenticator(bus.userJwt, new TextEncoder().encode(bus.userSeed)) }
        : {}),
      ...(bus.inboxPrefix ? { inboxPrefix: bus.inboxPrefix } : {}),
    });
    void this.watchNats(this.nc);
    this.js = jetstream(this.nc);
    const maxPayload = this.nc.info?.max_payload ?? 1024 * 1024;
    this.inlineLimit = inlineLimitFor(this.cfg.limits.inlinePayloadBytes, maxPayload, UPDATE_OVERHEAD_BYTES);
    const js = this.js;
    this.publisher = new UpdatePublisher({
      endpointId,
      log: this.log.child({ component: "endpoint.updates" }),
      maxBytes: Math.max(4096, maxPayload - 4096),
      publish: async (bytes, count) => {
        // A few updates (a quiet endpoint: latency matters) go to a broker directly. Under load,
        // batches are large and the stream's quick PubAck keeps them flowing while brokers record
        // earlier ones (a request would hold the next batch until this one is recorded).
        if (count <= DIRECT_UPDATE_MAX && (await this.sendUpdatesDirectly(bytes))) return;
        await js.publish(bus.resultSubject, bytes, { headers: this.signed(bus.resultSubject, bytes) });
      },
    });
    this.consumer = await this.getConsumer(bus);
    if (bus.controlSubject) this.listenForControl(bus.controlSubject);

    this.managerServer = new ManagerServer(
      {
        host: this.cfg.managerListen.host,
        port: this.cfg.managerListen.port,
        endpointId,
        heartbeatIntervalS: this.cfg.heartbeatIntervalSeconds,
        log: this.log,
        workerQueueDepth: () => this.sizer.workerQueueDepth(),
      },
      {
        onManagerReady: (m) => this.onManagerReady(m),
        onStarted: (m, s) => this.onStarted(m, s.taskId, s.workerId, s.atMs),
        onOutcomes: (m, outs) => {
          for (const o of outs) void this.onOutcome(m, o);
        },
        onManagerLost: (m, why) => this.onManagerLost(m, why),
      },
    );
    const addr = await this.managerServer.listen();
    this.managerAddress = `${addr.host}:${addr.port}`;
    this.running = true;
    await this.scaleBlocks();

    const every = (ms: number, fn: () => void) => this.timers.push(setInterval(fn, ms));
    every(this.statusIntervalMs(), () => void this.pollBlocks());
    // Scaling decisions are cheap; a quick tick makes a cold start (0 blocks) quick too.
    every(SCALE_TICK_MS, () => void this.scaleBlocks());
    every(this.cfg.heartbeatIntervalSeconds * 1000, () => void this.publishStatus("online"));
    // Extend every un-acked delivery well before the bus would hand it out again.
    every(Math.max(500, (bus.ackWaitS * 1000) / 3), () => this.extendDeliveries());
    void this.publishStatus("online");
    this.log.info(
      // endpointId is bound on this.log already.
      { managerListen: this.managerAddress, provider: this.provider.name, blocks: this.blocks.size },
      "endpoint ready",
    );
    this.pump();
  }

  /**
   * Stops taking tasks, lets running ones finish for `stopGraceSeconds`, gives the rest back to
   * the queue (nak: redelivered at once), publishes what finished, reports "offline", shuts the
   * managers down and closes NATS. Safe to call more than once, and while start() is under way.
   */
  stop(): Promise<void> {
    this.stopped ??= this.doStop();
    return this.stopped;
  }

  private async doStop(): Promise<void> {
    this.stopping = true;
    this.log.info({ inFlight: this.inflight.size }, "endpoint stopping");
    for (const f of this.fetches) void f.close();
    // Tasks no worker has started go back at once.
    for (const t of this.ready.splice(0)) this.giveBack(t, "not started before the agent stopped");
    const deadline = Date.now() + this.cfg.stopGraceSeconds * 1000;
    while (this.hasActiveTasks() && Date.now() < deadline) await sleep(50);
    for (const t of [...this.inflight.values()]) {
      if (t.phase !== "reporting") this.giveBack(t, "still running when the agent stopped");
    }
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.statusTimer);
    this.timers = [];
    if (this.publisher) {
      const flushed = await Promise.race([
        this.publisher.flush().then(() => true),
        sleep(10_000).then(() => false),
      ]);
      if (!flushed) {
        this.log.warn(
          { pending: this.publisher.pending },
          "could not publish every update before stopping; those tasks will run again",
        );
        this.publisher.abandon();
      }
    }
    if (this.running) await this.publishStatus("offline");
    for (const m of this.managerServer?.managers() ?? []) m.shutdown("endpoint stopping");
    await Promise.all(
      [...this.blocks.values()].map(async (b) => {
        b.cancelRequested = true;
        if (b.jobId)
          await this.provider
            .cancel(b.jobId)
            .catch((err: unknown) => this.log.warn({ err, blockId: b.blockId }, "cannot cancel block"));
      }),
    );
    await this.managerServer?.close();
    if (this.nc && !this.nc.isClosed()) {
      await this.nc.drain().catch((err: unknown) => this.log.debug({ err }, "drain failed"));
    }
    this.running = false;
    this.log.info("endpoint stopped");
  }

  // ---------------------------------------------------------------- broker

  private client(): EndpointServiceClient {
    const { target, credentials } = channelFor(this.cfg.broker, this.cfg.brokerTls);
    return new EndpointServiceClient(target, credentials, clientOptions);
  }

  private throwIfStopping(): void {
    if (this.stopping) throw new FabricError("CANCELLED", "the agent was stopped while starting");
  }

  /** Calls the broker, retrying with backoff while it is unreachable; refusals are fatal. */
  private async withBrokerRetry<T>(what: string, call: () => Promise<T>): Promise<T> {
    let delay = 1000;
    for (;;) {
      this.throwIfStopping();
      try {
        return await call();
      } catch (err) {
        const fe = toFabricError(err);
        if (!isRetryable(fe)) throw fe;
        this.lastError = `${what}: ${fe.code}: ${fe.message}`;
        this.log.warn(
          { broker: this.cfg.broker, code: fe.code, err: fe.message, retryInMs: delay },
          `${what} failed; the broker is unavailable, retrying`,
        );
        const until = Date.now() + delay;
        while (Date.now() < until && !this.stopping) await sleep(Math.min(200, until - Date.now()));
        delay = Math.min(delay * 2, 30_000);
      }
    }
  }

  private async ensureRegistered(): Promise<EndpointCredentials> {
    const saved = readCredentials(this.opts.paths);
    if (saved) {
      // A token left from before (an older version kept it, or it was added by hand) is unused.
      this.removeUserToken();
      return saved;
    }
    const token = this.cfg.token;
    if (!token) {
      throw new EndpointRejectedError(
        "UNAUTHENTICATED",
        `endpoint ${this.opts.paths.name} is not registered and has no token to register with: set FABRIC_TOKEN or run \`fabric-endpoint configure ${this.opts.paths.name} --broker ADDR --token TOKEN --force\``,
      );
    }
    const client = this.client();
    try {
      const res = await this.withBrokerRetry("RegisterEndpoint", () =>
        callUnary<{ name: string; description: string; endpointId: string }, RegisterEndpointResponse>(
          client.registerEndpoint.bind(client),
          client,
          { name: this.opts.paths.name, description: this.cfg.description, endpointId: "" },
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
      writeCredentials(this.opts.paths, creds);
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
    try {
      if (removeConfigToken(this.opts.paths))
        this.log.info(
          { config: this.opts.paths.config },
          "removed the user token from the config: the endpoint uses its own credential",
        );
    } catch (err) {
      // Not worth refusing to run over, but the owner must know the token is still on disk.
      this.log.error(
        { config: this.opts.paths.config, err: (err as Error).message },
        "cannot remove the user token from the config; delete its `token:` line by hand",
      );
    }
  }

  private setAllowedFunctions(ids: readonly string[]): void {
    const next = new Set(ids);
    const same = next.size === this.allowedFunctions.size && ids.every((id) => this.allowedFunctions.has(id));
    this.allowedFunctions = next;
    if (!same) this.log.info({ allowedFunctions: next.size }, "the endpoint's allowed functions changed");
  }

  /** Re-reads the endpoint's policy (allowed functions) from the broker; best effort. */
  private async refreshPolicy(): Promise<void> {
    const client = this.client();
    try {
      const res = await callUnary<{ endpointId: string }, GetEndpointResponse>(
        client.getEndpoint.bind(client),
        client,
        { endpointId: this.creds!.endpointId },
        bearer(this.creds!.endpointToken),
        { deadlineMs: 15_000 },
      );
      if (res.endpoint) this.setAllowedFunctions(res.endpoint.allowedFunctions);
    } catch (err) {
      this.log.warn({ err: toFabricError(err).message }, "cannot re-read the endpoint's policy");
    } finally {
      client.close();
    }
  }

  private async connectEndpoint(): Promise<ConnectEndpointResponse> {
    const client = this.client();
    const token = this.creds!.endpointToken;
    try {
      return await this.withBrokerRetry("ConnectEndpoint", () =>
        callUnary<{ agentVersion: string; hostname: string }, ConnectEndpointResponse>(
          client.connectEndpoint.bind(client),
          client,
          { agentVersion: AGENT_VERSION, hostname: this.host },
          bearer(token),
          { deadlineMs: 15_000 },
        ),
      );
    } catch (err) {
      const fe = toFabricError(err);
      if (fe.code === "UNAUTHENTICATED" || fe.code === "NOT_FOUND" || fe.code === "PERMISSION_DENIED") {
        throw new EndpointRejectedError(
          fe.code,
          `the broker does not accept endpoint ${this.creds!.endpointId} (${fe.code}: ${fe.message}); it may have been deleted: run \`fabric-endpoint delete ${this.opts.paths.name}\` and configure it again`,
        );
      }
      throw fe;
    } finally {
      client.close();
    }
  }

  // ---------------------------------------------------------------- NATS

  private async watchNats(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") {
        this.lastError = `disconnected from NATS ${s.server}`;
        this.log.warn({ server: s.server }, "disconnected from NATS; reconnecting");
      } else if (s.type === "reconnect") {
        this.lastError = "";
        this.log.info({ server: s.server }, "reconnected to NATS");
        this.pump();
        // A policy change published while the link was down never arrived: ask for it.
        void this.refreshPolicy();
      } else if (s.type === "error") {
        this.lastError = `NATS: ${s.error.message}`;
        this.log.warn({ err: s.error.message }, "NATS error");
      }
    }
  }

  /**
   * Sends a TaskUpdateBatch to the brokers as a request; true once one says every update is
   * recorded. Otherwise (no broker, a timeout, a task not recorded yet) the caller publishes the
   * batch to the durable result stream, which is slower by a stream write and a delivery.
   */
  private async sendUpdatesDirectly(bytes: Uint8Array): Promise<boolean> {
    const subject = this.bus?.resultRequestSubject;
    if (!subject || !this.nc || this.nc.isClosed()) return false;
    try {
      const reply = await this.nc.request(subject, bytes, {
        timeout: DIRECT_UPDATE_TIMEOUT_MS,
        headers: this.signed(subject, bytes),
      });
      const { recorded, reason } = TaskUpdateBatchReply.decode(reply.data);
      if (!recorded)
        this.log.debug({ reason }, "a broker did not record updates sent directly; using the stream");
      return recorded;
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, "updates not sent directly; using the stream");
      return false;
    }
  }

  private async getConsumer(bus: BusConnectInfo): Promise<Consumer> {
    let delay = 500;
    for (;;) {
      this.throwIfStopping();
      try {
        return await this.js!.consumers.get(bus.taskStream, bus.taskConsumer);
      } catch (err) {
        this.lastError = `task consumer ${bus.taskStream}/${bus.taskConsumer}: ${(err as Error).message}`;
        this.log.warn(
          {
            stream: bus.taskStream,
            consumer: bus.taskConsumer,
            err: (err as Error).message,
            retryInMs: delay,
          },
          "cannot open the task consumer; retrying",
        );
        await sleep(delay);
        delay = Math.min(delay * 2, 10_000);
      }
    }
  }

  /** The payload bucket, for writing large results (reads go through {@link payloadReader}). */
  private async objectStore(): Promise<ObjectStore> {
    // Opened without a stream-info check: per-endpoint NATS users may not be allowed that call.
    this.objects ??= await new Objm(this.nc!).open(this.bus!.payloadBucket, false);
    return this.objects;
  }

  /**
   * Reads large arguments with message gets: the object-store client's reads create consumers,
   * which the agent's NATS user may not (a consumer can deliver to any subject).
   */
  private payloadReader(): ObjectReader {
    this.objectReader ??= new ObjectReader(this.nc!, this.bus!.payloadBucket);
    return this.objectReader;
  }

  // ---------------------------------------------------------------- pulling

  private get totalWorkers(): number {
    let n = 0;
    for (const m of this.managerServer?.managers() ?? []) n += m.workers;
    return n;
  }

  /**
   * Tasks the agent may hold now: every worker busy plus `prefetch` waiting, minus what it holds.
   * Nothing is pulled while no manager is connected, so tasks stay in the queue for another agent
   * or for later rather than sitting un-started here.
   */
  private capacity(): number {
    const workers = this.totalWorkers;
    if (workers === 0) return 0;
    return this.window(workers) - this.inflight.size - this.requested;
  }

  /** Tasks the agent may hold with `workers` connected: what they hold, plus the prefetch. */
  private window(workers: number): number {
    return (
      workers * this.sizer.workerQueueDepth() + this.sizer.prefetch(Math.max(workers, this.blockWorkers))
    );
  }

  /** Pulls more tasks if there is room; coalesced so a burst of completions makes one request. */
  private pump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      if (this.stopping || !this.running || !this.consumer || this.nc?.isClosed()) return;
      const want = this.capacity();
      // Pull in batches: a request per finished task would cost more than the tasks. A quarter of
      // the window is enough to ask for, unless nothing at all is held or asked for.
      const window = this.window(this.totalWorkers);
      const idle = this.inflight.size === 0 && this.requested === 0;
      if (want > 0 && (idle || want >= Math.max(1, Math.floor(window / 4)))) void this.fetchBatch(want);
    });
  }

  private async fetchBatch(n: number): Promise<void> {
    this.requested += n;
    let got = 0;
    let failed = false;
    try {
      const iter = await this.consumer!.fetch({ max_messages: n, expires: FETCH_EXPIRES_MS });
      this.fetches.add(iter);
      try {
        for await (const msg of iter) {
          got++;
          this.requested--;
          this.onTaskMessage(msg);
        }
      } finally {
        this.fetches.delete(iter);
      }
    } catch (err) {
      failed = true;
      if (!this.stopping) {
        this.lastError = `fetching tasks: ${(err as Error).message}`;
        this.log.warn({ err: (err as Error).message }, "fetching tasks failed; retrying");
      }
    } finally {
      this.requested -= n - got;
    }
    if (failed) await sleep(1000);
    this.pump();
  }

  // ---------------------------------------------------------------- tasks

  private actor(): string {
    return `endpoint/${this.creds!.endpointId}`;
  }

  /**
   * Headers carrying the MAC of a message this agent sends (none when the broker gave no key). The
   * MAC covers the exact subject: a batch sent as a request and then to the stream is signed twice.
   */
  private signed(subject: string, data: Uint8Array): MsgHdrs | undefined {
    return this.messageKey?.headers(subject, data);
  }

  /**
   * Whether a message on this endpoint's subjects was signed by a broker; if not, it is logged
   * (rate-limited) as dropped and the caller drops it.
   */
  private fromBroker(
    subject: string,
    data: Uint8Array,
    mac: string | undefined,
    dropped: DropLog | undefined,
  ): boolean {
    if (!this.messageKey) return true;
    const verdict = this.messageKey.check(subject, data, mac);
    if (verdict === "ok") return true;
    dropped?.drop(subject, verdict);
    return false;
  }

  private onTaskMessage(msg: JsMsg): void {
    // First of all: a message no broker signed is not a task, whatever it says, and names no task
    // we could report on (its id may be anyone's). Acked, not terminated: an ack removes it from
    // the work queue, where a terminated message stays stored (nats-server 2.9) until its max age.
    if (!this.fromBroker(msg.subject, msg.data, msg.headers?.get(MAC_HEADER), this.droppedTasks)) {
      msg.ack();
      return;
    }
    if (this.stopping) {
      msg.nak();
      return;
    }
    let task: TaskMessage;
    try {
      task = TaskMessage.decode(msg.data);
      if (!task.taskId) throw new Error("it has no task id");
    } catch (err) {
      const taskId = msg.headers?.get("Nats-Msg-Id") ?? "";
      if (!taskId) {
        this.log.error(
          { seq: msg.seq, err: (err as Error).message },
          "undecodable task message without a task id; terminating it",
        );
        msg.term("undecodable task message");
        return;
      }
      this.log.error(
        { taskId, err: (err as Error).message },
        "undecodable task message; reporting it failed",
      );
      const t = this.track(taskId, msg);
      this.finish(
        t,
        this.failedUpdate(
          taskId,
          new FabricError(
            "INVALID_ARGUMENT",
            `the task message cannot be decoded: ${(err as Error).message}`,
            { reason: "invalid_task" },
          ),
          this.actor(),
        ),
      );
      return;
    }
    const taskId = task.taskId;
    if (this.allowedFunctions.size > 0 && !this.allowedFunctions.has(task.functionId)) {
      // The broker checks this too; the agent does not trust a task message that slipped past it.
      this.log.warn({ taskId, functionId: task.functionId }, "task of a function not allowed here refused");
      const refused = new FabricError(
        "PERMISSION_DENIED",
        `function ${task.functionId} is not in this endpoint's allowed-functions list`,
        { reason: "function_not_allowed" },
      );
      this.finish(this.track(taskId, msg), this.failedUpdate(taskId, refused, this.actor()));
      return;
    }
    const existing = this.inflight.get(taskId);
    if (existing) {
      // A redelivery of a task we already hold (our working() came too late, or NATS reconnected):
      // keep the newest handle so the final ack lands, and do not run it twice.
      existing.msg = msg;
      this.log.debug({ taskId }, "redelivered task already in flight");
      return;
    }
    if (this.cancelledIds.has(taskId)) {
      // Cancelled while queued: the broker recorded it already; only the message is left.
      this.cancelledIds.delete(taskId);
      msg.ack();
      return;
    }
    if (this.recentlyDone.has(taskId)) {
      // Its result was published; only the ack was lost.
      msg.ack();
      return;
    }
    const t = this.track(taskId, msg);
    void this.prepare(t, task);
    // A task while no worker is up is a cold start: decide on blocks now, not at the next tick.
    if (this.totalWorkers === 0) void this.scaleBlocks();
  }

  private track(taskId: string, msg: JsMsg): InFlightTask {
    const t: InFlightTask = {
      taskId,
      msg,
      phase: "resolving",
      item: undefined,
      manager: undefined,
      attempt: msg.info?.deliveryCount ?? 1,
    };
    this.inflight.set(taskId, t);
    return t;
  }

  private async resolvePayload(p: Payload | undefined, what: string): Promise<Buffer> {
    if (!isStored(p)) return inlineBytes(p);
    const data = await this.payloadReader().read(p.objectRef);
    if (data === null) {
      throw new FabricError(
        "INVALID_ARGUMENT",
        `the task's ${what} object ${p.objectRef} is missing from the payload store`,
        { reason: "invalid_task" },
      );
    }
    return Buffer.from(data);
  }

  private async prepare(t: InFlightTask, task: TaskMessage): Promise<void> {
    try {
      if (!task.function?.kind) {
        throw new FabricError("INVALID_ARGUMENT", "the task carries no function to run", {
          reason: "invalid_task",
        });
      }
      // Inline payloads (the common case) need no round trip: no await, no extra turn.
      const inline = !isStored(task.args) && !isStored(task.kwargs);
      const [argsJson, kwargsJson] = inline
        ? [inlineBytes(task.args), inlineBytes(task.kwargs)]
        : await Promise.all([
            this.resolvePayload(task.args, "args"),
            this.resolvePayload(task.kwargs, "kwargs"),
          ]);
      t.item = {
        taskId: t.taskId,
        functionId: task.functionId,
        function: task.function,
        argsJson,
        kwargsJson,
        attempt: t.attempt,
        timeoutS: task.timeoutS ?? 0,
      };
    } catch (err) {
      const fe = toFabricError(err);
      const log = this.log.child({ taskId: t.taskId });
      if (fe.code === "INVALID_ARGUMENT") {
        log.warn({ err: fe.message }, "invalid task");
        this.finish(t, this.failedUpdate(t.taskId, fe, this.actor()));
      } else {
        // The payload store is unreachable for now: hand the task back for a later try.
        log.warn({ err: fe.message }, "cannot fetch the task's payload; giving it back");
        this.lastError = `payload store: ${fe.message}`;
        this.giveBack(t, "payload store unavailable", 1000);
      }
      return;
    }
    if (this.stopping) {
      this.giveBack(t, "agent stopping");
      return;
    }
    t.phase = "queued";
    this.ready.push(t);
    this.dispatch();
  }

  /**
   * Hands queued tasks to managers with room, the idlest first. Calls made in one go (a burst of
   * pulled tasks, a frame of outcomes) are coalesced: one pass, one WorkBatch per manager.
   */
  private dispatch(): void {
    if (this.dispatchScheduled) return;
    this.dispatchScheduled = true;
    queueMicrotask(() => {
      this.dispatchScheduled = false;
      this.dispatchNow();
    });
  }

  private dispatchScheduled = false;

  private dispatchNow(): void {
    if (this.ready.length === 0 || this.stopping) return;
    const managers = (this.managerServer?.managers() ?? [])
      // Managers of a block near its walltime take nothing new.
      .filter((m) => m.idle > 0 && !this.blocks.get(m.blockId)?.draining)
      .sort((a, b) => b.idle - a.idle);
    for (const m of managers) {
      if (this.ready.length === 0) break;
      const batch = this.ready.splice(0, m.idle);
      for (const t of batch) {
        t.phase = "dispatched";
        t.manager = m;
        m.assigned.add(t.taskId);
      }
      m.sendWork(batch.map((t) => t.item!));
    }
  }

  private onStarted(m: ManagerConnection, taskId: string, workerId: string, atMs: number): void {
    const t = this.inflight.get(taskId);
    if (!t || t.manager !== m || t.phase !== "dispatched") return;
    t.phase = "running";
    // Started notices come only for tasks still running after a moment: tasks are not all short.
    this.sizer.observeRunning(Math.max(0, Date.now() - atMs));
    this.publisher!.add({
      taskId,
      state: TaskState.TASK_STATE_RUNNING,
      atMs,
      actor: `manager/${m.managerId}`,
      detail: `block ${m.blockId}, worker ${workerId}`,
      result: undefined,
      error: undefined,
      attempt: t.attempt,
      startedAtMs: 0,
      startedBy: "",
    });
  }

  private async onOutcome(m: ManagerConnection, o: WorkOutcome): Promise<void> {
    m.assigned.delete(o.taskId);
    const t = this.inflight.get(o.taskId);
    if (!t || t.manager !== m || (t.phase !== "dispatched" && t.phase !== "running")) {
      this.log.debug(
        { taskId: o.taskId, managerId: m.managerId },
        "outcome for a task not in flight here; ignored",
      );
      this.dispatch();
      return;
    }
    if (o.startedAtMs > 0 && o.finishedAtMs >= o.startedAtMs)
      this.sizer.observe(o.finishedAtMs - o.startedAtMs);
    // The manager sends no "started" notice for a task that finishes quickly: the outcome says it.
    const unstarted = t.phase === "dispatched";
    t.phase = "reporting";
    this.dispatch();
    const actor = `manager/${m.managerId}`;
    let update: TaskUpdate;
    if (o.ok) {
      const success = this.successUpdate(t, o, actor);
      update = success instanceof Promise ? await success : success;
    } else {
      const error = fitError(
        o.error ?? errorToInfo(new FabricError("UNKNOWN", "the task failed without an error")),
      );
      if (this.retryAfterFailure(t, error, actor)) return;
      update = {
        taskId: t.taskId,
        state: TaskState.TASK_STATE_FAILED,
        atMs: o.finishedAtMs || Date.now(),
        actor,
        detail: error.reason,
        result: undefined,
        error,
        attempt: t.attempt,
        startedAtMs: 0,
        startedBy: "",
      };
    }
    if (unstarted && o.startedAtMs > 0 && update.startedAtMs === 0)
      update = { ...update, startedAtMs: o.startedAtMs, startedBy: actor };
    this.finish(t, update);
  }

  /**
   * Runs a failed task again when its function asks for retries and attempts remain: the attempt's
   * failure is recorded in the task's history, and the message goes back to the queue with a
   * backoff (its delivery count is the attempt number, so it survives an agent restart).
   */
  private retryAfterFailure(t: InFlightTask, error: ErrorInfo, actor: string): boolean {
    const maxRetries = t.item?.function?.maxRetries ?? 0;
    const final = error.reason === "cancelled" || error.reason === "invalid_task";
    if (final || t.attempt > maxRetries || this.stopping) return false;
    const delayMs = Math.min(RETRY_BASE_MS * 2 ** (t.attempt - 1), RETRY_MAX_MS);
    const detail = `attempt ${t.attempt} of ${maxRetries + 1} failed (${error.reason || error.code}: ${error.message}); retrying in ${delayMs / 1000} s`;
    this.publisher!.add({
      taskId: t.taskId,
      state: TaskState.TASK_STATE_RUNNING,
      atMs: Date.now(),
      actor,
      detail: detail.slice(0, 2000),
      result: undefined,
      error: undefined,
      attempt: t.attempt,
      startedAtMs: 0,
      startedBy: "",
    });
    this.giveBack(t, detail, delayMs);
    this.dispatch();
    this.pump();
    return true;
  }

  /**
   * The update of a task that succeeded. A small result (the common case) travels inline and the
   * update is returned at once, without waiting a turn; a large one is stored first.
   */
  private successUpdate(t: InFlightTask, o: WorkOutcome, actor: string): TaskUpdate | Promise<TaskUpdate> {
    const bytes = o.resultJson;
    if (bytes.length > this.cfg.limits.maxResultBytes) {
      return this.failedUpdate(
        t.taskId,
        new FabricError(
          "RESOURCE_EXHAUSTED",
          `the function's result is ${bytes.length} bytes, over this endpoint's limit of ${this.cfg.limits.maxResultBytes} bytes`,
          { reason: "result_too_large" },
        ),
        actor,
        t.attempt,
      );
    }
    const update: TaskUpdate = {
      taskId: t.taskId,
      state: TaskState.TASK_STATE_SUCCESS,
      atMs: o.finishedAtMs || Date.now(),
      actor,
      detail: "",
      result: inlinePayload(bytes),
      error: undefined,
      attempt: t.attempt,
      startedAtMs: 0,
      startedBy: "",
    };
    return fitsInline(bytes.length, this.inlineLimit) ? update : this.storeResult(update, bytes);
  }

  /** Writes a large result to the payload store; the update then refers to it. */
  private async storeResult(update: TaskUpdate, bytes: Uint8Array): Promise<TaskUpdate> {
    const name = Bus.resultObject(update.taskId);
    for (let i = 0, delay = 250; i < 5; i++, delay *= 2) {
      try {
        const store = await this.objectStore();
        await store.putBlob({ name }, bytes);
        return { ...update, result: storedPayload(name, bytes.length) };
      } catch (err) {
        this.log.warn(
          { taskId: update.taskId, err: (err as Error).message },
          "cannot store a large result; retrying",
        );
        await sleep(delay);
      }
    }
    return this.failedUpdate(
      update.taskId,
      new FabricError(
        "UNAVAILABLE",
        `the result (${bytes.length} bytes) could not be written to the payload store`,
      ),
      update.actor,
      update.attempt,
    );
  }

  private failedUpdate(taskId: string, err: FabricError, actor: string, attempt = 1): TaskUpdate {
    return {
      taskId,
      state: TaskState.TASK_STATE_FAILED,
      atMs: Date.now(),
      actor,
      detail: err.reason,
      result: undefined,
      error: fitError(errorToInfo(err)),
      attempt,
      startedAtMs: 0,
      startedBy: "",
    };
  }

  /** Queues the terminal update; the task message is acked once that update's PubAck is in. */
  private finish(t: InFlightTask, update: TaskUpdate): void {
    t.phase = "reporting";
    this.publisher!.add(update, () => {
      t.msg.ack();
      if (this.inflight.get(t.taskId) === t) this.inflight.delete(t.taskId);
      this.recentlyDone.add(t.taskId);
      if (this.recentlyDone.size > RECENT_DONE_LIMIT)
        this.recentlyDone.delete(this.recentlyDone.values().next().value!);
      this.pump();
    });
  }

  /** Returns a task to the queue for immediate (or delayed) redelivery. */
  /** Follows the broker's control messages (cancellations) for this endpoint. */
  private listenForControl(subject: string): void {
    this.nc!.subscribe(subject, {
      callback: (err, m) => {
        if (err) {
          this.log.warn({ err: err.message }, "control subscription failed");
          return;
        }
        if (!this.fromBroker(m.subject, m.data, m.headers?.get(MAC_HEADER), this.droppedControl)) return;
        let control: EndpointControl;
        try {
          control = EndpointControl.decode(m.data);
        } catch (e) {
          this.log.warn({ err: (e as Error).message }, "undecodable control message dropped");
          return;
        }
        if (control.cancelTaskIds.length > 0) this.cancelTasks(control.cancelTaskIds);
        if (control.allowedFunctions) this.setAllowedFunctions(control.allowedFunctions.functionIds);
      },
    });
  }

  /** Drops cancelled tasks that wait here and stops those that run; remembers the others. */
  private cancelTasks(taskIds: readonly string[]): void {
    const byManager = new Map<ManagerConnection, string[]>();
    for (const taskId of taskIds) {
      const t = this.inflight.get(taskId);
      if (!t) {
        this.cancelledIds.add(taskId);
        if (this.cancelledIds.size > RECENT_DONE_LIMIT)
          this.cancelledIds.delete(this.cancelledIds.values().next().value!);
        continue;
      }
      this.log.info({ taskId, phase: t.phase }, "task cancelled by its owner");
      if (t.phase === "queued" || t.phase === "resolving") {
        const i = this.ready.indexOf(t);
        if (i >= 0) this.ready.splice(i, 1);
        this.finish(
          t,
          this.failedUpdate(
            taskId,
            new FabricError("CANCELLED", "the task was cancelled by its owner", { reason: "cancelled" }),
            this.actor(),
            t.attempt,
          ),
        );
      } else if ((t.phase === "dispatched" || t.phase === "running") && t.manager) {
        const list = byManager.get(t.manager) ?? [];
        list.push(taskId);
        byManager.set(t.manager, list);
      }
    }
    for (const [m, ids] of byManager) m.send({ msg: { $case: "cancel", value: { taskIds: ids } } });
  }

  private giveBack(t: InFlightTask, why: string, delayMs?: number): void {
    if (this.inflight.get(t.taskId) === t) this.inflight.delete(t.taskId);
    t.manager?.assigned.delete(t.taskId);
    const i = this.ready.indexOf(t);
    if (i >= 0) this.ready.splice(i, 1);
    try {
      if (delayMs === undefined) t.msg.nak();
      else t.msg.nak(delayMs);
    } catch (err) {
      this.log.debug({ taskId: t.taskId, err: (err as Error).message }, "nak failed");
    }
    this.log.info({ taskId: t.taskId, why }, "task handed back to the queue");
  }

  private hasActiveTasks(): boolean {
    for (const t of this.inflight.values())
      if (t.phase === "dispatched" || t.phase === "running" || t.phase === "resolving") return true;
    return false;
  }

  private extendDeliveries(): void {
    if (!this.nc || this.nc.isClosed()) return;
    for (const t of this.inflight.values()) {
      try {
        t.msg.working();
      } catch (err) {
        this.log.debug({ taskId: t.taskId, err: (err as Error).message }, "cannot extend delivery");
      }
    }
  }

  // ---------------------------------------------------------------- managers and blocks

  private onManagerReady(m: ManagerConnection): void {
    const b = this.blocks.get(m.blockId);
    if (b) {
      const now = Date.now();
      if (!b.draining && b.state !== "cancelling") b.state = "connected";
      b.sinceMs = now;
      b.reason = "";
      b.managers += 1;
      b.everConnected = true;
      b.startedAtMs ??= now;
      b.idleSinceMs ??= now;
    }
    this.scaler.recordHealthy();
    if (this.stopping) {
      m.shutdown("endpoint stopping");
      return;
    }
    this.dispatch();
    this.pump();
    this.statusSoon();
  }

  /** Publishes the status shortly (coalesced): workers came or went, which users watch for. */
  private statusSoon(): void {
    if (this.statusTimer) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      if (!this.stopping) void this.publishStatus("online");
    }, STATUS_SOON_MS);
  }

  private statusTimer: NodeJS.Timeout | undefined;

  private onManagerLost(m: ManagerConnection, why: string): void {
    const level = this.stopping ? "debug" : "warn";
    this.log[level]({ managerId: m.managerId, blockId: m.blockId, tasks: m.assigned.size }, why);
    const taskIds = [...m.assigned];
    m.assigned.clear();
    const b = this.blocks.get(m.blockId);
    if (b) b.managers = Math.max(0, b.managers - 1);
    void this.loseTasks(b, m, taskIds, why);
    this.pump();
    this.statusSoon();
  }

  /**
   * A manager is gone with `taskIds` on it. Waits briefly for its job's final state, so the tasks
   * fail with a reason naming the job and how it ended (or go back to the queue, when retries on
   * block loss are configured); a job still running without its manager is cancelled.
   */
  private async loseTasks(
    b: BlockRecord | undefined,
    m: ManagerConnection,
    taskIds: readonly string[],
    why: string,
  ): Promise<void> {
    let detail = `${why} (the manager process or its node may have died)`;
    let reason = "worker_lost";
    if (b && !this.stopping && b.state !== "ended" && !b.cancelRequested) {
      const final = b.jobId ? await this.awaitJobEnd(b.jobId, JOB_END_WAIT_MS) : undefined;
      if (final && isJobEnded(final.state)) {
        detail = `its block ended: ${this.provider.name} job ${b.jobId} (block ${b.blockId}) ${final.state}${final.reason ? ` (${final.reason})` : ""}`;
        if (final.state === "timeout") reason = "walltime";
        if (final.state === "out_of_memory") reason = "out_of_memory";
        this.endBlock(b, `block ${b.blockId} (job ${b.jobId}) ended: ${final.reason ?? final.state}`, false);
        this.lastError = detail;
      } else {
        detail = `${why}; its ${this.provider.name} job ${b.jobId || "(none)"} was ${final?.state ?? "in an unknown state"}, so the endpoint cancelled it`;
        this.lastError = detail;
        // Make sure the block is gone; the scaler replaces it if it is still needed.
        this.cancelBlock(b, why);
      }
    }
    const retries = this.cfg.provider.retriesOnBlockLoss;
    for (const taskId of taskIds) {
      const t = this.inflight.get(taskId);
      if (!t || t.manager !== m || t.phase === "reporting") continue;
      if (t.phase === "dispatched" && !this.stopping) {
        // Never reported started: it waited in the manager's queue (or had started only moments
        // before, see the manager's STARTED_HOLD_MS). It runs elsewhere, not failed.
        this.giveBack(t, `its manager was lost before the task started (${detail}); it will run again`);
        continue;
      }
      if (t.attempt <= retries && !this.stopping) {
        this.giveBack(
          t,
          `its worker was lost (${detail}); attempt ${t.attempt} of ${retries + 1}, running it again`,
        );
        continue;
      }
      this.finish(
        t,
        this.failedUpdate(
          taskId,
          new FabricError("UNAVAILABLE", `the worker running this task was lost: ${detail}`, { reason }),
          this.actor(),
          t.attempt,
        ),
      );
    }
    this.pump();
  }

  /** Polls the provider until `jobId` has ended or `waitMs` passed; the last state seen. */
  private async awaitJobEnd(jobId: string, waitMs: number): Promise<BlockJobStatus | undefined> {
    const deadline = Date.now() + waitMs;
    let last: BlockJobStatus | undefined;
    for (;;) {
      try {
        last = (await this.provider.status([jobId])).get(jobId) ?? last;
      } catch (err) {
        this.log.debug({ jobId, err: (err as Error).message }, "cannot read a lost block's state");
      }
      if ((last && isJobEnded(last.state)) || Date.now() >= deadline || this.stopping) return last;
      await sleep(250);
    }
  }

  private cancelBlock(b: BlockRecord, why: string, failure = true): void {
    if (b.cancelRequested) return;
    b.cancelRequested = true;
    b.state = "cancelling";
    b.reason = why;
    b.sinceMs = Date.now();
    // A block still being submitted is cancelled once its job id is known (see launchBlock).
    if (!b.jobId) return;
    void this.provider
      .cancel(b.jobId)
      .catch((err: unknown) => {
        const msg = toFabricError(err).message;
        this.lastError = `cannot cancel block ${b.blockId} (job ${b.jobId}): ${msg}`;
        this.log.warn({ blockId: b.blockId, jobId: b.jobId, err: msg }, "cannot cancel block");
      })
      .finally(() => {
        this.endBlock(b, why, failure);
      });
  }

  private endBlock(b: BlockRecord, reason: string, failure: boolean): void {
    if (!this.blocks.has(b.blockId)) return;
    this.blocks.delete(b.blockId);
    this.managerServer?.forgetBlock(b.blockId);
    b.state = "ended";
    b.reason = reason;
    b.sinceMs = Date.now();
    this.endedBlocks = [
      b,
      ...this.endedBlocks.filter((e) => Date.now() - e.sinceMs < ENDED_BLOCK_VISIBLE_MS),
    ].slice(0, 20);
    if (failure && !this.stopping) {
      this.scaler.recordFailure(Date.now());
      this.lastError = reason;
    }
    this.log.info({ blockId: b.blockId, jobId: b.jobId, reason }, "block ended");
  }

  private statusIntervalMs(): number {
    const p = this.cfg.provider;
    return this.opts.blockPollIntervalMs ?? (p.type === "local" ? 1000 : p.statusIntervalSeconds * 1000);
  }

  /** Blocks that count: not ended, not being cancelled. */
  private liveBlocks(): BlockRecord[] {
    return [...this.blocks.values()].filter((b) => b.state !== "ended" && b.state !== "cancelling");
  }

  /** Asks the provider for job states: notices ended, held, started and never-connecting blocks. */
  private async pollBlocks(): Promise<void> {
    if (this.polling || this.stopping) return;
    const live = this.liveBlocks().filter((b) => b.jobId);
    if (live.length === 0) return;
    this.polling = true;
    try {
      const states = await this.provider.status(live.map((b) => b.jobId));
      const now = Date.now();
      const connectTimeoutMs = this.cfg.provider.connectTimeoutSeconds * 1000;
      for (const b of live) {
        const s = states.get(b.jobId);
        if (!s || !this.blocks.has(b.blockId) || b.cancelRequested) continue;
        const job = `${this.provider.name} job ${b.jobId}`;
        if (isJobEnded(s.state)) {
          if (b.managers > 0) continue; // its managers' connections drop next; loseTasks reports it
          const tail = b.everConnected ? "" : blockLogTail(b.logFile);
          const why = `block ${b.blockId} (${job}) ${b.everConnected ? "ended" : "ended before its manager connected"}: ${s.reason ?? s.state}${tail ? `; its log ends: ${tail}` : ""}`;
          if (!b.everConnected) this.log.warn({ blockId: b.blockId, jobId: b.jobId, state: s.state }, why);
          this.endBlock(b, why, !b.everConnected);
          if (!b.everConnected) this.lastError = why;
        } else if (s.state === "held" || s.state === "pending") {
          const reason = s.reason ?? "";
          if (b.state === "submitting" || b.state === "pending" || b.state === "held") {
            if (b.state !== s.state) b.sinceMs = now;
            b.state = s.state;
            b.reason = reason;
          }
          if (s.state === "held")
            this.lastError = `block ${b.blockId} (${job}) is held and will not start on its own: ${reason}`;
        } else if (s.state === "running") {
          b.startedAtMs ??= Math.min(now, s.startedAtMs ?? now);
          if (b.state === "pending" || b.state === "held" || b.state === "submitting") {
            b.state = "running";
            b.sinceMs = now;
            b.reason = "";
          }
          if (!b.everConnected && now - b.startedAtMs > connectTimeoutMs) {
            const tail = blockLogTail(b.logFile);
            const why = `block ${b.blockId} (${job}) has run for ${Math.round((now - b.startedAtMs) / 1000)} s but no worker manager connected back to ${this.managerAddress}${tail ? `; its log ends: ${tail}` : ""}`;
            this.lastError = why;
            this.log.warn({ blockId: b.blockId, jobId: b.jobId }, why);
            this.cancelBlock(b, why, true);
          }
        }
      }
    } catch (err) {
      const fe = toFabricError(err);
      this.lastError = `${this.provider.name}: cannot read job states: ${fe.message}`;
      this.log.warn({ err: fe.message }, "cannot read block job states");
    } finally {
      this.polling = false;
    }
  }

  /** Tasks this endpoint owes: held here plus waiting in its queue (as last read). */
  private outstandingTasks(): number {
    return this.inflight.size + this.numPending;
  }

  /** Reads how many tasks wait in the queue: often while no worker is up (that is a cold start). */
  private async refreshQueued(now: number): Promise<void> {
    const every = this.totalWorkers === 0 ? SCALE_TICK_MS : 1000;
    if (!this.consumer || now - this.lastDemandCheckMs < every) return;
    this.lastDemandCheckMs = now;
    try {
      this.numPending = (await this.consumer.info(false)).num_pending;
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, "cannot read the task queue's length");
    }
  }

  /** Scales blocks out and in, drains blocks near their walltime, fails tasks no block can serve. */
  private async scaleBlocks(): Promise<void> {
    if (this.scaling || this.stopping || !this.running) return;
    this.scaling = true;
    try {
      let now = Date.now();
      await this.refreshQueued(now);
      now = Date.now();
      const busy = new Set<string>();
      for (const m of this.managerServer?.managers() ?? []) if (m.assigned.size > 0) busy.add(m.blockId);
      const p = this.cfg.provider;
      const walltimeMs = p.type === "local" ? undefined : (parseWalltime(p.walltime) ?? 0) * 1000;
      const drainMs = p.type === "local" ? 0 : p.drainBeforeWalltimeSeconds * 1000;
      for (const b of this.liveBlocks()) {
        if (busy.has(b.blockId)) b.idleSinceMs = undefined;
        else b.idleSinceMs ??= now;
        if (
          walltimeMs &&
          b.startedAtMs !== undefined &&
          !b.draining &&
          now >= b.startedAtMs + walltimeMs - drainMs
        ) {
          b.draining = true;
          b.state = "draining";
          b.sinceMs = now;
          b.reason = `its walltime ends within ${Math.round(drainMs / 1000)} s: no new tasks`;
          this.log.info({ blockId: b.blockId, jobId: b.jobId }, "block near its walltime; draining it");
        }
        if (b.draining && !busy.has(b.blockId)) this.cancelBlock(b, "drained before its walltime", false);
      }
      const views: BlockView[] = this.liveBlocks().map((b) => ({
        blockId: b.blockId,
        state: b.draining ? "draining" : b.everConnected ? "connected" : "pending",
        idleSinceMs: b.idleSinceMs,
      }));
      const d = this.scaler.decide(now, this.outstandingTasks(), views);
      for (const id of d.cancel) {
        const b = this.blocks.get(id);
        if (b) this.cancelBlock(b, `idle for ${p.idleTimeoutSeconds} s (scaling in to ${d.target})`, false);
      }
      if (d.launch > 0) {
        this.log.info(
          { launch: d.launch, target: d.target, outstanding: this.outstandingTasks() },
          "scaling out",
        );
        await Promise.all(Array.from({ length: d.launch }, () => this.launchBlock()));
      }
      if (this.scaler.shouldFailWaitingTasks(Date.now(), this.outstandingTasks(), this.totalWorkers)) {
        void this.failWaitingTasks();
      }
    } catch (err) {
      this.lastError = `block scaling: ${(err as Error).message}`;
      this.log.error({ err }, "block scaling failed");
    } finally {
      this.scaling = false;
    }
  }

  /**
   * No block could start for `failTasksWithoutBlocksAfterSeconds` while tasks waited: fail them
   * (those held here and those in the queue) with the scheduler's reason, rather than let them
   * wait forever.
   */
  private async failWaitingTasks(): Promise<void> {
    if (this.failingWaiting || !this.consumer || this.stopping) return;
    this.failingWaiting = true;
    const bound = this.cfg.provider.failTasksWithoutBlocksAfterSeconds;
    const why = `no block could start on this endpoint for ${bound} s: ${this.lastError || "its blocks keep failing"}`;
    const fail = (t: InFlightTask) =>
      this.finish(
        t,
        this.failedUpdate(
          t.taskId,
          new FabricError("UNAVAILABLE", why, { reason: "no_capacity" }),
          this.actor(),
          t.attempt,
        ),
      );
    this.log.warn({ why }, "failing the tasks waiting for blocks");
    try {
      for (const t of this.ready.splice(0)) fail(t);
      const iter = await this.consumer.fetch({ max_messages: 1000, expires: 1000 });
      for await (const msg of iter) {
        if (!this.fromBroker(msg.subject, msg.data, msg.headers?.get(MAC_HEADER), this.droppedTasks)) {
          msg.ack(); // not a task (see onTaskMessage)
          continue;
        }
        let taskId = "";
        try {
          taskId = TaskMessage.decode(msg.data).taskId;
        } catch {
          // Named by its header below, or terminated.
        }
        taskId ||= msg.headers?.get("Nats-Msg-Id") ?? "";
        if (!taskId) {
          msg.term("undecodable task message");
          continue;
        }
        const held = this.inflight.get(taskId);
        if (held) {
          held.msg = msg;
          continue;
        }
        fail(this.track(taskId, msg));
      }
      this.numPending = 0;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "cannot fetch the waiting tasks to fail them");
    } finally {
      this.failingWaiting = false;
    }
  }

  private async launchBlock(): Promise<void> {
    const blockId = `b-${newId().slice(0, 8)}`;
    const secret = randomBytes(24).toString("base64url");
    const logFile = path.join(this.opts.paths.blockLogDir, `${blockId}.log`);
    const b: BlockRecord = {
      blockId,
      secret,
      jobId: "",
      state: "submitting",
      sinceMs: Date.now(),
      reason: "",
      cancelRequested: false,
      logFile,
      startedAtMs: undefined,
      managers: 0,
      everConnected: false,
      idleSinceMs: Date.now(),
      draining: false,
    };
    this.blocks.set(blockId, b);
    this.managerServer!.expectBlock(blockId, secret);
    const workers = this.cfg.provider.workersPerNode;
    try {
      b.jobId = await this.provider.submitBlock({
        blockId,
        command: [
          process.execPath,
          this.opts.managerMain ?? MANAGER_MAIN,
          "--agent",
          this.managerAddress,
          "--block",
          blockId,
          "--workers",
          String(workers),
        ],
        env: {
          FABRIC_BLOCK_SECRET: secret,
          FABRIC_SHELL_WALLTIME_S: String(this.cfg.shell.defaultWalltimeSeconds),
          FABRIC_MAX_RESULT_BYTES: String(this.cfg.limits.maxResultBytes),
          // Where the manager runs functions (bare processes unless a container runtime is set).
          ...(this.cfg.container.runtime !== "none"
            ? { FABRIC_CONTAINER: JSON.stringify(this.cfg.container) }
            : {}),
        },
        logFile,
      });
      if (b.cancelRequested) {
        // Cancelled (the agent is stopping) while sbatch/qsub was answering.
        b.cancelRequested = false;
        this.cancelBlock(b, b.reason || "cancelled while being submitted", false);
        return;
      }
      if (b.state === "submitting") b.state = "pending";
      b.sinceMs = Date.now();
      this.log.info({ blockId, jobId: b.jobId, workers }, "block launched");
    } catch (err) {
      const why = `cannot launch block ${blockId}: ${(err as Error).message}`;
      this.lastError = why;
      this.log.error({ blockId, err: (err as Error).message }, why);
      this.endBlock(b, why, true);
    }
  }

  // ---------------------------------------------------------------- status

  private async publishStatus(state: "online" | "offline"): Promise<void> {
    if (!this.js || !this.bus || !this.nc || this.nc.isClosed()) return;
    if (state === "online" && this.consumer) {
      try {
        this.numPending = (await this.consumer.info(false)).num_pending;
      } catch {
        // Keep the last known figure: status must not fail because consumer info is refused.
      }
      // A heartbeat that was waiting on consumer info while the agent stopped must not land
      // after the "offline" status and make a stopped endpoint look online.
      if (this.stopping) return;
    }
    const managers = this.managerServer?.managers() ?? [];
    let running = 0;
    for (const t of this.inflight.values()) if (t.phase === "running") running++;
    const blocks: BlockStatus[] = [...this.blocks.values(), ...this.endedBlocks].map((b) => ({
      blockId: b.blockId,
      jobId: b.jobId,
      state: b.state,
      sinceMs: b.sinceMs,
      reason: b.reason,
    }));
    const status: EndpointStatus = {
      endpointId: this.creds!.endpointId,
      atMs: Date.now(),
      state,
      hostname: this.host,
      agentVersion: AGENT_VERSION,
      outstandingTasks: this.inflight.size + this.numPending,
      runningTasks: running,
      managers: managers.length,
      workers: managers.reduce((n, m) => n + m.workers, 0),
      idleWorkers: managers.reduce((n, m) => n + m.idle, 0),
      blocks,
      provider: this.provider.name,
      lastError: this.lastError || this.publisher?.lastError || "",
      heartbeatIntervalS: this.cfg.heartbeatIntervalSeconds,
      startedAtMs: this.startedAtMs,
    };
    try {
      // A publish on the bucket's subject, not a KV put: a put carries no headers, and the broker
      // believes only a status that carries this endpoint's MAC.
      const bytes = EndpointStatus.encode(status).finish();
      await this.js.publish(this.bus.statusSubject, bytes, {
        headers: this.signed(this.bus.statusSubject, bytes),
      });
    } catch (err) {
      this.log.warn({ err: (err as Error).message, state }, "cannot publish endpoint status");
    }
  }
}
