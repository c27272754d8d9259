import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { FabricError, FABRIC_VERSION, type Logger } from "../../common/index.js";
import type { BusConnectInfo, PythonInfo, TaskCheckReply } from "../../proto/index.js";
import { scalingOf } from "../config.js";
import type { EndpointConfig } from "../config.js";
import type { EndpointPaths } from "../home.js";
import type { ExecutionProvider } from "../provider.js";
import { createProvider } from "../providers/create-provider.js";
import { Blocks, SCALE_TICK_MS } from "./blocks.js";
import { BrokerLink } from "./broker-link.js";
import { BusLink } from "./bus-link.js";
import { ManagerServer } from "./manager-server.js";
import { probePython } from "./python-probe.js";
import type { ManagerConnection } from "./manager-server.js";
import { QueueSizer } from "./queue-sizing.js";
import { StatusReporter } from "./status.js";
import { TaskIntake } from "./task-intake.js";
import { TaskTracker, type Delivery } from "./task-tracker.js";

/** Version the agent reports to the broker. */
export const AGENT_VERSION = FABRIC_VERSION;

/** The manager entry, in the folder beside this one once compiled (dist/endpoint/manager/main.js). */
export const MANAGER_MAIN = fileURLToPath(new URL("../manager/main.js", import.meta.url));

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
  /**
   * The agent stopped itself (a newer agent took its endpoint over); `reason` says why. A process
   * that runs only this agent exits.
   */
  readonly onStoppedItself?: (reason: string) => void;
}

/**
 * Clock skew tolerated between the agent and the NATS server when a delivery's publish time is
 * compared with the start of the agent's connection: a message stored up to this long after the
 * connection began is still checked (see `suspect`).
 */
const CLOCK_SKEW_MS = 2_000;
/** Whether a task check's answer names another task consumer than this agent's: it was fenced off. */
function fencedOff(reply: TaskCheckReply, consumer: string): boolean {
  return reply.currentConsumer !== "" && reply.currentConsumer !== consumer;
}

/** How often the tasks held at least this long are asked about (a lost cancellation). */
const RECHECK_HELD_MS = 30_000;
/** Least time between two checks, after failed fetches, of whether a newer agent took over. */
const FENCE_PROBE_INTERVAL_MS = 5_000;

/** The agent's parts: each owns its state; they talk through the callbacks `wire` gives them. */
interface Parts {
  readonly bus: BusLink;
  readonly managers: ManagerServer;
  readonly tracker: TaskTracker;
  readonly intake: TaskIntake;
  readonly blocks: Blocks<ManagerConnection>;
  readonly status: StatusReporter;
}

/**
 * The endpoint agent: registers with the broker, takes this endpoint's tasks from NATS, runs them
 * on worker managers it launches through a provider, and reports results.
 *
 * The rule that keeps tasks safe (see task-tracker.ts): a task message is acked only after the
 * PubAck of the update carrying its terminal state. Until then its delivery is kept alive with
 * `working()`, and if the agent dies the broker's consumer hands the task out again.
 */
export class EndpointAgent {
  private log: Logger;
  private readonly cfg: EndpointConfig;
  private readonly provider: ExecutionProvider;
  private readonly startedAtMs = Date.now();
  /** The interpreter Python functions run in, once probed. */
  private python: PythonInfo | undefined;
  private readonly host = hostname();
  private readonly broker: BrokerLink;
  /** Queue depths, from task run times unless the config fixes them. */
  private readonly sizer: QueueSizer;
  private parts: Parts | undefined;
  private managerAddress = "";
  /** The endpoint's most recent trouble, as status shows it; every part notes its own. */
  private lastError = "";
  private readonly timers: NodeJS.Timeout[] = [];
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private running = false;
  /**
   * When the agent's current connection to NATS began (Infinity while it has none): a task
   * message stored before it may be one NATS restored after a crash, or one a lost agent held.
   */
  private sessionStartMs = Number.POSITIVE_INFINITY;
  private lastFenceProbeMs = 0;

