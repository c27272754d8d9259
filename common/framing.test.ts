import { PassThrough } from "node:stream";

import { describe, expect, it } from "vitest";

import { FrameDecoder, encodeFrame, readMessages } from "./framing.js";

const text = (s: string) => new TextEncoder().encode(s);

describe("frames", () => {
  it("splits a stream into frames however its chunks fall", () => {
    const frames: string[] = [];
    const decoder = new FrameDecoder((f) => frames.push(Buffer.from(f).toString()));
    const bytes = Buffer.concat([
      encodeFrame(text("one")),
      encodeFrame(text("")),
      encodeFrame(text("three")),
    ]);
    for (let i = 0; i < bytes.length; i += 3) decoder.push(bytes.subarray(i, i + 3));
    expect(frames).toEqual(["one", "", "three"]);
    expect(() => new FrameDecoder(() => undefined, 2).push(encodeFrame(text("abc")))).toThrow(
      "frame of 3 bytes exceeds the 2-byte limit",
    );
  });

  it("decodes each frame as a message, and names an undecodable frame or broken framing", () => {
    const stream = new PassThrough();
    const messages: string[] = [];
    const problems: string[] = [];
    const type = {
      decode(frame: Uint8Array): string {
        const s = Buffer.from(frame).toString();
        if (s === "bad") throw new Error("not a message");
        return s;
      },
    };
    readMessages(stream, type, {
      onMessage: (msg) => messages.push(msg),
      onBadFrame: (err, problem) => problems.push(`${problem}: ${err.message}`),
    });
    stream.write(Buffer.concat([encodeFrame(text("a")), encodeFrame(text("bad")), encodeFrame(text("b"))]));
    const oversized = Buffer.alloc(4);
    oversized.writeUInt32BE(0xffffffff);
    stream.write(oversized);
    expect(messages).toEqual(["a", "b"]);
    expect(problems).toEqual([
      "undecodable frame: not a message",
      "protocol error: frame of 4294967295 bytes exceeds the 67108864-byte limit",
    ]);
  });
});
