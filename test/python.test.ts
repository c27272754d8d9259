import { readFileSync } from "node:fs";
import path from "node:path";

import { beforeAll, describe, expect, it } from "vitest";

import { useFabric } from "./support/fabric-suite.js";
import { until } from "./support/fault.js";
import { failureOf, outcomeOf } from "./support/outcomes.js";
import { RECONSTRUCTION, py, reconstructionError } from "./support/reconstruction.js";

/** Debian's interpreter: it has numpy, scipy and scikit-image (a pyenv `python3` on PATH may not). */
const PYTHON = process.env["FABRIC_TEST_PYTHON"] ?? "/usr/bin/python3";
describe("Python functions on a local endpoint", () => {
  const stack = useFabric({
    endpoint: { name: "py", workers: 2, extra: { python: { executable: PYTHON } } },
  });

  /** Registers Python `source` and returns a runner of its `entry`. */
  async function pyFunction(
    source: string,
    entry: string,
    opts: { minVersion?: string; timeoutSeconds?: number } = {},
  ) {
    const { minVersion, timeoutSeconds } = opts;
    const fid = await stack.client.registerFunction(
      { python: { source, entryPoint: entry, ...(minVersion ? { minVersion } : {}) } },
      timeoutSeconds ? { timeoutSeconds } : {},
    );
    return {
      fid,
      run: (args: unknown[] = [], kwargs?: Record<string, unknown>) =>
        stack.client.run(fid, stack.endpointId, args, kwargs),
    };
  }
  const wait = (taskId: string) => stack.client.waitForResult(taskId, { timeoutMs: 60_000 });

  beforeAll(async () => {
    // The agent reports its interpreter soon after it starts.
    await until(
      async () => (await stack.client.getEndpoint(stack.endpointId)).status.last?.python !== undefined,
      30_000,
      "the endpoint to report its Python",
    );
  });

  it("reports its interpreter in the endpoint status", async () => {
    const p = (await stack.client.getEndpoint(stack.endpointId)).status.last!.python!;
    expect(p.problem).toBe("");
    expect(p.version).toMatch(/^3\.\d+\.\d+$/);
    expect(p.implementation).toBe("cpython");
    // What functions may import: the standard library and the site's packages (Debian's numpy).
    expect(p.modules).toEqual(expect.arrayContaining(["json", "os", "numpy", "skimage"]));
  });

  it("reconstructs a Shepp–Logan phantom from its sinogram (.npy bytes) with filtered back-projection", async () => {
    const f = await pyFunction(RECONSTRUCTION, "scan");
    const r = await pyFunction(RECONSTRUCTION, "reconstruct");
    const scanned = (await wait(await f.run([100]))) as {
      phantom: Buffer;
      sinogram: Buffer;
      theta: number[];
    };
    expect(Buffer.isBuffer(scanned.sinogram)).toBe(true);
    // The sinogram goes back as bytes: the SDK sends a Buffer argument as {"$bytes": base64}.
    const image = (await wait(await r.run([scanned.sinogram, scanned.theta]))) as Buffer;
    const rms = reconstructionError(scanned.phantom, image);
    expect(rms).toBeLessThan(0.06);
    expect(rms).toBeGreaterThan(0); // a reconstruction, not the phantom handed back
  });

  it("an exception reaches the SDK as a FabricError with the Python type, message and traceback", async () => {
    const f = await pyFunction(
      py(
        "def check(x):",
        "    if x > 2:",
        "        raise ValueError(f'x too large: {x}')",
        "    return x",
        "",
        "def main(x):",
        "    return check(x)",
      ),
      "main",
    );
    const err = await failureOf(wait(await f.run([3])));
    expect(err.reason).toBe("function_error");
    expect(err.remote?.type).toBe("ValueError");
    expect(err.remote?.message).toBe("x too large: 3");
    expect(err.message).toContain("ValueError: x too large: 3");
    // The full traceback, with the user's frames and source lines.
    expect(err.remote?.stack).toContain("in main");
    expect(err.remote?.stack).toContain("in check");
    expect(err.remote?.stack).toContain("raise ValueError");
  });

  it("keeps what a task prints (stdout and stderr), with the task and on its failure", async () => {
    const f = await pyFunction(
      py(
        "import sys",
        "def main(n, fail=False):",
        "    print('step', n)",
        "    print('warning: low memory', file=sys.stderr)",
        "    if fail:",
        "        raise RuntimeError('gave up')",
        "    return n",
      ),
      "main",
    );
    const ok = await f.run([7]);
    expect(await wait(ok)).toBe(7);
    const task = await stack.client.getTask(ok);
    expect(task.output).toEqual({ stdout: "step 7\n", stderr: "warning: low memory\n" });
    const err = await failureOf(wait(await f.run([8], { fail: true })));
    expect(err.output?.stdout).toBe("step 8\n");
  });

  it("module-level code runs once per interpreter, not once per task", async () => {
    const f = await pyFunction(
      py(
        "import os",
        "LOADS = []",
        "LOADS.append(1)",
        "CALLS = [0]",
        "def main():",
        "    CALLS[0] += 1",
        "    return [os.getpid(), len(LOADS), CALLS[0]]",
      ),
      "main",
    );
    const seen = new Map<number, number[]>();
    for (let i = 0; i < 6; i++) {
      const [pid, loads, calls] = (await wait(await f.run())) as [number, number, number];
      expect(loads).toBe(1);
      seen.set(pid, [...(seen.get(pid) ?? []), calls]);
    }
    // Each interpreter counts its own calls up from 1: the module was kept between tasks.
    for (const calls of seen.values()) expect(calls).toEqual(calls.map((_, i) => i + 1));
    expect([...seen.values()].some((c) => c.length > 1)).toBe(true);
  });

  it("a timeout stops the interpreter and what it spawned; the next task runs", async () => {
    const pidFile = path.join(stack.fabric.dir, "py-child.pid");
    const f = await pyFunction(
      py(
        "import subprocess, time",
        "def main(pid_file):",
        "    child = subprocess.Popen(['sleep', '300'])",
        "    open(pid_file, 'w').write(str(child.pid))",
        "    time.sleep(300)",
      ),
      "main",
      { timeoutSeconds: 1 },
    );
    const err = await failureOf(wait(await f.run([pidFile])));
    expect(err.reason).toBe("timeout");
    const child = Number(readFileSync(pidFile, "utf8"));
    await until(
      () => {
        try {
          process.kill(child, 0);
          return false;
        } catch {
          return true;
        }
      },
      10_000,
      "the function's child process to be killed with its interpreter",
    );
    const g = await pyFunction(py("def main():", "    return 'after'"), "main");
    expect(await wait(await g.run())).toBe("after");
  });

  it("a cancelled long task ends cancelled", async () => {
    const f = await pyFunction(py("import time", "def main():", "    time.sleep(300)"), "main");
    const id = await f.run();
    await until(async () => (await stack.client.getTask(id)).state === "running", 30_000, "the task to run");
    await stack.client.cancel([id]);
    const err = await failureOf(wait(id));
    expect(err.state).toBe("cancelled");
  });

  it("an interpreter that dies (a segfault) fails its task as worker_lost, and is replaced", async () => {
    const f = await pyFunction(
      py("import faulthandler, os, signal", "def main():", "    os.kill(os.getpid(), signal.SIGSEGV)"),
      "main",
    );
    const err = await failureOf(wait(await f.run()));
    expect(err.reason).toBe("worker_lost");
    expect(err.message).toContain("SIGSEGV");
    // faulthandler's report of where it crashed is the interpreter's last output.
    expect(err.message).toContain("Fatal Python error");
    const g = await pyFunction(py("def main(x):", "    return x + 1"), "main");
    expect(await wait(await g.run([41]))).toBe(42);
  });

  it("sys.exit and a missing module each get their own reason", async () => {
    const exit = await pyFunction(py("import sys", "def main():", "    sys.exit(3)"), "main");
    const e1 = await failureOf(wait(await exit.run()));
    expect(e1.reason).toBe("system_exit");
    expect(e1.message).toContain("sys.exit(3)");
    const missing = await pyFunction(py("import no_such_module_here", "def main():", "    return 1"), "main");
    const e2 = await failureOf(wait(await missing.run()));
    expect(e2.reason).toBe("import_error");
    expect(e2.message).toContain("no_such_module_here");
  });

  it("a function needing a newer Python than the endpoint's fails at submission", async () => {
    const f = await pyFunction(py("def main():", "    return 1"), "main", { minVersion: "9.0" });
    const o = await outcomeOf(f.run());
    expect(o.code).toBe("FAILED_PRECONDITION");
    expect(o.message).toContain("needs Python 9.0 or later");
    const fine = await pyFunction(py("def main():", "    return 1"), "main", { minVersion: "3.8" });
    expect(await wait(await fine.run())).toBe(1);
  });

  it("JavaScript, shell and Python tasks share the endpoint's workers", async () => {
    const pyF = await pyFunction(py("def main(x):", "    return x * 2"), "main");
    const jsF = await stack.client.registerFunction({
      source: "function main(x) { return x * 3; }",
      entryPoint: "main",
    });
    const shF = await stack.client.registerShellFunction("echo {word}");
    const ids = [
      await pyF.run([1]),
      await stack.client.run(jsF, stack.endpointId, [1]),
      await stack.client.run(shF, stack.endpointId, [], { word: "hi" }),
      await pyF.run([2]),
    ];
    const [a, b, c, d] = await Promise.all(ids.map(wait));
    expect([a, b, d]).toEqual([2, 3, 4]);
    expect((c as { stdout: string }).stdout).toBe("hi\n");
  });
});
