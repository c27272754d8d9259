/* eslint-disable @typescript-eslint/unbound-method -- these tests detach methods on purpose: that is what users register */
import { describe, expect, it } from "vitest";

import { FabricError } from "../common/client.js";
import { functionExpression, isValidEntryPoint, sourceOfFunction, sourceOfText } from "./function-source.js";

/** Evaluates a normalized source the way the worker does (a function body) and calls its entry point. */
async function call(src: { source: string; entryPoint: string }, ...args: unknown[]): Promise<unknown> {
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- mirrors how the worker loads a function
  const factory = new Function("require", `${src.source}\n;return ${src.entryPoint};`) as () => (
    ...a: unknown[]
  ) => unknown;
  const fn = factory();
  return await fn(...args);
}

function invalid(f: () => unknown): FabricError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(FabricError);
    expect((err as FabricError).code).toBe("INVALID_ARGUMENT");
    return err as FabricError;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("sourceOfFunction", () => {
  it("wraps a named function declaration under its own name", async () => {
    const s = sourceOfFunction(function add(a: number, b: number) {
      return a + b;
    });
    expect(s.entryPoint).toBe("add");
    expect(s.source.startsWith("const add = (function add(")).toBe(true);
    expect(await call(s, 2, 40)).toBe(42);
  });

  it("keeps recursion by name working", async () => {
    const s = sourceOfFunction(function fact(n: number): number {
      return n <= 1 ? 1 : n * fact(n - 1);
    });
    expect(await call(s, 5)).toBe(120);
  });

  it("handles arrows, named by the variable they were assigned to", async () => {
    const triple = (x: number) => x * 3;
    const s = sourceOfFunction(triple);
    expect(s.entryPoint).toBe("triple");
    expect(await call(s, 4)).toBe(12);
  });

  it("names anonymous functions main", async () => {
    const s = sourceOfFunction([(x: number) => x + 1][0]!);
    expect(s.entryPoint).toBe("main");
    expect(await call(s, 1)).toBe(2);
  });

  it("handles async functions and async arrows", async () => {
    const s1 = sourceOfFunction(async function later(x: number) {
      await new Promise((r) => setTimeout(r, 1));
      return x;
    });
    expect(await call(s1, 7)).toBe(7);
    const s2 = sourceOfFunction(async (x: number) => x * 2);
    expect(await call(s2, 7)).toBe(14);
  });

  it("turns method shorthand into a function expression", async () => {
    const o = {
      scale(x: number) {
        return x * 10;
      },
      async fetchIt(x: number) {
        return x + 0.5;
      },
      *gen() {
        yield 1;
      },
      delete(x: number) {
        return -x;
      },
    };
    const s = sourceOfFunction(o.scale);
    expect(s.entryPoint).toBe("scale");
    expect(s.source).toContain("function (x)");
    expect(await call(s, 3)).toBe(30);
    expect(await call(sourceOfFunction(o.fetchIt), 1)).toBe(1.5);
    const g = sourceOfFunction(o.gen);
    expect(g.source).toContain("function* (");
    // A method called `delete` cannot name a binding: the entry point falls back to main.
    const d = sourceOfFunction(o.delete);
    expect(d.entryPoint).toBe("main");
    expect(await call(d, 3)).toBe(-3);
  });

  it("tells a method named async from an async arrow", async () => {
    const o = {
      async(x: number) {
        return x + 100;
      },
    };
    expect(await call(sourceOfFunction(o.async), 1)).toBe(101);
  });

  it("handles a trailing line comment in the function's last line", async () => {
    // eslint-disable-next-line @typescript-eslint/no-implied-eval -- a source whose last line ends in a comment
    const s = sourceOfFunction(new Function("x", "return x // trailing"));
    expect(s.entryPoint).toBe("anonymous");
    expect(await call(s, 9)).toBe(9);
  });

  it("refuses native and bound functions", () => {
    expect(invalid(() => sourceOfFunction(Math.max)).message).toMatch(/native or bound/);
    const bound = function f(this: unknown) {
      return this;
    }.bind(null);
    expect(invalid(() => sourceOfFunction(bound)).message).toMatch(/native or bound/);
  });

  it("refuses classes, getters and non-functions", () => {
    class Foo {}
    expect(invalid(() => sourceOfFunction(Foo)).message).toMatch(/class/);
    const getter = Object.getOwnPropertyDescriptor(
      {
        get x() {
          return 1;
        },
      },
      "x",
    )!.get!;
    expect(invalid(() => sourceOfFunction(getter)).message).toMatch(/getter/);
    invalid(() => sourceOfFunction("function f() {}"));
  });

  it("refuses methods with computed names", () => {
    const key = "dyn";
    const o = {
      [key](x: number) {
        return x;
      },
    };
    expect(invalid(() => sourceOfFunction(o[key])).message).toMatch(/computed name/);
  });
});

describe("functionExpression", () => {
  it("leaves expressions alone and converts quoted method keys", () => {
    expect(functionExpression("x => x")).toBe("x => x");
    expect(functionExpression(`"my key"(a) { return a; }`)).toBe("function (a) { return a; }");
    expect(functionExpression("async *items() { yield 1; }")).toBe("async function* () { yield 1; }");
  });
});

describe("sourceOfText", () => {
  it("accepts a script that defines the entry point", () => {
    expect(sourceOfText("function main(x) { return x; }", "main")).toEqual({
      source: "function main(x) { return x; }",
      entryPoint: "main",
    });
  });

  it("drops `export` from declarations so a module file works as a script", async () => {
    const s = sourceOfText("export const k = 2;\nexport async function go(x) { return x * k; }\n", "go");
    expect(s.source).not.toMatch(/export/);
    expect(await call(s, 21)).toBe(42);
  });

  it("refuses import, export default, bad and missing entry points", () => {
    expect(invalid(() => sourceOfText('import fs from "node:fs";\nfunction f() {}', "f")).message).toMatch(
      /require/,
    );
    invalid(() => sourceOfText("export default function () {}", "main"));
    invalid(() => sourceOfText("function f() {}", "not valid"));
    invalid(() => sourceOfText("function f() {}", "class"));
    expect(invalid(() => sourceOfText("function f() {}", "g")).message).toMatch(/not defined/);
    invalid(() => sourceOfText("   ", "f"));
  });

  it("does not mistake a property access for a definition of the entry point", () => {
    invalid(() => sourceOfText("const x = obj.main;", "main"));
  });
});

describe("isValidEntryPoint", () => {
  it("accepts identifiers and refuses reserved words", () => {
    expect(isValidEntryPoint("main")).toBe(true);
    expect(isValidEntryPoint("$x_1")).toBe(true);
    expect(isValidEntryPoint("1x")).toBe(false);
    expect(isValidEntryPoint("await")).toBe(false);
    expect(isValidEntryPoint("default")).toBe(false);
  });
});
