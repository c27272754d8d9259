/**
 * Spawns the real worker and manager processes. Node 20 cannot run TypeScript, so the endpoint
 * folder is compiled first (see devkit/build-for-tests.ts) and the compiled entries are spawned.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import net from "node:net";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readFrames, writeFrame } from "../../common/lean.js";
import { AgentMessage, ManagerMessage, WorkerRequest, WorkerResponse } from "../../proto/index.js";
import type { FunctionSpec, WorkItem, WorkOutcome } from "../../proto/index.js";
import { buildEndpointForTests } from "../../devkit/index.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

function jsItem(
  taskId: string,
  source: string,
  entryPoint: string,
  args: unknown[],
  kwargs?: unknown,
): WorkItem {
  return {
    taskId,
    functionId: `f-${taskId}`,
    function: { kind: { $case: "js", value: { source, entryPoint } }, containerImage: "" },
    argsJson: Buffer.from(enc.encode(JSON.stringify(args))),
    kwargsJson: Buffer.from(kwargs === undefined ? new Uint8Array() : enc.encode(JSON.stringify(kwargs))),
    attempt: 1,
  };
}

function shellItem(taskId: string, command: string, kwargs: unknown, walltimeS = 0): WorkItem {
  const fn: FunctionSpec = { kind: { $case: "shell", value: { command, walltimeS } }, containerImage: "" };
  return {
    taskId,
    functionId: `f-${taskId}`,
    function: fn,
    argsJson: Buffer.alloc(0),
    kwargsJson: Buffer.from(JSON.stringify(kwargs)),
    attempt: 1,
  };
}

/** A worker process driven directly over its fd 3, the way a manager does. */
class WorkerHandle {
  readonly outcomes: WorkOutcome[] = [];
  ready = false;
  private waiters: (() => void)[] = [];
  readonly proc: ChildProcess;

  constructor(main: string) {
    this.proc = spawn(process.execPath, [main], {
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      env: { ...process.env, FABRIC_LOG_LEVEL: "silent" },
    });
    readFrames(
      this.proc.stdio[3] as net.Socket,
      (f) => {
        const m = WorkerResponse.decode(f).msg;
        if (m?.$case === "ready") this.ready = true;
        if (m?.$case === "outcome") this.outcomes.push(m.value);
        for (const w of this.waiters.splice(0)) w();
      },
      (err) => {
        throw err;
      },
    );
  }

