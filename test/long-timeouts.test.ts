import { beforeAll, describe, expect, it } from "vitest";

import { type FabricError, MAX_TIMEOUT_S } from "../common/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { failureOf } from "./support/outcomes.js";
import { RawClients } from "./support/raw-clients.js";

/** Sleeps `ms`, then returns "slept". */
const sleeperSource = `
async function nap(ms) {
  await new Promise((r) => setTimeout(r, ms));
  return "slept";
}`;

/** Just over setTimeout's limit (2^31-1 ms), where Node fires a timer after 1 ms instead. */
const JUST_OVER_TIMER_LIMIT_S = 2_147_484;

/**
 * Timeouts longer than Node's setTimeout can wait (24.8 days) wait their whole length, up to
 * the 30-day maximum, which the broker enforces on a task's own timeout too.
 */
describe("long timeouts: task, function and shell limits past 24.8 days", () => {
  const stack = useFabric({
    endpoint: { name: "long", workers: 2 },
    // The client's own deadlines are past the limit too (submit calls, result watches).
    clientOptions: { callTimeoutMs: MAX_TIMEOUT_S * 1000 },
  });
  let napper: string;

  beforeAll(async () => {
    napper = await stack.client.registerFunction({ source: sleeperSource, entryPoint: "nap" });
  });

  const waitLong = <T>(taskId: string) =>
    stack.client.waitForResult<T>(taskId, { timeoutMs: MAX_TIMEOUT_S * 1000 });

  it("a task with timeout_s just over 24.8 days, and one of 30 days, runs to the end and succeeds", async () => {
    const { taskIds } = await stack.client.submitBatch([
      {
        functionId: napper,
        endpointId: stack.endpointId,
        args: [300],
        timeoutSeconds: JUST_OVER_TIMER_LIMIT_S,
      },
      { functionId: napper, endpointId: stack.endpointId, args: [300], timeoutSeconds: MAX_TIMEOUT_S },
    ]);
    for (const id of taskIds) expect(await waitLong<string>(id)).toBe("slept");
  });

  it("a function registered with the largest timeout (30 days) succeeds", async () => {
    const fid = await stack.client.registerFunction(
      { source: sleeperSource, entryPoint: "nap" },
      { timeoutSeconds: MAX_TIMEOUT_S },
    );
    expect(await waitLong<string>(await stack.client.run(fid, stack.endpointId, [300]))).toBe("slept");
  });

  it("a shell function with a 30-day walltime succeeds", async () => {
    const fid = await stack.client.registerShellFunction("sleep 0.3; echo rested", {
      walltimeSeconds: MAX_TIMEOUT_S,
    });
    const out = await waitLong<{ exitCode: number; stdout: string }>(
      await stack.client.run(fid, stack.endpointId),
    );
    expect(out.exitCode).toBe(0);
    expect(out.stdout.trim()).toBe("rested");
  });

  it("a task timeout_s over 30 days is refused at submission, naming the field, by the broker and the SDK", async () => {
    const raw = await RawClients.of(stack.fabric, "alice");
    const spec = (timeoutS: number) => ({
      functionId: napper,
      endpointId: stack.endpointId,
      argsJson: Buffer.from("[1]"),
      kwargsJson: Buffer.alloc(0),
      timeoutS,
    });
    const err = (await raw
      .submitTasks({ tasks: [spec(1), spec(MAX_TIMEOUT_S + 1)], groupId: "" })
      .catch((e: unknown) => e)) as FabricError;
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.message).toMatch(/tasks\[1\]\.timeout_s: 2592001 s is over the limit of 2592000 s/);
    const sdkErr = (await stack.client
      .submitBatch([
        { functionId: napper, endpointId: stack.endpointId, args: [1] },
        { functionId: napper, endpointId: stack.endpointId, args: [1], timeoutSeconds: MAX_TIMEOUT_S + 1 },
      ])
      .catch((e: unknown) => e)) as FabricError;
    expect(sdkErr.code).toBe("INVALID_ARGUMENT");
    expect(sdkErr.message).toMatch(/task 1: timeoutSeconds must be a whole number from 0 to 2592000/);
  });

  it("a short timeout still stops the task with DEADLINE_EXCEEDED", async () => {
    const [id] = (
      await stack.client.submitBatch([
        { functionId: napper, endpointId: stack.endpointId, args: [5_000], timeoutSeconds: 1 },
      ])
    ).taskIds;
    const started = Date.now();
    const err = await failureOf(waitLong(id!));
    expect(err.code).toBe("DEADLINE_EXCEEDED");
    expect(err.reason).toBe("timeout");
    expect(Date.now() - started).toBeLessThan(4_500);
  });
});
