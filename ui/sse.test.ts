import { describe, expect, it } from "vitest";

import { SseParser } from "./sse.js";

describe("SseParser", () => {
  it("reads events split anywhere, skips comments, joins data lines", () => {
    const text =
      ': keep-alive\n\nevent: task\ndata: {"id":"a"}\n\nevent: task\r\ndata: line1\r\ndata: line2\r\n\r\nevent: done\ndata: {"count":2}\n\n';
    for (const size of [1, 3, 7, text.length]) {
      const p = new SseParser();
      const events = [];
      for (let i = 0; i < text.length; i += size) events.push(...p.push(text.slice(i, i + size)));
      expect(events).toEqual([
        { event: "task", data: '{"id":"a"}' },
        { event: "task", data: "line1\nline2" },
        { event: "done", data: '{"count":2}' },
      ]);
    }
  });

  it("holds an event until its blank line, and names an unnamed one message", () => {
    const p = new SseParser();
    expect(p.push("data: x\n")).toEqual([]);
    expect(p.push("\n")).toEqual([{ event: "message", data: "x" }]);
  });
});
