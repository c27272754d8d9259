import { describe, expect, it } from "vitest";

import { TaskFailedError } from "../sdk/index.js";
import { failureOf } from "./support/outcomes.js";
import { useFabric } from "./support/fabric-suite.js";

describe("end to end: SDK → broker → NATS → agent → worker → SDK", () => {
  const stack = useFabric({ endpoint: { name: "e2e", workers: 2 } });

  it("runs a registered JS function and returns its result", async () => {
    const functionId = await stack.client.registerFunction(function add(a: number, b: number) {
      return a + b;
    });
    const taskId = await stack.client.run(functionId, stack.endpointId, [2, 40]);
    expect(await stack.client.waitForResult(taskId, { timeoutMs: 30_000 })).toBe(42);
    const info = await stack.client.getTask(taskId);
    expect(info.state).toBe("success");
    expect(info.history.map((h) => h.state)).toEqual([
      "received",
      "waiting-for-endpoint",
      "running",
      "success",
    ]);
    for (const h of info.history) expect(h.actor).not.toBe("");
  });

  it("runs an async JS function from a source string", async () => {
    const functionId = await stack.client.registerFunction({
      source:
        "async function greet(name) { await new Promise((r) => setTimeout(r, 5)); return { hello: name, pid: process.pid }; }",
      entryPoint: "greet",
    });
    const taskId = await stack.client.run(functionId, stack.endpointId, ["world"]);
    const out = await stack.client.waitForResult<{ hello: string; pid: number }>(taskId, {
      timeoutMs: 30_000,
    });
    expect(out.hello).toBe("world");
    // User code never runs in the agent's process.
    expect(out.pid).not.toBe(stack.endpoint.process!.proc.pid);
  });

  it("runs a shell function with its arguments quoted, returning exit code and output", async () => {
    const functionId = await stack.client.registerShellFunction("echo hello {name}; echo done >&2", {
      walltimeSeconds: 30,
    });
    const taskId = await stack.client.run(functionId, stack.endpointId, [], { name: "world; echo injected" });
    const out = await stack.client.waitForResult<{ exitCode: number; stdout: string; stderr: string }>(
      taskId,
      { timeoutMs: 30_000 },
    );
    expect(out).toEqual({ exitCode: 0, stdout: "hello world; echo injected\n", stderr: "done\n" });
  });

  it("a throwing function fails with the remote exception's type, message and stack", async () => {
    const functionId = await stack.client.registerFunction(function explode(what: string) {
      class ExperimentError extends Error {
        override name = "ExperimentError";
      }
      throw new ExperimentError(`detector ${what} saturated`);
    });
    const taskId = await stack.client.run(functionId, stack.endpointId, ["D7"]);
    const failure = await failureOf(stack.client.waitForResult(taskId, { timeoutMs: 30_000 }));
    expect(failure.reason).toBe("function_error");
    expect(failure.remote?.type).toBe("ExperimentError");
    expect(failure.remote?.message).toBe("detector D7 saturated");
    expect(failure.remote?.stack).toMatch(/explode/);
    await expect(stack.client.getResult(taskId)).rejects.toBeInstanceOf(TaskFailedError);
    expect((await stack.client.getTask(taskId)).state).toBe("failed");
  });

  it("a shell command with a non-zero exit fails with its code and output", async () => {
    const functionId = await stack.client.registerShellFunction("echo partial; echo broken >&2; exit {code}");
    const taskId = await stack.client.run(functionId, stack.endpointId, [], { code: 3 });
    const err = await failureOf(stack.client.waitForResult(taskId, { timeoutMs: 30_000 }));
    expect(err.reason).toBe("shell_exit_nonzero");
    expect(err.shell).toMatchObject({ exitCode: 3, stdout: "partial\n", stderr: "broken\n" });
  });

  it("a pending task's result is a typed 'pending' error, not a value", async () => {
    const functionId = await stack.client.registerFunction({
      source: "async function slow() { await new Promise((r) => setTimeout(r, 1500)); return 'late'; }",
      entryPoint: "slow",
    });
    const taskId = await stack.client.run(functionId, stack.endpointId, []);
    await expect(stack.client.getResult(taskId)).rejects.toMatchObject({ name: "TaskPendingError" });
    expect(await stack.client.waitForResult(taskId, { timeoutMs: 30_000 })).toBe("late");
  });

  it("runs a batch of 10,000 tasks and streams every result exactly once", async () => {
    const functionId = await stack.client.registerFunction(function square(x: number) {
      return x * x;
    });
    const n = 10_000;
    const { groupId, taskIds } = await stack.client.submitBatch(
      Array.from({ length: n }, (_, i) => ({ functionId, endpointId: stack.endpointId, args: [i] })),
    );
    expect(taskIds).toHaveLength(n);
    const index = new Map(taskIds.map((id, i) => [id, i]));
    const seen = new Set<string>();
    let ok = 0;
    for await (const outcome of stack.client.results({ groupId }, { timeoutMs: 240_000 })) {
      expect(seen.has(outcome.taskId)).toBe(false);
      seen.add(outcome.taskId);
      if (outcome.ok) {
        const i = index.get(outcome.taskId)!;
        expect(outcome.value).toBe(i * i);
        ok++;
      }
    }
    expect(ok).toBe(n);
  }, 300_000);

  it("an executor's submit returns a promise of the result", async () => {
    const ex = stack.client.executor({ endpointId: stack.endpointId });
    const triple = (x: number) => x * 3;
    const values = await Promise.all(Array.from({ length: 50 }, (_, i) => ex.submit<number>(triple, i)));
    expect(values).toEqual(Array.from({ length: 50 }, (_, i) => i * 3));
    await ex.close();
  });

  it("shows the endpoint online with its workers", async () => {
    const ep = await stack.client.getEndpoint(stack.endpointId);
    expect(ep.status.connection).toBe("online");
    expect(ep.status.last?.workers).toBe(2);
  });
});
