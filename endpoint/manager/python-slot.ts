/**
 * Python workers: one long-lived interpreter per slot running endpoint/worker/python/
 * fabric_runtime.py, which takes task after task over fd 3 (frames of
 * endpoint/worker/python-protocol.ts). Each function's module is compiled and run once per
 * interpreter, so its imports are paid once. The interpreter leads its own process group: a
 * timeout or a cancellation kills it and whatever it spawned. A crash (a segfault in a C
 * extension, `os._exit`, the OOM killer) fails the running task as `worker_lost`, naming how the
 * interpreter ended and its last words on stderr, and the pool starts another.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import type { Socket } from "node:net";

import { FabricError, readFrames } from "../../common/lean.js";
import type { Logger } from "../../common/logger.js";
import type { TaskOutput, WorkItem, WorkOutcome } from "../../proto/index.js";
import type { ContainerRuntimeName } from "../runtime/config.js";
import { workerProcessEnv } from "../runtime/process-launcher.js";
import {
  decodePythonFrame,
  encodePythonRunFrame,
  pythonFailureToError,
  pythonRuntimePath,
  type PythonRuntimeMessage,
  type PythonTaskResult,
} from "../worker/python-protocol.js";
import { workerEnvOf } from "./early-workers.js";
import { failedOutcome } from "./outcomes.js";
import { TaskSlot } from "./task-slot.js";
import type { Placement, SlotEvents, SlotKind, WorkerSlot } from "./worker-slot.js";

/** How long a new interpreter may take to say hello (a cold `import` on a shared file system is slow). */
const HELLO_TIMEOUT_MS = 60_000;
/** How much of an interpreter's own stderr is kept, for the message of a task it took down. */
const STDERR_TAIL_BYTES = 4096;

/** Options of a {@link PythonSlotKind}. */
export interface PythonSlotKindOptions {
  /** The interpreter: a name on PATH or a path (the endpoint's `python.executable`). */
  readonly executable: string;
  /** Extra environment for the interpreters (result limit, log level). */
  readonly env?: Readonly<Record<string, string>> | undefined;
  readonly log: Logger;
  /** The runtime program. @default the one shipped beside the worker */
  readonly runtimePath?: string;
}

/** Python interpreters as bare processes on the node. */
export class PythonSlotKind implements SlotKind {
  readonly runtime = "none" as const;

  constructor(private readonly opts: PythonSlotKindOptions) {}

  open(id: string, placement: Placement, events: SlotEvents): WorkerSlot {
    const slot = new PythonSlot(id, placement, this.opts.log, events);
    try {
      slot.launch(this.opts.executable, this.opts.runtimePath ?? pythonRuntimePath(), {
        ...workerEnvOf(this.opts.env, id),
      });
    } catch (err) {
      // Reported after open() returns, as a launch that failed later would be.
      queueMicrotask(() => slot.launchFailed(err));
    }
    return slot;
  }

  async close(): Promise<void> {}
}

/** A runtime an endpoint does not have: every slot it opens fails to launch, saying why. */
export class UnavailableSlotKind implements SlotKind {
  constructor(
    readonly runtime: ContainerRuntimeName,
    private readonly why: string,
    private readonly log: Logger,
  ) {}

  open(id: string, placement: Placement, events: SlotEvents): WorkerSlot {
    const slot = new PythonSlot(id, placement, this.log, events);
    queueMicrotask(() => slot.launchFailed(new FabricError("FAILED_PRECONDITION", this.why)));
    return slot;
  }

  async close(): Promise<void> {}
}

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

function outputOf(r: PythonTaskResult): TaskOutput | undefined {
  return r.stdout || r.stderr ? { stdout: r.stdout, stderr: r.stderr } : undefined;
}

/** How an interpreter ended, for people. */
function describeEnd(code: number | null, signal: NodeJS.Signals | null, killedByUs: boolean): string {
  if (signal === "SIGSEGV" || signal === "SIGBUS" || signal === "SIGILL" || signal === "SIGFPE")
    return `crashed (${signal}: typically a fault in a C extension)`;
  if (signal === "SIGABRT") return "aborted (SIGABRT: a C library gave up)";
  if (signal === "SIGKILL" && !killedByUs)
    return "was killed by SIGKILL (the kernel's out-of-memory killer, or another process)";
  if (signal) return `was killed by ${signal}`;
  return `exited with code ${code}`;
}

class PythonSlot extends TaskSlot {
  private child: ChildProcess | undefined;
  private link: Socket | undefined;
  private readonly stderrTail = new Tail(STDERR_TAIL_BYTES);
  private helloTimer: NodeJS.Timeout | undefined;
  private killedByUs = false;
  private launchSettled = false;
  private exited: Promise<void> = Promise.resolve();

  constructor(id: string, placement: Placement, log: Logger, events: SlotEvents) {
    super(id, placement, "Python interpreter", log, events);
  }