  async run(item: WorkItem): Promise<WorkOutcome> {
    writeFrame(this.proc.stdio[3] as net.Socket, WorkerRequest.encode({ item }).finish());
    for (;;) {
      const o = this.outcomes.find((x) => x.taskId === item.taskId);
      if (o) return o;
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
}

const resultOf = (o: WorkOutcome): unknown => JSON.parse(dec.decode(o.resultJson));

describe("worker process", () => {
  let dist: string;
  let worker: WorkerHandle;

  beforeAll(() => {
    dist = buildEndpointForTests();
    worker = new WorkerHandle(path.join(dist, "endpoint/worker/main.js"));
  }, 120_000);
  afterAll(() => {
    worker?.proc.kill("SIGKILL");
  });

  it("runs a JS function, with kwargs as a last argument", async () => {
    const o = await worker.run(
      jsItem("t1", "function add(a, b, kw) { return a + b + (kw ? kw.extra : 0); }", "add", [2, 40], {
        extra: 100,
      }),
    );
    expect(o.ok).toBe(true);
    expect(resultOf(o)).toBe(142);
    expect(worker.ready).toBe(true);
  });

  it("runs an async function and turns undefined into null", async () => {
    const o = await worker.run(
      jsItem(
        "t2",
        "async function later(x) { await new Promise((r) => setTimeout(r, 5)); return { x, pid: process.pid }; }",
        "later",
        [7],
      ),
    );
    expect(o.ok).toBe(true);
    const r = resultOf(o) as { x: number; pid: number };
    expect(r.x).toBe(7);
    expect(r.pid).toBe(worker.proc.pid);
    const u = await worker.run(jsItem("t3", "function nothing() {}", "nothing", []));
    expect(resultOf(u)).toBeNull();
  });

  it("reports a thrown error with its type, message and stack", async () => {
    const o = await worker.run(
      jsItem(
        "t4",
        "class ExperimentError extends Error { constructor(m) { super(m); this.name = 'ExperimentError'; } }\nfunction explode(d) { throw new ExperimentError('detector ' + d + ' saturated'); }",
        "explode",
        ["D7"],
      ),
    );
    expect(o.ok).toBe(false);
    expect(o.error).toMatchObject({
      code: "FUNCTION_FAILED",
      reason: "function_error",
      message: "detector D7 saturated",
    });
    expect(o.error?.remote?.type).toBe("ExperimentError");
    expect(o.error?.remote?.stack).toMatch(/explode/);
  });

  it("reports non-Error throws, missing entry points and non-JSON results clearly", async () => {
    const s = await worker.run(jsItem("t5", "function f() { throw 'plain string'; }", "f", []));
    expect(s.error).toMatchObject({ reason: "function_error", message: "plain string" });
    expect(s.error?.remote?.type).toBe("string");
    const m = await worker.run(jsItem("t6", "function g() {}", "h", []));
    expect(m.error).toMatchObject({ code: "INVALID_ARGUMENT", reason: "invalid_task" });
    expect(m.error?.message).toMatch(/entry point h is not defined/);
    const b = await worker.run(jsItem("t7", "function big() { return 10n; }", "big", []));
    expect(b.error?.message).toMatch(/cannot be encoded as JSON/);
  });

  it("runs a shell command with a non-zero exit", async () => {
    const o = await worker.run(shellItem("t8", "echo partial; echo broken >&2; exit {code}", { code: 3 }));
    expect(o.ok).toBe(false);
    expect(o.error).toMatchObject({
      code: "FUNCTION_FAILED",
      reason: "shell_exit_nonzero",
      message: "command exited with code 3",
    });
    expect(o.error?.shell).toMatchObject({ exitCode: 3, stdout: "partial\n", stderr: "broken\n" });
    const ok = await worker.run(shellItem("t9", "echo hello {name}", { name: "world; echo injected" }));
    expect(resultOf(ok)).toEqual({ exitCode: 0, stdout: "hello world; echo injected\n", stderr: "" });
  });

  it("kills a shell command at its walltime", async () => {
    const o = await worker.run(shellItem("t10", "echo begun; sleep 30", {}, 1));
    expect(o.error).toMatchObject({ code: "DEADLINE_EXCEEDED", reason: "walltime" });
    expect(o.error?.shell?.stdout).toBe("begun\n");
  });
});

/** A stand-in agent: accepts one manager and records what it says. */
class FakeAgent {
  readonly server = net.createServer((s) => this.accept(s));
  readonly messages: ManagerMessage[] = [];
  /** When each of `messages` arrived (ms since the epoch). */
  readonly arrivedAtMs: number[] = [];
  sock: net.Socket | undefined;
  closed = false;
  private waiters: (() => void)[] = [];

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    return (this.server.address() as net.AddressInfo).port;
  }

  private accept(s: net.Socket): void {
    this.sock = s;
    readFrames(
      s,
      (f) => this.push(ManagerMessage.decode(f)),
      () => s.destroy(),
    );
    s.on("close", () => {
      this.closed = true;
      this.notify();
    });
  }

  private push(m: ManagerMessage): void {
    this.messages.push(m);
    this.arrivedAtMs.push(Date.now());
    this.notify();
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  send(m: AgentMessage): void {
    writeFrame(this.sock!, AgentMessage.encode(m).finish());
  }

  work(items: WorkItem[]): void {
    this.send({ msg: { $case: "work", value: { items } } });
  }

  outcomes(): WorkOutcome[] {
    return this.messages.flatMap((m) => (m.msg?.$case === "outcomes" ? m.msg.value.outcomes : []));
  }

  async until(check: () => boolean, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) throw new Error("timed out waiting for the manager");
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }
}

describe("manager process against a stand-in agent", () => {
  let dist: string;
  beforeAll(() => {
    dist = buildEndpointForTests();
  }, 120_000);

  function startManager(port: number, workers: number): ChildProcess {
    return spawn(
      process.execPath,
      [
        path.join(dist, "endpoint/manager/main.js"),
        "--agent",
        `127.0.0.1:${port}`,
        "--block",
        "b-test",
        "--workers",
        String(workers),
      ],
      {
        stdio: ["ignore", "ignore", "ignore"],
        env: { ...process.env, FABRIC_BLOCK_SECRET: "s3cret", FABRIC_LOG_LEVEL: "silent" },
      },
    );
  }

  /**
   * Runs `body` with a manager of `workers` workers connected to a fresh stand-in agent, and
   * `exited`, its exit code; kills the manager and closes the agent afterwards, whatever happened.
   */
  async function withManager(
    workers: number,
    body: (agent: FakeAgent, exited: Promise<number | null>) => Promise<void>,
  ): Promise<void> {
    const agent = new FakeAgent();
    const proc = startManager(await agent.listen(), workers);
    const exited = new Promise<number | null>((r) => proc.on("exit", (code) => r(code)));
    try {
      await body(agent, exited);
    } finally {
      proc.kill("SIGKILL");
      agent.server.close();
    }
  }

  it("says hello, runs work, reports starts and outcomes, replaces a dead worker, and exits on shutdown", () =>
    withManager(2, async (agent, exited) => {
      await agent.until(() => agent.messages.length > 0);
      const hello = agent.messages[0]!.msg;
      expect(hello?.$case).toBe("hello");
      if (hello?.$case !== "hello") return;
      expect(hello.value).toMatchObject({ blockId: "b-test", workers: 2, secret: "s3cret" });
      agent.send({ msg: { $case: "welcome", value: { endpointId: "ep", heartbeatIntervalS: 1 } } });

      const sentAtMs = Date.now();
      agent.work([
        jsItem("a", "function sq(x) { return x * x; }", "sq", [9]),
        jsItem("b", "function die() { process.exit(7); }", "die", []),
        jsItem("c", "function sq(x) { return x * x; }", "sq", [4]),
      ]);
      await agent.until(() => agent.outcomes().length === 3);
      const byId = new Map(agent.outcomes().map((o) => [o.taskId, o]));
      expect(resultOf(byId.get("a")!)).toBe(81);
      expect(resultOf(byId.get("c")!)).toBe(16);
      expect(byId.get("b")!.error).toMatchObject({ code: "UNAVAILABLE", reason: "worker_lost" });
      expect(byId.get("b")!.error?.message).toMatch(/exited with code 7/);
      // A task that ends within the manager's 25 ms hold sends no "started" notice: its outcome says
      // when and where it started. (On a loaded machine a quick task may outlast the hold: only
      // outcomes that arrived within it prove anything.)
      const noticed = new Set(
        agent.messages.flatMap((m) => (m.msg?.$case === "started" ? [m.msg.value.taskId] : [])),
      );
      agent.messages.forEach((m, i) => {
        if (m.msg?.$case !== "outcomes" || agent.arrivedAtMs[i]! >= sentAtMs + 25) return;
        for (const o of m.msg.value.outcomes) expect(noticed.has(o.taskId), o.taskId).toBe(false);
      });
      for (const id of ["a", "c"]) {
        expect(byId.get(id)!.startedAtMs).toBeGreaterThan(0);
        expect(byId.get(id)!.workerId).not.toBe("");
      }

      // The replacement worker takes new work.
      agent.work([
        jsItem("d", "function sq(x) { return x * x; }", "sq", [5]),
        jsItem("e", "function sq(x) { return x * x; }", "sq", [6]),
        jsItem(
          "f",
          "function slow() { const t = Date.now(); while (Date.now() - t < 300); return 1; }",
          "slow",
          [],
        ),
      ]);
      await agent.until(() => agent.outcomes().length === 6);
      expect(agent.outcomes().filter((o) => o.ok)).toHaveLength(5);
      // A task still running after a moment is reported as started, before its outcome. (A quick
      // task on a loaded machine may outlast the moment too: only the slow one must be reported.)
      const startedIds = agent.messages.flatMap((m) =>
        m.msg?.$case === "started" ? [m.msg.value.taskId] : [],
      );
      expect(startedIds).toContain("f");
      await agent.until(() => agent.messages.some((m) => m.msg?.$case === "heartbeat"));

      agent.send({ msg: { $case: "shutdown", value: { reason: "test over" } } });
      expect(await exited).toBe(0);
    }));

  it("pipelines short tasks to busy workers without losing, repeating or mis-cancelling one", () =>
    withManager(2, async (agent) => {
      const byId = () => {
        const m = new Map<string, WorkOutcome[]>();
        for (const o of agent.outcomes()) m.set(o.taskId, [...(m.get(o.taskId) ?? []), o]);
        return m;
      };
      const id = "function id(x) { return x; }";
      await agent.until(() => agent.messages.length > 0);
      agent.send({ msg: { $case: "welcome", value: { endpointId: "ep", heartbeatIntervalS: 5 } } });
      // Many no-op tasks: the pool learns they are short and pipelines them.
      agent.work(Array.from({ length: 400 }, (_, i) => jsItem(`n${i}`, id, "id", [i])));
      await agent.until(() => agent.outcomes().length === 400);
      for (let i = 0; i < 400; i++) expect(resultOf(byId().get(`n${i}`)![0]!)).toBe(i);

      // A worker dies with tasks pipelined behind its task: they run elsewhere, once each.
      agent.work([
        jsItem("die", "function die() { process.exit(7); }", "die", []),
        ...Array.from({ length: 20 }, (_, i) => jsItem(`p${i}`, id, "id", [i])),
      ]);
      await agent.until(() => agent.outcomes().length === 421);
      expect(byId().get("die")![0]!.error).toMatchObject({ reason: "worker_lost" });
      for (let i = 0; i < 20; i++) expect(byId().get(`p${i}`)!.map(resultOf)).toEqual([i]);

      // A task pipelined behind a long one is cancelled: one CANCELLED outcome, nothing else.
      const busy = "function busy() { const t = Date.now(); while (Date.now() - t < 400); return 1; }";
      agent.work([
        jsItem("s1", busy, "busy", []),
        jsItem("s2", busy, "busy", []),
        jsItem("c1", id, "id", [1]),
        jsItem("c2", id, "id", [2]),
      ]);
      await new Promise((r) => setTimeout(r, 100));
      agent.send({ msg: { $case: "cancel", value: { taskIds: ["c1"] } } });
      await agent.until(() => agent.outcomes().length === 425);
      await new Promise((r) => setTimeout(r, 200));
      expect(agent.outcomes()).toHaveLength(425);
      expect(
        byId()
          .get("c1")!
          .map((o) => o.error?.reason),
      ).toEqual(["cancelled"]);
      expect(byId().get("c2")!.map(resultOf)).toEqual([2]);
      expect(byId().get("s1")!.map(resultOf)).toEqual([1]);
    }));

  it("exits, taking its workers along, when the agent connection drops", () =>
    withManager(1, async (agent, exited) => {
      await agent.until(() => agent.messages.length > 0);
      agent.work([jsItem("p", "function pid() { return process.pid; }", "pid", [])]);
      await agent.until(() => agent.outcomes().length === 1);
      const workerPid = resultOf(agent.outcomes()[0]!) as number;
      agent.sock!.destroy();
      expect(await exited).toBe(1);
      expect(() => process.kill(workerPid, 0)).toThrow();
    }));
});
