import { timingSafeEqual } from "node:crypto";
import net from "node:net";

import { readMessages, writeFrame, type Logger } from "../../common/index.js";
import { AgentMessage, ManagerMessage } from "../../proto/index.js";
import type { ManagerHello, TaskStarted, WorkItem, WorkOutcome } from "../../proto/index.js";

/** One connected worker manager, as the agent sees it. */
export class ManagerConnection {
  /** Tasks sent to this manager and not yet reported back. */
  readonly assigned = new Set<string>();
  lastSeenMs = Date.now();
  /** What the manager last said about itself. */
  reportedIdle: number;
  closed = false;

  constructor(
    readonly hello: ManagerHello,
    private readonly sock: net.Socket,
    private readonly queueDepth: () => number = () => 1,
  ) {
    this.reportedIdle = hello.workers;
  }

  get managerId(): string {
    return this.hello.managerId;
  }
  get blockId(): string {
    return this.hello.blockId;
  }
  get workers(): number {
    return this.hello.workers;
  }
  /**
   * Room for more tasks, by the agent's own count (it knows what it sent and what came back): each
   * worker may hold `queueDepth` tasks, one running and the rest queued at the manager.
   */
  get idle(): number {
    return Math.max(0, this.hello.workers * this.queueDepth() - this.assigned.size);
  }

  /** Sends tasks; the caller has recorded them in {@link assigned}. */
  sendWork(items: readonly WorkItem[]): void {
    this.send({ msg: { $case: "work", value: { items: [...items] } } });
  }

  /** Asks the manager to stop these tasks (their owners cancelled them). */
  cancelTasks(taskIds: readonly string[]): void {
    this.send({ msg: { $case: "cancel", value: { taskIds: [...taskIds] } } });
  }

  /** Asks the manager to stop its workers and exit. */
  shutdown(reason: string): void {
    this.send({ msg: { $case: "shutdown", value: { reason } } });
    this.sock.end();
  }

  /** Drops the connection (the manager will exit when it notices). */
  destroy(): void {
    this.sock.destroy();
  }

  /** @internal */
  send(msg: AgentMessage): void {
    if (!this.sock.destroyed) writeFrame(this.sock, AgentMessage.encode(msg).finish());
  }
}

/** What the link tells the agent. */
export interface ManagerLinkEvents {
  onManagerReady(m: ManagerConnection): void;
  onStarted(m: ManagerConnection, started: TaskStarted): void;
  onOutcomes(m: ManagerConnection, outcomes: readonly WorkOutcome[]): void;
  /** The connection dropped or went silent; tasks in `m.assigned` are lost. */
  onManagerLost(m: ManagerConnection, why: string): void;
}

/** Options of a {@link ManagerServer}. */
export interface ManagerServerOptions {
  readonly host: string;
  readonly port: number;
  readonly endpointId: string;
  readonly heartbeatIntervalS: number;
  readonly log: Logger;
  /** How long a new connection has to say hello. @default 10000 */
  readonly helloTimeoutMs?: number;
  /** Tasks each worker may hold at once, asked whenever it matters (see queue-sizing.ts). @default 1 */
  readonly workerQueueDepth?: () => number;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The agent's side of the agent ↔ manager link: a TCP listener managers connect back to. A
 * connection counts only once its hello carries the secret of a block the agent launched.
 */
export class ManagerServer {
  private readonly server: net.Server;
  private readonly secrets = new Map<string, string>();
  private readonly conns = new Set<ManagerConnection>();
  private readonly pending = new Set<net.Socket>();
  private silenceTimer: NodeJS.Timeout | undefined;
  private readonly log: Logger;

  constructor(
    private readonly opts: ManagerServerOptions,
    private readonly events: ManagerLinkEvents,
  ) {
    // The agent's logger already carries endpointId.
    this.log = opts.log.child({ component: "endpoint.manager-link" });
    this.server = net.createServer((sock) => this.accept(sock));
  }

