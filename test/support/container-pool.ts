import type Docker from "dockerode";

import { createLogger } from "../../common/index.js";
import {
  WorkerPool,
  MANAGER_LABEL,
  createWorkerLauncher,
  type ContainerConfig,
} from "../../endpoint/internal.js";
import type { FunctionSpec, WorkItem, WorkOutcome } from "../../proto/index.js";
export { until } from "../../devkit/index.js";

const enc = new TextEncoder();
let seq = 0;

/** A JS work item. */
export function jsItem(
  source: string,
  entryPoint: string,
  args: unknown[] = [],
  extra: Partial<Pick<FunctionSpec, "containerImage" | "network">> = {},
): WorkItem {
  const taskId = `t${++seq}`;
  return {
    taskId,
    functionId: `f-${entryPoint}-${taskId}`,
    function: { kind: { $case: "js", value: { source, entryPoint } }, containerImage: "", ...extra },
    argsJson: Buffer.from(enc.encode(JSON.stringify(args))),
    kwargsJson: Buffer.alloc(0),
    attempt: 1,
  };
}

/** A shell work item. */
export function shellItem(command: string, walltimeS = 0, kwargs: unknown = {}): WorkItem {
  const taskId = `t${++seq}`;
  return {
    taskId,
    functionId: `f-sh-${taskId}`,
    function: { kind: { $case: "shell", value: { command, walltimeS } }, containerImage: "" },
    argsJson: Buffer.alloc(0),
    kwargsJson: Buffer.from(JSON.stringify(kwargs)),
    attempt: 1,
  };
}

/** The JSON result of a successful outcome (throws with the error otherwise). */
export function resultOf(o: WorkOutcome): unknown {
  if (!o.ok) throw new Error(`task failed: ${JSON.stringify(o.error)}`);
  return JSON.parse(Buffer.from(o.resultJson).toString("utf8"));
}

/**
 * A manager's worker pool driven directly, as the manager does: bare processes (no config) or
 * containers of the configured runtime, each labelled with `labels` for cleanup.
 */
export class PoolHarness {
  readonly pool: WorkerPool;
  readonly started = new Map<string, string>();
  private readonly waiters = new Map<string, (o: WorkOutcome) => void>();
  readonly outcomes = new Map<string, WorkOutcome>();
  readonly managerId: string;

  constructor(size: number, config?: ContainerConfig, labels?: Record<string, string>, workerMain?: string) {
    // The pool's own warnings (a worker died, an image is missing) are what these tests provoke.
    const log = createLogger("fabric-test", {
      level: process.env["FABRIC_TEST_LOG_LEVEL"] ?? "silent",
    }).child({
      component: "test.pool",
    });
    this.managerId = `test-${process.pid}-${++seq}`;
    const launcher = config
      ? createWorkerLauncher(config, { managerId: this.managerId, log, ...(labels ? { labels } : {}) })
      : undefined;
    this.pool = new WorkerPool(
      {
        size,
        managerId: this.managerId,
        log,
        maintenanceIntervalMs: 200,
        env: { FABRIC_LOG_LEVEL: "warn" },
        ...(workerMain ? { workerMain } : {}),
        ...(launcher && config ? { launcher, container: config } : {}),
      },
      {
        onStarted: (taskId, workerId) => this.started.set(taskId, workerId),
        onOutcome: (o) => {
          this.outcomes.set(o.taskId, o);
          this.waiters.get(o.taskId)?.(o);
        },
      },
    );
    this.pool.start();
  }

  /** Runs items and resolves with their outcomes (in order), failing after `timeoutMs`. */
  async run(items: WorkItem[], timeoutMs = 60_000): Promise<WorkOutcome[]> {
    const done = items.map(
      (item) =>
        new Promise<WorkOutcome>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`task ${item.taskId} had no outcome after ${timeoutMs} ms`)),
            timeoutMs,
          );
          this.waiters.set(item.taskId, (o) => {
            clearTimeout(timer);
            resolve(o);
          });
        }),
    );
    this.pool.submit(items);
    return Promise.all(done);
  }

  async one(item: WorkItem, timeoutMs?: number): Promise<WorkOutcome> {
    return (await this.run([item], timeoutMs))[0]!;
  }

  /** The containers of this pool that the engine lists. */
  async containers(docker: Docker): Promise<Docker.ContainerInfo[]> {
    return docker.listContainers({ all: true, filters: { label: [`${MANAGER_LABEL}=${this.managerId}`] } });
  }

  async stop(): Promise<void> {
    await this.pool.stop(2000);
  }
}
