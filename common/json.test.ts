import { describe, expect, it } from "vitest";

import { FabricError } from "./errors.js";
import { checkJsonSyntax, decodeJsonWithBytes, encodeJsonWithBytes, MAX_JSON_DEPTH } from "./json.js";

const enc = new TextEncoder();

function agreesWithJsonParse(text: string): void {
  let parsed = true;
  try {
    JSON.parse(text);
  } catch {
    parsed = false;
  }
  let checked = true;
  try {
    checkJsonSyntax(enc.encode(text), "x");
  } catch (err) {
    expect(err).toBeInstanceOf(FabricError);
    checked = false;
  }
  expect({ text, checked }).toEqual({ text, checked: parsed });
}

/** A random JSON value of bounded size. */
function randomValue(depth = 0): unknown {
  const r = Math.random();
  if (depth > 4 || r < 0.3) {
    const scalars = [0, -1.5e-7, 42, 3.25, true, false, null, "", 'a"b\\c\n\u0001é😀', "\u2028"];
    return scalars[Math.floor(Math.random() * scalars.length)];
  }
  if (r < 0.65) return Array.from({ length: Math.floor(Math.random() * 4) }, () => randomValue(depth + 1));
  return Object.fromEntries(
    Array.from({ length: Math.floor(Math.random() * 4) }, (_, k) => [`k${k}"\\`, randomValue(depth + 1)]),
  );
}

describe("checkJsonSyntax", () => {
  it("accepts exactly what JSON.parse accepts, on random values and their mutations", () => {
    const alphabet = ' \t\n{}[],:"\\-+.0123456789eEtrufalsn\u0001x';
    for (let round = 0; round < 3000; round++) {
      const text = JSON.stringify(randomValue()) ?? "null";
      agreesWithJsonParse(text);
      const chars = [...text];
      const at = Math.floor(Math.random() * (chars.length + 1));
      const op = Math.random();
      const ch = alphabet[Math.floor(Math.random() * alphabet.length)]!;
      if (op < 0.33) chars.splice(at, 1);
      else if (op < 0.66) chars.splice(at, 0, ch);
      else chars[at] = ch;
      agreesWithJsonParse(chars.join(""));
    }
    for (const t of [
      "",
      " ",
      "01",
      "1.",
      ".5",
      "-",
      "1e",
      "1e+",
      "[1,]",
      "{,}",
      '{"a"}',
      '{"a":}',
      "[",
      "nul",
      "truex",
      '"\\x"',
      '"\\u12"',
      "1 2",
      "[1] x",
      "-0",
      "0.0e-0",
      " [ ] ",
    ]) {
      agreesWithJsonParse(t);
    }
  });

  it("names the top-level kind", () => {
    expect(checkJsonSyntax(enc.encode(" [1] "), "x")).toBe("array");
    expect(checkJsonSyntax(enc.encode('{"a":1}'), "x")).toBe("object");
    expect(checkJsonSyntax(enc.encode('"s"'), "x")).toBe("scalar");
  });

  it("refuses invalid UTF-8 and nesting past the limit, naming what and where", () => {
    expect(() => checkJsonSyntax(Uint8Array.from([0x5b, 0x22, 0xff, 0x22, 0x5d]), "tasks[0].args")).toThrow(
      /tasks\[0\]\.args is not valid UTF-8/,
    );
    const deep = "[".repeat(MAX_JSON_DEPTH) + "]".repeat(MAX_JSON_DEPTH);
    expect(checkJsonSyntax(enc.encode(deep), "x")).toBe("array");
    const deeper = "[".repeat(MAX_JSON_DEPTH + 1) + "]".repeat(MAX_JSON_DEPTH + 1);
    expect(() => checkJsonSyntax(enc.encode(deeper), "x")).toThrow(/nested deeper than 512 levels/);
    expect(() => checkJsonSyntax(enc.encode("[1,2"), "x")).toThrow(
      /x is not valid JSON: unexpected end at byte 4/,
    );
  });

  it("checks 10 MiB of tiny values, and finds the one bad byte at the end", () => {
    const big = enc.encode(`[${"{},".repeat(3_500_000)}{}]`);
    expect(checkJsonSyntax(big, "x")).toBe("array");
    big[big.length - 1] = 0x7d;
    expect(() => checkJsonSyntax(big, "x")).toThrow(/expected ',' or '\]' at byte 10500003/);
  });
});

describe("bytes inside JSON payloads", () => {
  const text = (b: Uint8Array) => new TextDecoder().decode(b);

  it('sends a Uint8Array anywhere as {"$bytes": base64}, leaving the caller\'s value untouched', () => {
    const args = [Buffer.from("abc"), { nested: [new Uint8Array([255, 0])] }, "plain"];
    expect(text(encodeJsonWithBytes(args))).toBe(
      '[{"$bytes":"YWJj"},{"nested":[{"$bytes":"/wA="}]},"plain"]',
    );
    expect(Buffer.isBuffer(args[0])).toBe(true);
  });

  it("gives such an object back as a Buffer; other objects (more keys, non-string) stay as they are", () => {
    const v = decodeJsonWithBytes(
      new TextEncoder().encode('{"a":{"$bytes":"YWJj"},"b":{"$bytes":"x","c":1},"d":{"$bytes":3}}'),
    ) as Record<string, unknown>;
    expect(v["a"]).toEqual(Buffer.from("abc"));
    expect(v["b"]).toEqual({ $bytes: "x", c: 1 });
    expect(v["d"]).toEqual({ $bytes: 3 });
  });

  it("leaves a cyclic value for JSON to refuse", () => {
    const cyclic: Record<string, unknown> = {};
    cyclic["self"] = cyclic;
    expect(() => encodeJsonWithBytes([cyclic], "args")).toThrow(/args cannot be encoded as JSON/);
  });
});
