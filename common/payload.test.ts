import { describe, expect, it } from "vitest";

import {
  fitsInline,
  inlineBytes,
  inlineLimitFor,
  inlinePayload,
  isStored,
  storedPayload,
} from "./payload.js";

describe("the payload rule", () => {
  // A payload stays inline up to the limit and the room left, and is stored past either.
  it.each([
    [100, 256, undefined, true],
    [256, 256, undefined, true],
    [257, 256, undefined, false],
    [200, 256, 199, false],
    [0, 256, 0, true],
  ])("%i bytes with a limit of %i and %s bytes of room: inline %s", (bytes, limit, room, inline) => {
    expect(fitsInline(bytes, limit, room)).toBe(inline);
  });

  it("lowers the inline limit to the server's message size, never below 1 KiB", () => {
    expect(inlineLimitFor(262_144, 1_048_576, 65_536)).toBe(262_144);
    expect(inlineLimitFor(262_144, 131_072, 65_536)).toBe(65_536);
    expect(inlineLimitFor(262_144, 32_768, 65_536)).toBe(1024);
  });

  it("builds inline and stored payloads, and copies inline bytes out", () => {
    const json = new TextEncoder().encode("[1,2]");
    expect(inlinePayload(json)).toEqual({ json, objectRef: "", size: 5 });
    const stored = storedPayload("results.t1", 1_000_000);
    expect(stored).toEqual({ json: new Uint8Array(0), objectRef: "results.t1", size: 1_000_000 });
    expect(isStored(stored)).toBe(true);
    expect(isStored(inlinePayload(json))).toBe(false);
    expect(isStored(undefined)).toBe(false);
    const copy = inlineBytes(inlinePayload(json));
    expect(copy.toString()).toBe("[1,2]");
    json[0] = 0;
    expect(copy.toString()).toBe("[1,2]");
    expect(inlineBytes(undefined).length).toBe(0);
  });
});
