import type { Logger } from "pino";

import { FabricError, DropLog, MAC_HEADER, type BrokerMessageKeys } from "../../common/index.js";
import { EndpointStatus, type EndpointStatusView, type PythonInfo } from "../../proto/index.js";
import type { FabricStore } from "../state/store.js";

/** What the brokers know of an endpoint's agent: its last signed status and the tasks it has not taken. */
export class EndpointStatuses {
  private readonly droppedStatus: DropLog;

  /**
   * @param offlineAfterSeconds an agent whose last status is older than this is shown offline
   * @param keys each endpoint's message key: a status counts only if its agent signed it
   */
  constructor(
    private readonly store: FabricStore,
    private readonly offlineAfterSeconds: number,
    private readonly keys: BrokerMessageKeys,
    log: Logger,
  ) {
    this.droppedStatus = new DropLog(log, "endpoint status", { from: "the endpoint's agent" });
  }

  async view(endpointId: string): Promise<EndpointStatusView> {
    const [last, queued] = await Promise.all([this.last(endpointId), this.store.queues.queued(endpointId)]);
    if (!last) return { connection: "never-connected", last: undefined, queuedTasks: queued };
    const fresh = Date.now() - last.atMs < this.offlineAfterSeconds * 1000;
    return {
      connection: fresh && last.state === "online" ? "online" : "offline",
      last,
      queuedTasks: queued,
    };
  }

  /** The Python interpreter the endpoint last reported, if it reported one. */
  async python(endpointId: string): Promise<PythonInfo | undefined> {
    return (await this.last(endpointId))?.python;
  }

  /**
   * The endpoint's last status if its agent signed it, else undefined (as if it never reported).
   * Anyone the server publishes for (issue 12: it answers requests onto any reply subject) could
   * write the record; only the agent could sign it.
   */
  private async last(endpointId: string): Promise<EndpointStatus | undefined> {
    const m = await this.store.lastEndpointStatus(endpointId);
    if (!m) return undefined;
    const verdict = this.keys.endpoint(endpointId).check(m.subject, m.data, m.headers.get(MAC_HEADER));
    if (verdict !== "ok") {
      this.droppedStatus.drop(m.subject, verdict);
      return undefined;
    }
    try {
      return EndpointStatus.decode(m.data);
    } catch (err) {
      throw new FabricError(
        "DATA_LOSS",
        `the status of endpoint ${endpointId} cannot be decoded: ${(err as Error).message}`,
      );
    }
  }
}
