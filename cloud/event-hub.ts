import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";

import { Bus } from "../common/bus-layout.js";
import { Task } from "../proto/index.js";

type Listener = (task: Task) => void;

/**
 * Terminal-state announcements, fanned out to the WatchTasks calls of this broker. One NATS
 * subscription per owner with watchers, whichever broker replica recorded the result.
 */
export class TaskEventHub {
  private readonly owners = new Map<string, { sub: Subscription; listeners: Set<Listener> }>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
  ) {}

  /**
   * Announces a task's terminal state to every broker's watchers. This broker's own watchers hear
   * it at once, without the round trip through NATS (the broker's connection is `noEcho`: the
   * server does not send it back).
   */
  publish(task: Task): void {
    this.nc.publish(Bus.taskEventSubject(task.owner), Task.encode(task).finish());
    const local = this.owners.get(task.owner);
    if (local) for (const l of local.listeners) l(task);
  }

  /** Calls `listener` for each terminal task of `owner` until the returned function is called. */
  subscribe(owner: string, listener: Listener): () => void {
    let entry = this.owners.get(owner);
    if (!entry) {
      const listeners = new Set<Listener>();
      const sub = this.nc.subscribe(Bus.taskEventSubject(owner), {
        callback: (err, msg) => {
          if (err) {
            this.log.warn({ err }, "task event subscription failed");
            return;
          }
          let task: Task;
          try {
            task = Task.decode(msg.data);
          } catch (e) {
            this.log.warn({ err: e }, "undecodable task event dropped");
            return;
          }
          for (const l of listeners) l(task);
        },
      });
      entry = { sub, listeners };
      this.owners.set(owner, entry);
    }
    entry.listeners.add(listener);
    const e = entry;
    return () => {
      e.listeners.delete(listener);
      if (e.listeners.size === 0 && this.owners.get(owner) === e) {
        this.owners.delete(owner);
        e.sub.unsubscribe();
      }
    };
  }

  /** Resolves once the server has seen every subscription made so far. */
  async flush(): Promise<void> {
    await this.nc.flush();
  }
}
