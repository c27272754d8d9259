/**
 * Workers started before the pool: the pool's identical request adopts one, any other request
 * starts a fresh process (and the mismatched early one is stopped), and close() stops those never
 * asked for. Real processes: a tiny worker that writes its id on fd 3 and waits.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import type { LaunchedWorker } from "../runtime/launcher.js";
import { EarlyWorkerLauncher, workerEnvOf, workerIdOf } from "./early-workers.js";

let dir: string;
let main: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "fabric-early-workers-"));
  main = path.join(dir, "worker.mjs");
  writeFileSync(
    main,
    [
      'import net from "node:net";',
      "const link = new net.Socket({ fd: 3, readable: true, writable: true });",
      'link.write(`${process.pid} ${process.env.FABRIC_WORKER_ID} ${process.env.EXTRA ?? ""}\\n`);',
      'link.on("close", () => process.exit(0));',
      'process.on("SIGTERM", () => process.exit(0));',
    ].join("\n"),
  );
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The first line a worker wrote on its link: `PID ID EXTRA`. */
function hello(w: LaunchedWorker): Promise<string[]> {
  return new Promise((resolve) => {
    let text = "";
    w.link.on("data", (d: Buffer) => {
      text += d.toString();
      if (text.includes("\n")) resolve(text.trim().split(" "));
    });
  });
}

describe("EarlyWorkerLauncher", () => {
  it("hands a prestarted worker to the identical request and starts others fresh", async () => {
    const launcher = new EarlyWorkerLauncher(main);
    const id0 = workerIdOf("m1", 0);
    const id1 = workerIdOf("m1", 1);
    expect(id0).toBe("m1/w0");
    launcher.prestart({ id: id0, image: "", network: false, env: workerEnvOf({ EXTRA: "a" }, id0) });
    launcher.prestart({ id: id1, image: "", network: false, env: workerEnvOf({ EXTRA: "a" }, id1) });
    expect(launcher.waiting).toBe(2);

    const w0 = await launcher.launch({
      id: id0,
      image: "",
      network: false,
      env: workerEnvOf({ EXTRA: "a" }, id0),
    });
    const [pid0, seenId0, extra0] = await hello(w0);
    expect(seenId0).toBe(id0);
    expect(extra0).toBe("a");

    // Another environment than the prestarted worker's: a new process, and the early one stops.
    const early1 = launcher["early"].get(id1)!.worker;
    const w1 = await launcher.launch({
      id: id1,
      image: "",
      network: false,
      env: workerEnvOf({ EXTRA: "b" }, id1),
    });
    const [, seenId1, extra1] = await hello(w1);
    expect(seenId1).toBe(id1);
    expect(extra1).toBe("b");
    expect((await early1).id).toBe(id1);
    await expect((await early1).exited).resolves.toBeDefined();
    expect(launcher.waiting).toBe(0);

    // Adopted workers stay the caller's: close() leaves them running.
    await launcher.close();
    expect(() => process.kill(Number(pid0), 0)).not.toThrow();
    await w0.stop(1000);
    await w1.stop(1000);
  });

  it("stops the workers nobody asked for when closed", async () => {
    const launcher = new EarlyWorkerLauncher(main);
    const id = workerIdOf("m2", 0);
    launcher.prestart({ id, image: "", network: false, env: workerEnvOf(undefined, id) });
    const early = launcher["early"].get(id)!.worker;
    await launcher.close();
    expect(launcher.waiting).toBe(0);
    await expect((await early).exited).resolves.toMatchObject({ outOfMemory: false });
  });
});