  constructor(private readonly opts: EndpointAgentOptions) {
    this.cfg = opts.config;
    this.log = opts.log.child({ component: "endpoint.agent", endpoint: opts.paths.name });
    this.provider = opts.provider ?? createProvider(this.cfg.provider, opts.log);
    this.sizer = new QueueSizer(this.cfg);
    this.broker = new BrokerLink({
      paths: opts.paths,
      config: this.cfg,
      agentVersion: AGENT_VERSION,
      hostname: this.host,
      log: this.log,
      stopping: () => this.stopping,
      throwIfStopping: () => this.throwIfStopping(),
      noteError: (message) => (this.lastError = message),
    });
  }

  /** The endpoint's id, once known. */
  get endpointId(): string | undefined {
    return this.broker.credentials?.endpointId;
  }

  private throwIfStopping(): void {
    if (this.stopping) throw new FabricError("CANCELLED", "the agent was stopped while starting");
  }

  /**
   * Registers if needed, connects to the broker and NATS, launches blocks and starts taking
   * tasks. Resolves once the endpoint is ready; rejects with an EndpointRejectedError when
   * the broker refuses it, or with a FabricError when stopped while starting.
   */
  async start(): Promise<void> {
    // Which Python the workers get, found while the agent connects; the status reports it.
    const provider = this.cfg.provider;
    void probePython({
      executable: this.cfg.python.executable,
      workerInit: "workerInit" in provider ? provider.workerInit : "",
    }).then((found) => {
      this.python = found;
      if (found.problem)
        this.log.warn({ problem: found.problem }, "no Python interpreter for Python functions");
      else this.log.info({ python: found.version, executable: found.executable }, "Python interpreter found");
      this.parts?.status.soon();
    });
    const { endpointId } = await this.broker.register();
    this.log = this.log.child({ endpointId });
    this.broker.useLogger(this.log);
    const info = await this.broker.connect();
    const p = (this.parts = this.wire(endpointId, info));
    this.throwIfStopping();
    await p.bus.connect();
    this.sessionStartMs = Date.now();
    await p.intake.open(p.bus.jetstream, info.taskStream, info.taskConsumer);
    if (info.controlSubject) p.intake.listenForControl(p.bus.connection, info.controlSubject);
    const addr = await p.managers.listen();
    this.managerAddress = `${addr.host}:${addr.port}`;
    this.running = true;
    await p.blocks.scale();
    const every = (ms: number, fn: () => void) => this.timers.push(setInterval(fn, ms));
    every(p.blocks.pollIntervalMs(this.opts.blockPollIntervalMs), () => void p.blocks.poll());
    // Scaling decisions are cheap; a quick tick makes a cold start (0 blocks) quick too.
    every(SCALE_TICK_MS, () => void p.blocks.scale());
    every(this.cfg.heartbeatIntervalSeconds * 1000, () => void p.status.publish("online"));
    // A cancellation is a best-effort message: one that was lost still stops its task, as the
    // tasks held for a while are asked about now and then.
    every(RECHECK_HELD_MS, () => {
      if (p.bus.open) void p.tracker.recheckHeld(RECHECK_HELD_MS);
    });
    // Extend every un-acked delivery well before the bus would hand it out again.
    every(Math.max(500, (info.ackWaitS * 1000) / 3), () => {
      if (p.bus.open) p.tracker.extendDeliveries();
    });
    void p.status.publish("online");
    this.log.info(
      { managerListen: this.managerAddress, provider: this.provider.name, blocks: p.blocks.size },
      "endpoint ready",
    );
    p.intake.pump();
  }