  /** Starts listening; resolves with the address managers should connect to. */
  async listen(): Promise<{ host: string; port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.removeListener("error", reject);
        resolve();
      });
    });
    this.server.on("error", (err) => this.log.error({ err }, "manager listener error"));
    const addr = this.server.address() as net.AddressInfo;
    // A manager that stays silent for several heartbeats is as good as gone (a dead node does
    // not close its TCP connections).
    const limitMs = this.opts.heartbeatIntervalS * 4000;
    this.silenceTimer = setInterval(
      () => {
        const now = Date.now();
        for (const c of this.conns) {
          if (now - c.lastSeenMs > limitMs) {
            this.log.warn(
              { managerId: c.managerId, blockId: c.blockId },
              "manager silent too long; dropping it",
            );
            this.drop(c, `manager ${c.managerId} (block ${c.blockId}) stopped sending heartbeats`);
          }
        }
      },
      Math.min(limitMs, 5000),
    );
    this.silenceTimer.unref();
    return { host: this.opts.host, port: addr.port };
  }

  /** Lets managers of `blockId` in, when they present `secret`. */
  expectBlock(blockId: string, secret: string): void {
    this.secrets.set(blockId, secret);
  }

  /** Stops accepting managers of a block (it ended). */
  forgetBlock(blockId: string): void {
    this.secrets.delete(blockId);
  }

  /** Connected managers. */
  managers(): ManagerConnection[] {
    return [...this.conns];
  }

  /** Workers of the connected managers. */
  workers(): number {
    let n = 0;
    for (const c of this.conns) n += c.workers;
    return n;
  }

  /** Stops listening and drops every connection. */
  async close(): Promise<void> {
    clearInterval(this.silenceTimer);
    for (const s of this.pending) s.destroy();
    for (const c of this.conns) {
      c.closed = true;
      c.destroy();
    }
    this.conns.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(sock: net.Socket): void {
    sock.setNoDelay(true);
    sock.setKeepAlive(true, 10_000);
    const peer = `${sock.remoteAddress}:${sock.remotePort}`;
    this.pending.add(sock);
    let conn: ManagerConnection | undefined;
    const helloTimer = setTimeout(() => {
      this.log.warn({ peer }, "connection sent no hello in time; closing it");
      sock.destroy();
    }, this.opts.helloTimeoutMs ?? 10_000);

    readMessages(sock, ManagerMessage, {
      onMessage: (msg) => {
        const m = msg.msg;
        if (!conn) {
          if (m?.$case !== "hello") {
            this.log.warn({ peer }, "first frame was not a hello; closing the connection");
            sock.destroy();
            return;
          }
          const expected = this.secrets.get(m.value.blockId);
          if (expected === undefined || !sameSecret(expected, m.value.secret)) {
            this.log.warn(
              { peer, blockId: m.value.blockId },
              "manager hello with a wrong secret or unknown block; closing it",
            );
            sock.destroy();
            return;
          }
          if (!m.value.managerId || m.value.workers <= 0) {
            this.log.warn({ peer }, "manager hello without an id or workers; closing it");
            sock.destroy();
            return;
          }
          clearTimeout(helloTimer);
          this.pending.delete(sock);
          conn = new ManagerConnection(m.value, sock, this.opts.workerQueueDepth);
          this.conns.add(conn);
          conn.send({
            msg: {
              $case: "welcome",
              value: { endpointId: this.opts.endpointId, heartbeatIntervalS: this.opts.heartbeatIntervalS },
            },
          });
          this.log.info(
            {
              managerId: conn.managerId,
              blockId: conn.blockId,
              workers: conn.workers,
              host: m.value.hostname,
            },
            "manager connected",
          );
          this.events.onManagerReady(conn);
          return;
        }
        conn.lastSeenMs = Date.now();
        switch (m?.$case) {
          case "heartbeat":
            conn.reportedIdle = m.value.idleWorkers;
            break;
          case "started":
            this.events.onStarted(conn, m.value);
            break;
          case "outcomes":
            this.events.onOutcomes(conn, m.value.outcomes);
            break;
          default:
            break;
        }
      },
      onBadFrame: (err, problem) => {
        this.log.warn({ peer, err: err.message }, `${problem} from a manager; closing it`);
        sock.destroy();
      },
    });
    sock.on("error", (err) => this.log.debug({ peer, err: err.message }, "manager socket error"));
    sock.on("close", () => {
      clearTimeout(helloTimer);
      this.pending.delete(sock);
      if (conn) this.drop(conn, `lost the connection to manager ${conn.managerId} (block ${conn.blockId})`);
    });
  }

  private drop(c: ManagerConnection, why: string): void {
    if (!this.conns.delete(c)) return;
    c.destroy();
    if (c.closed) return;
    c.closed = true;
    this.events.onManagerLost(c, why);
  }
}
