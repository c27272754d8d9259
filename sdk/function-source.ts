import { Script } from "node:vm";

import { FabricError, MAX_TIMEOUT_S } from "../common/client.js";
import type { FunctionSpec } from "../proto/index.js";
import type { AnyFunction, PythonSource, RegisterOptions } from "./types.js";

/**
 * What the broker stores for a JavaScript function: script source that defines a binding named
 * `entryPoint`, which the worker calls with the task's arguments.
 */
export interface JsSource {
  readonly source: string;
  readonly entryPoint: string;
}

const IDENT_RE = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

// Words that cannot name a `const` binding (strict mode), so cannot be an entry point.
// prettier-ignore
const RESERVED = new Set([
  "await", "break", "case", "catch", "class", "const", "continue", "debugger", "default", "delete", "do",
  "else", "enum", "export", "extends", "false", "finally", "for", "function", "if", "implements", "import",
  "in", "instanceof", "interface", "let", "new", "null", "package", "private", "protected", "public",
  "return", "static", "super", "switch", "this", "throw", "true", "try", "typeof", "var", "void", "while",
  "with", "yield", "arguments", "eval", "undefined", "NaN", "Infinity",
]);

/** Whether `name` can be the entry point of a JS function (a plain identifier, not a reserved word). */
export function isValidEntryPoint(name: string): boolean {
  return IDENT_RE.test(name) && !RESERVED.has(name);
}

/** Compiles without running: a syntax check that never executes user code. */
function compiles(code: string): boolean {
  try {
    new Script(code);
    return true;
  } catch {
    return false;
  }
}

// `name(`, `async name(`, `*name(`, `async *name(`, `"quoted name"(`, `123(`: the key of a method
// written in shorthand inside an object literal or a class body.
const METHOD_RE =
  /^(async\s+)?(\*\s*)?([A-Za-z_$][A-Za-z0-9_$]*|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\d+)\s*\(/;

/**
 * Turns the text of a function (`fn.toString()`) into an expression that evaluates to it.
 * Function expressions and arrows already are one; method shorthand (`foo(a) {...}`) is not, and
 * becomes an anonymous `function` (a shorthand method's own name is not in scope in its body, so
 * dropping it changes nothing, and it may be a word like `delete` that a function cannot be named).
 */
export function functionExpression(text: string): string {
  const src = text.trim();
  if (/\{\s*\[native code\]\s*\}$/.test(src)) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      "cannot register a native or bound function: its source is not available; register the original function",
    );
  }
  if (/^class\b/.test(src)) {
    throw new FabricError("INVALID_ARGUMENT", "cannot register a class: register a function instead");
  }
  if (/^(get|set|static)\s+[^\s(]/.test(src)) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      "cannot register a getter, setter or static block: register a function",
    );
  }
  // Function expressions, `function` declarations (which become named expressions) and arrows.
  if (compiles(`(${src}\n);`)) return src;
  if (src.startsWith("[")) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      "cannot register a method with a computed name: assign it to a named function and register that",
    );
  }
  const m = METHOD_RE.exec(src);
  if (m) {
    const converted = `${m[1] ? "async " : ""}function${m[2] ? "*" : ""} (${src.slice(m[0].length)}`;
    if (compiles(`(${converted}\n);`)) return converted;
  }
  throw new FabricError(
    "INVALID_ARGUMENT",
    "cannot register this function: its source is not a function the worker can evaluate " +
      "(use a function declaration, a function expression, an arrow function or a method)",
  );
}

/**
 * Builds the source the worker evaluates for a real JS function: `const <entry> = (<fn source>);`.
 * The entry point is the function's name when it is a usable identifier, else `main`.
 *
 * The function must be self-contained: it is sent as text, so it cannot see variables, imports or
 * other functions of the module that defined it. It may `require` Node built-ins.
 */
