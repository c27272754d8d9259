import { describe, expect, it } from "vitest";

import { spinner, taskBar } from "./cli-feedback.js";

/** A terminal that keeps what is drawn on it. */
function fakeTerminal() {
  const out: string[] = [];
  const stream = {
    isTTY: true,
    columns: 120,
    rows: 40,
    write: (s: string) => {
      out.push(String(s));
      return true;
    },
    on: () => stream,
    once: () => stream,
    removeListener: () => stream,
    off: () => stream,
  };
  return { stream: stream as unknown as NodeJS.WriteStream, text: () => out.join("") };
}

describe("progress while waiting", () => {
  it("draws nothing without a terminal", () => {
    const bar = taskBar(undefined, 10);
    bar.finished(true);
    bar.stop();
    spinner(undefined, "waiting").stop();
  });

  it("draws a bar of finished tasks with what succeeded and failed", async () => {
    const t = fakeTerminal();
    const bar = taskBar(t.stream, 3);
    bar.finished(true);
    bar.finished(false);
    await new Promise((r) => setTimeout(r, 250)); // it redraws at most 10 times a second
    expect(t.text()).toMatch(/2\/3 tasks \| ok 1 \| failed 1/);
    bar.stop();
  });
});
