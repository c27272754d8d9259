/**
 * Bare worker processes started the moment a manager process starts, before it loads the rest of
 * its code (logger, protocol, pool): each worker's boot (node's own start, then its imports) then
 * overlaps the manager's instead of following it, which shortens every block's cold start. The
 * pool adopts them through {@link EarlyWorkerLauncher.launch} as if it had just started them.
 *
 * Only node built-ins and the process launcher are imported here, so that nothing slows the
 * spawn down.
 */
import { fileURLToPath } from "node:url";

import type { LaunchedWorker, WorkerLaunchRequest, WorkerLauncher } from "../runtime/launcher.js";
import { ProcessLauncher } from "../runtime/process-launcher.js";

/** The worker entry, beside this file once compiled (dist/endpoint/worker/main.js). */
export const WORKER_MAIN = fileURLToPath(new URL("../worker/main.js", import.meta.url));

/** The id a pool gives its `n`-th worker (from 0). */
export function workerIdOf(managerId: string, n: number): string {
  return `${managerId}/w${n}`;
}

/** The environment a pool gives a worker: the pool's extra env and the worker's id. */
export function workerEnvOf(
  env: Readonly<Record<string, string>> | undefined,
  id: string,
): Record<string, string> {
  return { ...env, FABRIC_WORKER_ID: id };
}

function sameRequest(a: WorkerLaunchRequest, b: WorkerLaunchRequest): boolean {
  if (a.id !== b.id || a.image !== b.image || a.network !== b.network) return false;
  const ka = Object.keys(a.env);
  return ka.length === Object.keys(b.env).length && ka.every((k) => a.env[k] === b.env[k]);
}

/**
 * A bare-process launcher that may have started some workers already ({@link prestart}): a
 * launch request identical to a prestarted one gets that worker; any other is started now.
 * Workers never asked for are stopped by {@link close}.
 */
export class EarlyWorkerLauncher implements WorkerLauncher {
  readonly runtime = "none" as const;
  private readonly inner: ProcessLauncher;
  private readonly early = new Map<string, { req: WorkerLaunchRequest; worker: Promise<LaunchedWorker> }>();

  constructor(workerMain: string = WORKER_MAIN) {
    this.inner = new ProcessLauncher("none", () => [process.execPath, workerMain]);
  }

  /** Starts a worker now, for a later {@link launch} of the same request. */
  prestart(req: WorkerLaunchRequest): void {
    this.early.set(req.id, { req, worker: this.inner.launch(req) });
  }

  /** Workers started early and not yet handed out. */
  get waiting(): number {
    return this.early.size;
  }

  launch(req: WorkerLaunchRequest): Promise<LaunchedWorker> {
    const e = this.early.get(req.id);
    if (e) {
      this.early.delete(req.id);
      if (sameRequest(e.req, req)) return e.worker;
      void e.worker.then((w) => w.stop(500)).catch(() => undefined);
    }
    return this.inner.launch(req);
  }

  async close(): Promise<void> {
    const left = [...this.early.values()];
    this.early.clear();
    await Promise.all(left.map((e) => e.worker.then((w) => w.stop(500)).catch(() => undefined)));
  }
}
