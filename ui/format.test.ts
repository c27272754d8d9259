import { describe, expect, it } from "vitest";

import { ago, duration, shortId, stateLabel, truncate } from "./format.js";

describe("the page's formats", () => {
  it("writes durations a person reads", () => {
    expect(duration(850)).toBe("850 ms");
    expect(duration(12_340)).toBe("12 s");
    expect(duration(4_300)).toBe("4.3 s");
    expect(duration(245_000)).toBe("4 min 05 s");
    expect(duration(7_800_000)).toBe("2 h 10 min");
    expect(duration(3 * 86_400_000 + 4 * 3_600_000)).toBe("3 d 4 h");
  });

  it("writes times relative to now, ids short, states in words, long text cut", () => {
    expect(ago(0, 5)).toBe("never");
    expect(ago(10_000, 13_500)).toBe("3.5 s ago");
    expect(ago(0 + 1, 1 + 245_000)).toBe("4 min ago");
    expect(ago(100_000, 40_000)).toBe("in 1 min");
    expect(shortId("30c05bcd-9304-8b84-b18e-a9a3a89698e0")).toBe("a9a3a89698e0");
    expect(shortId("short")).toBe("short");
    expect(stateLabel("waiting_for_endpoint")).toBe("waiting for endpoint");
    expect(truncate("abcdef", 4)).toEqual({ text: "abcd", cut: 2 });
    expect(truncate("ab", 4)).toEqual({ text: "ab", cut: 0 });
  });
});
