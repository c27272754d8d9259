import { describe, expect, it } from "vitest";

import { MAX_TIMER_SEGMENT_MS, setLongTimeout } from "./timers.js";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe("setLongTimeout", () => {
  it("fires once after the whole duration when it spans several segments", async () => {
    const started = performance.now();
    let calls = 0;
    let firedAfter = 0;
    // 10 ms segments: a 120 ms timer takes 12 of them and fires once, not after the first.
    setLongTimeout(
      () => {
        calls++;
        firedAfter = performance.now() - started;
      },
      120,
      { maxSegmentMs: 10 },
    );
    await sleep(40);
    expect(calls).toBe(0);
    await sleep(250);
    expect(calls).toBe(1);
    expect(firedAfter).toBeGreaterThanOrEqual(115);
  });

  it("does not fire when cleared between segments, and clear is idempotent", async () => {
    let calls = 0;
    const t = setLongTimeout(() => calls++, 80, { maxSegmentMs: 10 });
    await sleep(35);
    t.clear();
    t.clear();
    await sleep(120);
    expect(calls).toBe(0);
  });

  it("keeps a timer over setTimeout's 24.8-day limit from firing (plain setTimeout fires after 1 ms)", async () => {
    const overLimitMs = MAX_TIMER_SEGMENT_MS + 1_000;
    let plain = 0;
    let long = 0;
    // What the helper guards against: Node turns the over-long delay into 1 ms (with a warning).
    const onWarning = () => undefined;
    process.on("warning", onWarning);
    try {
      setTimeout(() => plain++, overLimitMs).unref();
      const thirtyDays = setLongTimeout(() => long++, 30 * 24 * 3600 * 1000);
      const justOver = setLongTimeout(() => long++, overLimitMs);
      await sleep(200);
      expect(plain).toBe(1);
      expect(long).toBe(0);
      thirtyDays.clear();
      justOver.clear();
    } finally {
      process.off("warning", onWarning);
    }
  });

  it("fires at once for 0, negative and NaN delays, and never for Infinity", async () => {
    let fired = 0;
    setLongTimeout(() => fired++, 0);
    setLongTimeout(() => fired++, -5);
    setLongTimeout(() => fired++, Number.NaN);
    const never = setLongTimeout(() => fired++, Number.POSITIVE_INFINITY, { maxSegmentMs: 5 });
    await sleep(60);
    expect(fired).toBe(3);
    never.clear();
  });

  it("unref applies to every later segment, and ref() undoes it", async () => {
    // Node counts only timers that keep the process alive (ref'd) as active "Timeout" resources;
    // other timers come and go, so compare counts taken in the same synchronous step.
    const refedTimers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    let calls = 0;
    const t = setLongTimeout(() => calls++, 200, { maxSegmentMs: 10 }).unref();
    await sleep(50); // a few segments later, the current segment is unref'd: ref() adds one
    let before = refedTimers();
    t.ref();
    expect(refedTimers()).toBe(before + 1);
    await sleep(30); // and a later segment is ref'd: unref() removes one
    before = refedTimers();
    t.unref();
    expect(refedTimers()).toBe(before - 1);
    await sleep(250);
    expect(calls).toBe(1);
  });
});