  /** Builds the parts and connects their callbacks (no part calls another before all exist). */
  private wire(endpointId: string, info: BusConnectInfo): Parts {
    const { cfg, log, sizer } = this;
    const stopping = () => this.stopping;
    const noteError = (message: string) => (this.lastError = message);
    const bus = new BusLink({
      bus: info,
      endpointId,
      config: cfg,
      log,
      noteError,
      onDisconnect: () => (this.sessionStartMs = Number.POSITIVE_INFINITY),
      onReconnect: () => {
        this.lastError = "";
        this.sessionStartMs = Date.now();
        // A cancellation sent while the link was down never arrived: ask what became of each task.
        void tracker.recheckHeld();
        bus.retryUpdatesNow();
        intake.refetch();
        // A policy change published while the link was down never arrived: ask for it.
        void this.broker.refreshPolicy();
      },
    });
    const managers: ManagerServer = new ManagerServer(
      {
        host: cfg.managerListen.host,
        port: cfg.managerListen.port,
        endpointId,
        heartbeatIntervalS: cfg.heartbeatIntervalSeconds,
        log,
        workerQueueDepth: () => sizer.workerQueueDepth(),
      },
      {
        onManagerReady: (m) => {
          blocks.managerReady(m);
          if (this.stopping) {
            m.shutdown("endpoint stopping");
            return;
          }
          tracker.dispatch();
          intake.pump();
          status.soon();
        },
        onStarted: (m, started) => tracker.onStarted(m, started),
        onOutcomes: (m, outcomes) => {
          for (const o of outcomes) void tracker.onOutcome(m, o);
        },
        onManagerLost: (m, why) => {
          blocks.managerLost(m, why);
          intake.pump();
          status.soon();
        },
      },
    );
    const tracker: TaskTracker = new TaskTracker({
      log,
      actor: `endpoint/${endpointId}`,
      maxResultBytes: cfg.limits.maxResultBytes,
      retriesOnBlockLoss: cfg.provider.retriesOnBlockLoss,
      updates: bus,
      payloads: bus,
      sizer,
      checks: {
        suspect: (msg) => this.suspect(msg),
        ask: async (ids) => {
          const r = await bus.checkTasks(ids);
          if (!r) return undefined;
          return {
            tasks: new Map(r.tasks.map((c) => [c.taskId, c])),
            fenced: fencedOff(r, info.taskConsumer),
          };
        },
      },
      onFenced: () => this.fenced(),
      managers: () => managers.managers(),
      takesWork: (m) => blocks.takesWork(m.blockId),
      onRoom: () => intake.pump(),
      noteError,
      stopping,
    });
    // At least one block's worth of prefetch, so an endpoint whose blocks come and go still pulls.
    const scaling = scalingOf(cfg.provider);
    const intake: TaskIntake = new TaskIntake({
      log,
      sizer,
      blockWorkers: Math.max(1, scaling.initBlocks) * scaling.workersPerBlock,
      fromBroker: (m, on) => bus.fromBroker(m, on),
      workers: () => managers.workers(),
      held: () => tracker.size,
      canPull: () => this.running && bus.open,
      stopping,
      throwIfStopping: () => this.throwIfStopping(),
      allows: (functionId) => this.broker.allows(functionId),
      onTask: (msg, task) => {
        // A task while no worker is up is a cold start: decide on blocks now, not at the next tick.
        if (tracker.receive(msg, task) && managers.workers() === 0) void blocks.scale();
      },
      onRefused: (taskId, msg, err) => tracker.refuse(taskId, msg, err),
      onCancel: (taskIds) => tracker.cancel(taskIds),
      onAllowedFunctions: (ids) => this.broker.setAllowedFunctions(ids),
      onFetchFailed: () => this.probeFence(bus, info.taskConsumer),
      noteError,
    });
    const blocks: Blocks<ManagerConnection> = new Blocks<ManagerConnection>({
      config: cfg,
      provider: this.provider,
      blockLogDir: this.opts.paths.blockLogDir,
      managerMain: this.opts.managerMain ?? MANAGER_MAIN,
      log,
      server: managers,
      managerAddress: () => this.managerAddress,
      outstanding: () => tracker.size + intake.queued,
      readQueueLength: () => intake.readQueueLength(),
      tasksLost: (m, taskIds, detail, reason) => tracker.tasksLost(m, taskIds, detail, reason),
      failWaitingTasks: async (why) => {
        const noCapacity = () => new FabricError("UNAVAILABLE", why, { reason: "no_capacity" });
        tracker.failQueued(noCapacity());
        await intake.takeWaiting((taskId, msg) => tracker.failDelivery(taskId, msg, noCapacity()));
      },
      noteError,
      lastError: () => this.lastError,
      stopping,
    });
    const status = new StatusReporter({
      endpointId,
      hostname: this.host,
      agentVersion: AGENT_VERSION,
      provider: this.provider.name,
      heartbeatIntervalS: cfg.heartbeatIntervalSeconds,
      startedAtMs: this.startedAtMs,
      log,
      canPublish: () => bus.open,
      publish: (bytes) => bus.publishStatus(bytes),
      readQueueLength: () => intake.readQueueLength(),
      stopping,
      counts: () => ({ held: tracker.size, queued: intake.queued, running: tracker.running }),
      managers: () => managers.managers().map((m) => ({ workers: m.workers, assigned: m.assigned.size })),
      blocks: () => blocks.statuses(),
      lastError: () => this.lastError || bus.updatesError,
      python: () => this.python,
    });
    return { bus, managers, tracker, intake, blocks, status };
  }

