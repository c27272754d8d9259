/**
 * The whole path with containers: SDK → broker → NATS → agent → manager → a warm Docker container
 * → back. The endpoint's config names the runtime; the manager gets it from the agent.
 */
import { hostname } from "node:os";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  ensureDockerEngine,
  removeImagesByLabel,
  type ContainerEngine,
  ensureWorkerImages,
  LocalFabric,
} from "../devkit/index.js";
import { removeContainersByLabel, MANAGED_LABEL } from "../endpoint/internal.js";
import { Client, TaskFailedError } from "../sdk/index.js";
import { failureOf } from "./support/outcomes.js";
import { RECONSTRUCTION, py, reconstructionError } from "./support/reconstruction.js";

const RUN = `${process.pid}-${Date.now().toString(36)}`;
const TEST_LABEL = `org.fabric.test=${RUN}`;

describe("end to end with functions in Docker containers", () => {
  let engine: ContainerEngine;
  let stack: LocalFabric;
  let client: Client;
  let endpointId: string;
  let tags: { js: string; shell: string; python: string };

  beforeAll(async () => {
    engine = await ensureDockerEngine();
    tags = await ensureWorkerImages({
      docker: engine.docker,
      kinds: ["js", "shell", "python"],
      tags: {
        js: `fabric-test-worker:${RUN}`,
        shell: `fabric-test-worker-shell:${RUN}`,
        python: `fabric-test-worker-python:${RUN}`,
      },
      labels: { "org.fabric.test": RUN },
    });
    stack = await LocalFabric.start();
    const ep = await stack.startEndpoint("alice", "in-containers", {
      workers: 2,
      extra: {
        container: {
          runtime: "docker",
          socket: engine.socketPath,
          image: tags.js,
          shellImage: tags.shell,
          pythonImage: tags.python,
          // scipy and scikit-image need more than a JavaScript worker.
          limits: { memoryMiB: 384, pids: 64 },
          pool: { keepWarm: 1 },
        },
      },
    });
    endpointId = ep.endpointId();
    client = new Client({ address: stack.broker.address, token: await stack.broker.token("alice") });
  }, 240_000);

  afterAll(async () => {
    client?.close();
    await stack?.stop();
    if (engine) {
      // The agent's containers carry the managed label; a stopped agent removed its own already.
      const left = await engine.docker.listContainers({ all: true, filters: { label: [MANAGED_LABEL] } });
      for (const c of left) {
        if (c.Image === tags.js || c.Image === tags.shell || c.Image === tags.python)
          await engine.docker.getContainer(c.Id).remove({ force: true });
      }
      await removeContainersByLabel(engine.docker, TEST_LABEL).catch(() => undefined);
      await removeImagesByLabel(engine.docker, TEST_LABEL).catch(() => undefined);
      await engine.stop();
    }
  }, 120_000);

  it("runs JS and shell functions in their containers, not on the host", async () => {
    const fid = await client.registerFunction({
      source: "function where() { return { host: require('node:os').hostname(), uid: process.getuid() }; }",
      entryPoint: "where",
    });
    const out = await client.waitForResult<{ host: string; uid: number }>(
      await client.run(fid, endpointId, []),
      {
        timeoutMs: 60_000,
      },
    );
    expect(out.host).not.toBe(hostname());
    expect(out.host).toMatch(/^fabric-/);
    expect(out.uid).toBe(65534);
    const sh = await client.registerShellFunction(
      "id -u; test -e /etc/debian_version && echo host || echo container",
      {
        walltimeSeconds: 30,
      },
    );
    const shOut = await client.waitForResult<{ stdout: string }>(await client.run(sh, endpointId, [], {}), {
      timeoutMs: 60_000,
    });
    expect(shOut.stdout).toBe("65534\ncontainer\n");
  });

  it("a function naming an image the node lacks fails with a clear error", async () => {
    const fid = await client.registerFunction(
      { source: "function f() { return 1; }", entryPoint: "f" },
      { containerImage: "fabric-test-missing:nope" },
    );
    const err = await client.waitForResult(await client.run(fid, endpointId, []), { timeoutMs: 60_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TaskFailedError);
    expect((err as TaskFailedError).message).toMatch(
      /container image fabric-test-missing:nope is not present on node/,
    );
  });

  it("reconstructs a phantom with scikit-image in a Python worker container, as nobody, off the host", async () => {
    const python = (entryPoint: string) =>
      client.registerFunction({ python: { source: RECONSTRUCTION, entryPoint } });
    const wait = async (taskId: string) => client.waitForResult(taskId, { timeoutMs: 120_000 });
    const where = await client.registerFunction({
      python: {
        source: py("import os, socket", "def main():", "    return [socket.gethostname(), os.getuid()]"),
        entryPoint: "main",
      },
    });
    const [host, uid] = (await wait(await client.run(where, endpointId, []))) as [string, number];
    expect(host).not.toBe(hostname());
    expect(host).toMatch(/^fabric-/);
    expect(uid).toBe(65534);
    const scanned = (await wait(await client.run(await python("scan"), endpointId, [100]))) as {
      phantom: Buffer;
      sinogram: Buffer;
      theta: number[];
    };
    const image = (await wait(
      await client.run(await python("reconstruct"), endpointId, [scanned.sinogram, scanned.theta]),
    )) as Buffer;
    const rms = reconstructionError(scanned.phantom, image);
    expect(rms).toBeLessThan(0.06);
    expect(rms).toBeGreaterThan(0);
  }, 180_000);

  it("a Python worker container that crashes fails its task as worker_lost, naming the signal and its last words", async () => {
    const crash = await client.registerFunction({
      python: {
        source: py("import os, signal", "def main():", "    os.kill(os.getpid(), signal.SIGSEGV)"),
        entryPoint: "main",
      },
    });
    const err = await failureOf(
      client.waitForResult(await client.run(crash, endpointId, []), { timeoutMs: 60_000 }),
    );
    expect(err.reason).toBe("worker_lost");
    expect(err.message).toMatch(/Python worker container .* crashed \(SIGSEGV/);
    expect(err.message).toContain("Fatal Python error");
  }, 90_000);
});
