/**
 * Python workers: one long-lived interpreter per slot running endpoint/worker/python/
 * fabric_runtime.py, which takes task after task over its link (frames of
 * endpoint/worker/python-protocol.ts). Each function's module is compiled and run once per
 * interpreter, so its imports are paid once. Where the interpreter runs is a
 * {@link WorkerLauncher}'s business: a bare process on the node ({@link PythonProcessLauncher},
 * linked over fd 3) or a hardened container of the Python worker image (Docker, Podman,
 * Apptainer; the runtime connects to the socket the launcher names). A bare interpreter leads its
 * own process group: a timeout or a cancellation kills it and whatever it spawned (in a
 * container, the container goes). A crash (a segfault in a C extension, `os._exit`, the OOM
 * killer) fails the running task as `worker_lost` (or `out_of_memory`), naming how the
 * interpreter ended and its last words, and the pool starts another.
 */
import { spawn } from "node:child_process";
import type { Socket } from "node:net";

import { FabricError, readFrames, toFabricError } from "../../common/lean.js";
import type { Logger } from "../../common/logger.js";
import type { TaskOutput, WorkItem, WorkOutcome } from "../../proto/index.js";
import type { ContainerRuntimeName } from "../runtime/config.js";
import type { LaunchedWorker, WorkerExit, WorkerLaunchRequest, WorkerLauncher } from "../runtime/launcher.js";
import { workerProcessEnv } from "../runtime/process-launcher.js";
import { killTree } from "../runtime/process-tree.js";
import {
  decodePythonFrame,
  encodePythonRunFrame,
  pythonFailureToError,
  pythonRuntimePath,
  type PythonRuntimeMessage,
  type PythonTaskResult,
} from "../worker/python-protocol.js";
import { failedOutcome, lastOutputNote, workerLostError } from "./outcomes.js";
import { launchInto, TaskSlot } from "./task-slot.js";
import type { Placement, SlotEvents, SlotKind, WorkerSlot } from "./worker-slot.js";

/** How long a new interpreter may take to say hello (a cold `import` on a shared file system is slow). */
const HELLO_TIMEOUT_MS = 60_000;
/** How much of an interpreter's own stderr is kept, for the message of a task it took down. */
const STDERR_TAIL_BYTES = 4096;

/** What stays of a stream: its last `cap` bytes. */
class Tail {
  private text = "";
  constructor(private readonly cap: number) {}
  add(chunk: Buffer): void {
    this.text = (this.text + chunk.toString("utf8")).slice(-this.cap);
  }
  toString(): string {
    return this.text.trim();
  }
}

/** How an interpreter process ended, for people. */
function describeEnd(code: number | null, signal: NodeJS.Signals | null, killedByUs: boolean): string {
  if (signal === "SIGSEGV" || signal === "SIGBUS" || signal === "SIGILL" || signal === "SIGFPE")
    return `crashed (${signal}: typically a fault in a C extension)`;
  if (signal === "SIGABRT") return "aborted (SIGABRT: a C library gave up)";
  if (signal === "SIGKILL" && !killedByUs)
    return "was killed by SIGKILL (the kernel's out-of-memory killer, or another process)";
  if (signal) return `was killed by ${signal}`;
  return `exited with code ${code}`;
}

/**
 * Python interpreters as bare processes of the node: `EXECUTABLE fabric_runtime.py`, linked over
 * fd 3, each the leader of its own process group (so a kill takes what the function spawned),
 * with the manager's environment minus its secrets. What an interpreter writes itself goes to the
 * manager's stderr, and its tail is kept as the exit's `lastOutput`.
 */
export class PythonProcessLauncher implements WorkerLauncher {
  readonly runtime = "none" as const;

  /**
   * @param executable the interpreter: a name on PATH or a path (the endpoint's `python.executable`)
   * @param runtimePath the runtime program (default: the one shipped beside the worker)
   */
  constructor(
    private readonly executable: string,
    private readonly runtimePath: string = pythonRuntimePath(),
    private readonly baseEnv: NodeJS.ProcessEnv = process.env,
  ) {}

