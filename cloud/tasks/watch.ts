import { FabricError, isTerminal } from "../../common/index.js";
import type { Task, WatchTasksRequest } from "../../proto/index.js";
import type { WatchSink } from "../rpc/rpc.js";
import { check, idSchema } from "../rpc/validate.js";
import { mapLimit } from "../state/records.js";
import { CONCURRENCY, type TaskBook } from "./book.js";
import type { TaskEventHub } from "./event-hub.js";
import type { TaskGroups } from "./groups.js";

/** While a watch waits for events, it re-reads what it still waits for this often, in case one was missed. */
const WATCH_RECHECK_MS = 2_000;
/**
 * A watch re-reads what it still waits for at least every millisecond per task awaited (2 s to
 * 30 s), events or not: an announcement lost with the replica that recorded it (killed before it
 * sent its events) is noticed in the tail of a batch within seconds, while a watch of 100,000
 * tasks reads at most a thousand records a second for it.
 */
function fullRecheckMs(awaited: number): number {
  return Math.min(30_000, Math.max(WATCH_RECHECK_MS, awaited));
}
/** Most tasks in one WatchTasks message. */
const WATCH_BATCH = 256;

/**
 * WatchTasks: sends each of the caller's tasks (named, or a group's) once it has finished, as
 * the event hub announces it, reading the records again now and then in case an announcement
 * was missed (they are best effort).
 */
export class TaskWatcher {
  constructor(
    private readonly book: TaskBook,
    private readonly events: TaskEventHub,
    private readonly groups: TaskGroups,
  ) {}

  async watch(req: WatchTasksRequest, call: WatchSink, owner: string): Promise<void> {
    let ids: string[];
    if (req.groupId) {
      if (req.taskIds.length > 0)
        throw new FabricError("INVALID_ARGUMENT", "watch either task ids or a group, not both");
      check(idSchema("group"), req.groupId, "groupId");
      ids = await this.groups.members(req.groupId, owner);
    } else {
      ids = this.book.checkIds(req.taskIds);
    }
    const remaining = new Set(ids);
    let wake: (() => void) | undefined;
    const ready: Task[] = [];
    const unsubscribe = this.events.subscribe(owner, (task) => {
      if (remaining.has(task.id)) {
        ready.push(task);
        wake?.();
      }
    });
    const onCancel = () => wake?.();
    call.on("cancelled", onCancel);
    try {
      // No flush needed before the first read: the subscription (if new) and the reads leave on
      // the same connection, in that order, so the server has the subscription before it answers
      // them; a task that finishes after its read is announced to it.
      // Tasks that finished together leave in one message: one write per batch, not per task.
      const send = async (tasks: Task[]): Promise<void> => {
        const fresh = tasks.filter((t) => remaining.delete(t.id));
        for (let i = 0; i < fresh.length; i += WATCH_BATCH) {
          const batch = await mapLimit(fresh.slice(i, i + WATCH_BATCH), 16, (t) =>
            this.book.withInlineResult(t),
          );
          const msg = batch.length === 1 ? { task: batch[0], tasks: [] } : { task: undefined, tasks: batch };
          if (!call.write(msg)) await new Promise<void>((r) => call.once("drain", r));
        }
      };
      const recheck = async (trustCache: boolean): Promise<void> => {
        let pending = [...remaining];
        if (trustCache) {
          // A task this broker wrote (unfinished) after the owner's events were followed cannot
          // have finished unseen: its end would have been announced to this subscription (and
          // would have dropped the cached record). No read for it, only for the others.
          const since = this.events.followedSince(owner);
          if (since !== undefined) {
            const records = this.book.records;
            pending = pending.filter((id) => {
              const c = records.get(id);
              return !(c && c.sentAt > since && c.value.owner === owner && !isTerminal(c.value.state));
            });
          }
        }
        const tasks = await mapLimit(pending, CONCURRENCY, (id) => this.book.read(id, owner));
        await send(tasks.filter((t) => isTerminal(t.state)));
      };
      await recheck(true);
      call.ready?.();
      let lastRecheck = performance.now();
      while (remaining.size > 0 && !call.cancelled) {
        while (ready.length > 0) await send(ready.splice(0, ready.length));
        if (remaining.size === 0) break;
        const woke = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), WATCH_RECHECK_MS);
          wake = () => {
            clearTimeout(timer);
            resolve(true);
          };
        });
        wake = undefined;
        // Events are best effort: read what is still awaited when none came for a while, and
        // now and then even while others keep coming.
        const due = !woke || performance.now() - lastRecheck > fullRecheckMs(remaining.size);
        if (due && ready.length === 0 && !call.cancelled) {
          await recheck(false);
          lastRecheck = performance.now();
        }
      }
    } finally {
      unsubscribe();
      call.off("cancelled", onCancel);
    }
  }
}