  protected get linked(): boolean {
    return this.link !== undefined;
  }

  launch(executable: string, runtimePath: string, env: Record<string, string>): void {
    const child = spawn(executable, [runtimePath], {
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      // Its own process group: a stop kills what the function spawned as well.
      detached: true,
      env: workerProcessEnv(process.env, env),
    });
    this.child = child;
    this.link = child.stdio[3] as Socket;
    // What the interpreter itself writes (C code, subprocesses, fatal tracebacks) goes to the
    // manager's log, and its tail is kept for the message of a task it takes down.
    child.stdout?.on("data", (chunk: Buffer) => process.stderr.write(chunk));
    child.stderr?.on("data", (chunk: Buffer) => {
      this.stderrTail.add(chunk);
      process.stderr.write(chunk);
    });
    this.exited = new Promise((resolve) => {
      child.once("error", (err) => {
        if (child.pid !== undefined) return; // a running child's errors end in its exit event
        this.failLaunch(
          new FabricError(
            "FAILED_PRECONDITION",
            `cannot start the Python interpreter ${JSON.stringify(executable)}: ${err.message}; set python.executable in the endpoint's config to an interpreter of the node`,
          ),
        );
        resolve();
      });
      child.once("exit", (code, signal) => {
        // Let the last stderr arrive before the exit is described.
        setImmediate(() => {
          this.onExit(code, signal);
          resolve();
        });
      });
    });
    readFrames(
      this.link,
      (frame) => {
        let msg: PythonRuntimeMessage;
        try {
          msg = decodePythonFrame(frame);
        } catch (err) {
          this.log.error({ err, workerId: this.id }, "bad frame from the Python runtime; killing it");
          this.kill();
          return;
        }
        this.onMessage(msg);
      },
      (err) => {
        this.log.error({ err, workerId: this.id }, "protocol error from the Python runtime; killing it");
        this.kill();
      },
    );
    this.link.on("error", () => {
      // The exit handler accounts for the interpreter; a broken link adds nothing.
    });
    this.helloTimer = setTimeout(() => {
      this.failLaunch(
        new FabricError(
          "UNAVAILABLE",
          `the Python interpreter ${JSON.stringify(executable)} did not start the runtime within ${HELLO_TIMEOUT_MS / 1000} s${this.lastWords()}`,
        ),
      );
    }, HELLO_TIMEOUT_MS);
    this.helloTimer.unref();
  }

  launchFailed(err: unknown): void {
    this.failLaunch(err instanceof FabricError ? err : new FabricError("INTERNAL", String(err)));
  }

  retire(): void {
    this.state = "retiring";
    this.log.debug({ workerId: this.id }, "removing an idle Python interpreter");
    void this.stop(2000);
  }

  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return this.exited;
    // The runtime leaves when its link closes; a function that does not return is killed.
    this.link?.end();
    const timer = setTimeout(() => this.kill(), graceMs);
    timer.unref();
    await this.exited;
    clearTimeout(timer);
  }

  /** Kills the interpreter and its process group. */
  protected kill(): void {
    const child = this.child;
    if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    this.killedByUs = true;
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      child.kill("SIGKILL");
    }
  }

  private lastWords(): string {
    const tail = this.stderrTail.toString();
    return tail ? `; its last output: ${tail.slice(-1500)}` : "";
  }

  private failLaunch(err: FabricError): void {
    if (this.launchSettled) return;
    this.launchSettled = true;
    clearTimeout(this.helloTimer);
    this.kill();
    this.events.onLaunchFailed(this, err);
  }

  protected send(item: WorkItem): void {
    const kind = item.function?.kind;
    const py = kind?.$case === "python" ? kind.value : undefined;
    this.link!.write(
      encodePythonRunFrame({
        taskId: item.taskId,
        functionId: item.functionId,
        source: py?.source ?? "",
        entryPoint: py?.entryPoint ?? "",
        argsJson: item.argsJson,
        kwargsJson: item.kwargsJson,
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

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    clearTimeout(this.helloTimer);
    // Whatever the function left running in the group goes with it.
    if (this.child?.pid !== undefined) {
      try {
        process.kill(-this.child.pid, "SIGKILL");
      } catch {
        // The group is gone already.
      }
    }
    const how = describeEnd(code, signal, this.killedByUs);
    if (!this.launchSettled) {
      this.launchSettled = true;
      this.events.onLaunchFailed(
        this,
        new FabricError(
          "UNAVAILABLE",
          `the Python interpreter ${how} before the runtime started${this.lastWords()}`,
        ),
      );
      return;
    }
    this.ended(
      how,
      () =>
        new FabricError(
          "UNAVAILABLE",
          `the Python interpreter ${this.id} ${how} while running the task${this.lastWords()}`,
          { reason: "worker_lost" },
        ),
    );
  }
}