  async launch(req: WorkerLaunchRequest): Promise<LaunchedWorker> {
    const child = spawn(this.executable, [this.runtimePath], {
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      // Its own process group: a stop kills what the function spawned as well.
      detached: true,
      env: workerProcessEnv(this.baseEnv, req.env),
    });
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", (err) => {
        if (child.pid !== undefined) return; // a running child's errors end in its exit event
        reject(
          new FabricError(
            "FAILED_PRECONDITION",
            `cannot start the Python interpreter ${JSON.stringify(this.executable)}: ${err.message}; set python.executable in the endpoint's config to an interpreter of the node`,
          ),
        );
      });
    });
    const pid = child.pid!;
    const link = child.stdio[3] as Socket;
    const tail = new Tail(STDERR_TAIL_BYTES);
    child.stdout?.on("data", (chunk: Buffer) => process.stderr.write(chunk));
    child.stderr?.on("data", (chunk: Buffer) => {
      tail.add(chunk);
      process.stderr.write(chunk);
    });
    let killedByUs = false;
    // The group, and whatever left it (a subprocess started with its own session).
    const killGroup = () => killTree(pid);
    const alive = () => child.exitCode === null && child.signalCode === null;
    const exited = new Promise<WorkerExit>((resolve) => {
      child.once("exit", (code, signal) => {
        // Whatever the function left running in the group goes with it.
        killGroup();
        // Let the last stderr arrive before the exit is described.
        setImmediate(() => {
          const lastOutput = tail.toString();
          resolve({
            description: describeEnd(code, signal, killedByUs),
            outOfMemory: false,
            ...(lastOutput ? { lastOutput } : {}),
          });
        });
      });
    });
    const kill = () => {
      if (!alive()) return;
      killedByUs = true;
      killGroup();
    };
    return {
      id: req.id,
      link,
      exited,
      kill,
      stop: async (graceMs) => {
        if (!alive()) return void (await exited);
        // The runtime leaves when its link closes; a function that does not return is killed.
        link.end();
        const timer = setTimeout(kill, graceMs);
        timer.unref();
        await exited;
        clearTimeout(timer);
      },
    };
  }

  async close(): Promise<void> {}
}

/** Options of a {@link PythonSlotKind}. */
export interface PythonSlotKindOptions {
  /** Starts the interpreters: {@link PythonProcessLauncher}, or a container launcher. */
  readonly launcher: WorkerLauncher;
  /** Extra environment for the interpreters (result limit, log level). */
  readonly env?: Readonly<Record<string, string>> | undefined;
  readonly log: Logger;
  /** Whether closing the kind closes the launcher (false when the JavaScript workers share it). @default true */
  readonly ownsLauncher?: boolean;
}

/** Python interpreters started by a launcher, as bare processes or in containers. */
export class PythonSlotKind implements SlotKind {
  readonly runtime: ContainerRuntimeName;
  /** What its workers are, for people. */
  readonly noun: string;

  constructor(private readonly opts: PythonSlotKindOptions) {
    this.runtime = opts.launcher.runtime;
    this.noun = this.runtime === "none" ? "Python interpreter" : "Python worker container";
  }

  open(id: string, placement: Placement, events: SlotEvents): WorkerSlot {
    return launchInto(
      new PythonSlot(id, placement, this.noun, this.opts.log, events),
      this.opts.launcher,
      placement,
      this.opts.env,
      "python",
    );
  }

  async close(): Promise<void> {
    if (this.opts.ownsLauncher !== false) await this.opts.launcher.close();
  }
}

function outputOf(r: PythonTaskResult): TaskOutput | undefined {
  return r.stdout || r.stderr ? { stdout: r.stdout, stderr: r.stderr } : undefined;
}

class PythonSlot extends TaskSlot {
  private worker: LaunchedWorker | undefined;
  private helloTimer: NodeJS.Timeout | undefined;
  private launchSettled = false;

  protected get linked(): boolean {
    return this.worker !== undefined;
  }