export function sourceOfFunction(fn: unknown): JsSource {
  if (typeof fn !== "function") {
    throw new FabricError("INVALID_ARGUMENT", `expected a function, got ${fn === null ? "null" : typeof fn}`);
  }
  let text: string;
  try {
    text = Function.prototype.toString.call(fn);
  } catch (err) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      `cannot read the source of this function: ${(err as Error).message}`,
    );
  }
  const expr = functionExpression(text);
  const name = (fn as { name?: unknown }).name;
  const entryPoint = typeof name === "string" && isValidEntryPoint(name) ? name : "main";
  // The newline keeps a trailing `// comment` in the function's last line from eating the `);`.
  return { source: `const ${entryPoint} = (${expr}\n);\n`, entryPoint };
}

/**
 * Checks a source text given as a string (a file's contents, say) and its entry point, and makes
 * the common module forms usable as a script: `export function f` / `export const f` lose their
 * `export`. Module-only syntax the worker cannot evaluate (`import`, `export default`, `export {}`)
 * is refused with a message saying what to do instead.
 */
export function sourceOfText(source: string, entryPoint: string): JsSource {
  if (typeof source !== "string" || source.trim() === "") {
    throw new FabricError("INVALID_ARGUMENT", "a JS function needs non-empty source text");
  }
  if (typeof entryPoint !== "string" || !isValidEntryPoint(entryPoint)) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      `entry point ${JSON.stringify(entryPoint)} is not a valid JavaScript identifier`,
    );
  }
  if (/^\s*import\s*[\w{*'"]/m.test(source)) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      "the source uses `import`, but it is evaluated as a script: use `require(...)` inside the function instead",
    );
  }
  if (/^\s*export\s+(default\b|\{|\*)/m.test(source)) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      "the source uses `export default` or `export {...}`, but it is evaluated as a script: " +
        "declare the entry point as a plain named function",
    );
  }
  const script = source.replace(/^(\s*)export\s+(?=(async\s+)?function\b|const\b|let\b|var\b)/gm, "$1");
  if (!new RegExp(`(^|[^A-Za-z0-9_$.])${entryPoint.replace(/\$/g, "\\$")}([^A-Za-z0-9_$]|$)`).test(script)) {
    throw new FabricError("INVALID_ARGUMENT", `entry point ${entryPoint} is not defined in the source`);
  }
  return { source: script, entryPoint };
}

/**
 * The kind part of a FunctionSpec for what `registerFunction` was given: a JavaScript function,
 * JavaScript text and its entry point, or Python source (`{ python: { … } }`).
 */
export function functionKindOf(fn: AnyFunction | JsSource | PythonSource): {
  readonly kind: NonNullable<FunctionSpec["kind"]>;
  readonly entryPoint: string;
} {
  if (typeof fn === "object" && fn !== null && "python" in fn) {
    const { source, entryPoint, minVersion = "" } = fn.python ?? {};
    if (typeof source !== "string" || source.trim() === "")
      throw new FabricError("INVALID_ARGUMENT", "a Python function needs its source (python.source)");
    if (typeof entryPoint !== "string" || entryPoint === "")
      throw new FabricError("INVALID_ARGUMENT", "a Python function needs an entry point (python.entryPoint)");
    return { kind: { $case: "python", value: { source, entryPoint, minVersion } }, entryPoint };
  }
  const js = typeof fn === "function" ? sourceOfFunction(fn) : sourceOfText(fn?.source, fn?.entryPoint);
  return {
    kind: { $case: "js", value: { source: js.source, entryPoint: js.entryPoint } },
    entryPoint: js.entryPoint,
  };
}

/** The retry and timeout fields of a FunctionSpec, checked. */
export function limitsOf(options: RegisterOptions): Pick<FunctionSpec, "maxRetries" | "timeoutS"> {
  const out: { maxRetries?: number; timeoutS?: number } = {};
  for (const [field, value] of [
    ["maxRetries", options.maxRetries],
    ["timeoutSeconds", options.timeoutSeconds],
  ] as const) {
    if (value === undefined) continue;
    const most = field === "maxRetries" ? 100 : MAX_TIMEOUT_S;
    if (!Number.isInteger(value) || value < 0 || value > most) {
      throw new FabricError(
        "INVALID_ARGUMENT",
        `${field} must be a whole number from 0 to ${most}, got ${value}`,
      );
    }
  }
  if (options.maxRetries) out.maxRetries = options.maxRetries;
  if (options.timeoutSeconds) out.timeoutS = options.timeoutSeconds;
  return out;
}
