import { spawn } from "node:child_process";
import type { Socket } from "node:net";

import type { WorkerExit, LaunchedWorker, WorkerLaunchRequest, WorkerLauncher } from "./launcher.js";
import { killTree } from "./process-tree.js";

/** Environment variables of the manager that a worker must never inherit. */
const SECRET_ENV = ["FABRIC_BLOCK_SECRET", "FABRIC_TOKEN"] as const;

/** The manager's environment minus its secrets, plus `extra`. */
export function workerProcessEnv(
  base: NodeJS.ProcessEnv,
  extra: Readonly<Record<string, string>>,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, ...extra };
  for (const k of SECRET_ENV) delete env[k];
  return env;
}

/** How a worker process's argv is made from a launch request. */
export type WorkerCommand = (req: WorkerLaunchRequest) => readonly string[];

/**
 * Workers as child processes of the manager, linked over fd 3: the bare-process runtime
 * (`none`, `node worker/main.js`) and Apptainer (`apptainer exec … node worker/main.js`).
 */
export class ProcessLauncher implements WorkerLauncher {
  constructor(
    readonly runtime: "none" | "apptainer",
    private readonly command: WorkerCommand,
    private readonly baseEnv: NodeJS.ProcessEnv = process.env,
  ) {}

  async launch(req: WorkerLaunchRequest): Promise<LaunchedWorker> {
    const [exe, ...args] = this.command(req);
    const child = spawn(exe!, args, {
      stdio: ["ignore", "inherit", "inherit", "pipe"],
      env: workerProcessEnv(this.baseEnv, req.env),
    });
    const link = child.stdio[3] as Socket;
    const exited = new Promise<WorkerExit>((resolve) => {
      child.once("error", (err) => {
        // A spawn failure emits no exit event.
        if (child.pid === undefined)
          resolve({ description: `could not start: ${err.message}`, outOfMemory: false });
      });
      child.once("exit", (code, signal) =>
        resolve({
          description: signal ? `was killed by ${signal}` : `exited with code ${code}`,
          outOfMemory: false,
        }),
      );
    });
    const alive = () => child.exitCode === null && child.signalCode === null && child.pid !== undefined;
    return {
      id: req.id,
      link,
      exited,
      // With what it started: a shell command's own process group, a function's daemons.
      kill: () => {
        if (alive()) killTree(child.pid!);
      },
      stop: async (graceMs) => {
        if (!alive()) return void (await exited);
        child.kill("SIGTERM");
        const timer = setTimeout(() => alive() && killTree(child.pid!), graceMs);
        timer.unref();
        await exited;
        clearTimeout(timer);
      },
    };
  }

  async close(): Promise<void> {}
}
