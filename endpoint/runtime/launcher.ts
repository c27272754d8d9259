import type { Duplex } from "node:stream";

import type { ContainerRuntimeName } from "./config.js";

/** How a worker ended. */
export interface WorkerExit {
  /** For people: "exited with code 3", "was killed by SIGKILL", "was killed by the memory limit". */
  readonly description: string;
  /** The kernel's OOM killer (the container's memory limit) or V8's heap limit ended it. */
  readonly outOfMemory: boolean;
  /**
   * The last of what the worker itself wrote to its stderr/stdout (a fatal traceback, a C
   * library's complaint), when the launcher kept it: the message of a task it took down names it.
   */
  readonly lastOutput?: string;
}

/** One running worker, wherever it runs: a process on the node or a container. */
export interface LaunchedWorker {
  readonly id: string;
  /** Frames of WorkerRequest / WorkerResponse (4-byte BE length + body). */
  readonly link: Duplex;
  /** Settles once the worker is gone and what it held (container, run directory) is removed. */
  readonly exited: Promise<WorkerExit>;
  /** Ends the worker now (SIGKILL / container kill); `exited` settles afterwards. */
  kill(): void;
  /** Asks the worker to stop, kills it after `graceMs`; resolves when it is gone. */
  stop(graceMs: number): Promise<void>;
}

/** What a worker is for. */
export interface WorkerLaunchRequest {
  readonly id: string;
  /** Container image ("" for the bare-process runtime). */
  readonly image: string;
  /** Whether the worker may use the network (containers only). */
  readonly network: boolean;
  /** The worker's environment (FABRIC_WORKER_ID and limits); never the manager's secrets. */
  readonly env: Readonly<Record<string, string>>;
  /**
   * What the worker runs: the Node.js worker (JavaScript and shell functions) or the Python
   * runtime. Container images carry their own entry point; Apptainer's command line differs.
   * @default "node"
   */
  readonly language?: "node" | "python";
}

/** Starts workers for a {@link WorkerPool}: bare processes, Docker/Podman containers, Apptainer. */
export interface WorkerLauncher {
  readonly runtime: ContainerRuntimeName;
  /**
   * Starts a worker. Resolves once its link is open (the worker then sends `ready`); rejects
   * with a FabricError when it cannot start (missing image, engine down, start timeout).
   */
  launch(req: WorkerLaunchRequest): Promise<LaunchedWorker>;
  /** Releases what the launcher holds (API connections, directories). */
  close(): Promise<void>;
}