  /**
   * Whether a delivery may be of a task that ran, or finished, before: redelivered, or stored
   * before the agent's current connection to NATS began (NATS restores, after a crash, messages
   * acked just before it; a lost agent's tasks come to a new agent's consumer as first
   * deliveries). Only these are checked with the brokers before they run: fresh tasks pay nothing.
   */
  private suspect(msg: Delivery): boolean {
    if ((msg.info?.deliveryCount ?? 1) > 1) return true;
    const storedNs = msg.info?.timestampNanos;
    return storedNs !== undefined && storedNs / 1e6 < this.sessionStartMs + CLOCK_SKEW_MS;
  }

  /** Fetches fail: perhaps a newer agent took the endpoint over (its consumer is gone). Asks. */
  private probeFence(bus: BusLink, consumer: string): void {
    if (this.stopping || Date.now() - this.lastFenceProbeMs < FENCE_PROBE_INTERVAL_MS) return;
    this.lastFenceProbeMs = Date.now();
    void bus.checkTasks([]).then((r) => {
      if (r && fencedOff(r, consumer)) this.fenced();
    });
  }

  /** A newer agent connected as this endpoint: this one stops itself, as only one may take tasks. */
  private fenced(): void {
    if (this.stopping) return;
    const reason =
      "another agent connected as this endpoint and took its task queue over; this agent stops (only one agent per endpoint takes tasks: stop the other one first to run this one)";
    this.lastError = reason;
    this.log.error(reason);
    void this.stop().then(() => this.opts.onStoppedItself?.(reason));
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
    const p = this.parts;
    this.log.info({ inFlight: p?.tracker.size ?? 0 }, "endpoint stopping");
    if (p) {
      p.intake.close();
      // Tasks no worker has started go back at once.
      p.tracker.giveBackQueued("not started before the agent stopped");
      const deadline = Date.now() + this.cfg.stopGraceSeconds * 1000;
      while (p.tracker.hasActiveTasks() && Date.now() < deadline) await sleep(50);
      p.tracker.giveBackUnreported("still running when the agent stopped");
      for (const t of this.timers.splice(0)) clearInterval(t);
      p.status.stop();
      await p.bus.flushUpdates(10_000);
      if (this.running) await p.status.publish("offline");
      for (const m of p.managers.managers()) m.shutdown("endpoint stopping");
      await p.blocks.cancelAll();
      await p.managers.close();
      await p.bus.drain();
    }
    this.running = false;
    this.log.info("endpoint stopped");
  }
}