  attach(worker: LaunchedWorker): void {
    this.worker = worker;
    if (this.stopping) {
      this.launchSettled = true;
      void worker.stop(500).finally(() => this.events.onExit(this, undefined, []));
      return;
    }
    readFrames(
      worker.link,
      (frame) => {
        let msg: PythonRuntimeMessage;
        try {
          msg = decodePythonFrame(frame);
        } catch (err) {
          this.log.error({ err, workerId: this.id }, "bad frame from the Python runtime; killing it");
          worker.kill();
          return;
        }
        this.onMessage(msg);
      },
      (err) => {
        this.log.error({ err, workerId: this.id }, "protocol error from the Python runtime; killing it");
        worker.kill();
      },
    );
    worker.link.on("error", () => {
      // The exit handler accounts for the interpreter; a broken link adds nothing.
    });
    this.helloTimer = setTimeout(() => {
      this.failLaunch(
        new FabricError(
          "UNAVAILABLE",
          `the ${this.noun} ${this.id} did not start the Python runtime within ${HELLO_TIMEOUT_MS / 1000} s`,
        ),
      );
    }, HELLO_TIMEOUT_MS);
    this.helloTimer.unref();
    void worker.exited.then(
      (exit) => this.onExit(exit),
      (err: unknown) => this.onExit({ description: `was lost: ${String(err)}`, outOfMemory: false }),
    );
  }

  launchFailed(err: unknown): void {
    this.failLaunch(toFabricError(err));
  }

  retire(): void {
    this.state = "retiring";
    this.log.debug({ workerId: this.id }, `removing an idle ${this.noun}`);
    void this.worker?.stop(2000);
  }

  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    // A worker still starting is stopped once its launch settles (see attach).
    if (this.worker) await this.worker.stop(graceMs).catch(() => undefined);
  }

  /** Kills the interpreter (its process group, or its container). */
  protected kill(): void {
    this.worker?.kill();
  }

  private failLaunch(err: FabricError): void {
    if (this.launchSettled) return;
    this.launchSettled = true;
    clearTimeout(this.helloTimer);
    this.worker?.kill();
    this.events.onLaunchFailed(this, err);
  }

  protected send(item: WorkItem): void {
    const kind = item.function?.kind;
    const py = kind?.$case === "python" ? kind.value : undefined;
    this.worker!.link.write(
      encodePythonRunFrame({
        taskId: item.taskId,
        functionId: item.functionId,
        source: py?.source ?? "",
        entryPoint: py?.entryPoint ?? "",
        argsJson: item.argsJson,
        kwargsJson: item.kwargsJson,
        ...(py?.minVersion ? { minVersion: py.minVersion } : {}),
      }),
    );
  }

  private onMessage(msg: PythonRuntimeMessage): void {
    if (msg.op === "hello") {
      if (this.launchSettled) return;
      this.launchSettled = true;
      clearTimeout(this.helloTimer);
      if (this.stopping) {
        void this.stop(500);
        return;
      }
      this.state = "ready";
      this.idleSinceMs = Date.now();
      this.log.debug({ workerId: this.id, python: msg.python, pid: msg.pid }, "Python worker ready");
      this.events.onReady(this);
      return;
    }
    if (msg.op !== "result") return;
    const done = this.finished(msg.taskId);
    if (!done) return;
    const times = { startedAtMs: done.startedAtMs, finishedAtMs: Date.now(), workerId: this.id };
    const outcome: WorkOutcome = msg.ok
      ? {
          taskId: msg.taskId,
          ok: true,
          resultJson: msg.resultJson ?? new Uint8Array(),
          error: undefined,
          ...times,
          output: outputOf(msg),
        }
      : { ...failedOutcome(msg.taskId, pythonFailureToError(msg), times), output: outputOf(msg) };
    this.events.onOutcome(this, outcome);
  }

  private onExit(exit: WorkerExit): void {
    clearTimeout(this.helloTimer);
    if (!this.launchSettled) {
      this.launchSettled = true;
      this.events.onLaunchFailed(
        this,
        new FabricError(
          "UNAVAILABLE",
          `the ${this.noun} ${this.id} ${exit.description} before the Python runtime started${lastOutputNote(exit)}`,
        ),
      );
      return;
    }
    this.ended(exit.description, () => workerLostError(this.noun, this.id, exit));
  }
}
