/**
 * The docs' TypeScript examples cannot rot: every ```ts / ```typescript block of README.md and
 * docs/*.md is type-checked, as a module of its own, against the package's public surfaces
 * (`hpc-function-fabric/sdk`, `/cloud`, `/endpoint`, mapped to their sources the way package.json
 * "exports" maps them to the build). A block fenced ```ts run needs no fabric and is also run;
 * one fenced ```ts nocheck is skipped. Examples may use two names without declaring them (see
 * `PRELUDE`): `client`, a connected Client, and `endpointId`, the id of one of the user's endpoints.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { tsBlocksOf, tsBlocksOfFiles, type DocBlock } from "./support/doc-blocks.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const OUT = path.join(ROOT, ".tmp", "docs-examples");
const PACKAGE = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
  name: string;
  exports: Record<string, string>;
};

/** What every example may take as given, declared once rather than in each block. */
const PRELUDE = `import type { Client } from "${PACKAGE.name}/sdk";
declare global {
  /** A connected client: \`Client.fromEnv()\` or \`new Client({ address, token })\`. */
  const client: Client;
  /** The id of one of the user's endpoints (\`fabric endpoint list\`). */
  const endpointId: string;
}
export {};
`;

/** package.json "exports" as source paths: "hpc-function-fabric/sdk" → "<root>/sdk/index.ts". */
function publicSources(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [sub, built] of Object.entries(PACKAGE.exports)) {
    const source = built.replace(/^\.\/dist\//, "./").replace(/\.js$/, ".ts");
    out[path.posix.join(PACKAGE.name, sub)] = path.join(ROOT, source);
  }
  return out;
}

function docFiles(): string[] {
  const docs = path.join(ROOT, "docs");
  const inDocs = existsSync(docs)
    ? readdirSync(docs)
        .filter((f) => f.endsWith(".md"))
        .sort()
        .map((f) => path.join(docs, f))
    : [];
  return [path.join(ROOT, "README.md"), ...inDocs];
}

const blockFile = (i: number, b: DocBlock) =>
  path.join(OUT, `${String(i).padStart(3, "0")}-${path.basename(b.file, ".md").toLowerCase()}.ts`);

/**
 * Writes the blocks to OUT and starts type-checking them as one program in a worker thread
 * (test/support/docs-typecheck.mjs); resolves with one line per error, naming the doc and line.
 */
function startTypeCheck(blocks: readonly DocBlock[]): { errors: Promise<string[]>; worker: Worker } {
  const prelude = path.join(OUT, "prelude.d.ts");
  writeFileSync(prelude, PRELUDE);
  const examples = blocks.map((b, i) => {
    const file = blockFile(i, b);
    writeFileSync(file, `${b.code}\n`);
    return { file, doc: b.file, line: b.line };
  });
  const paths = Object.fromEntries(Object.entries(publicSources()).map(([k, v]) => [k, [v]]));
  const worker = new Worker(new URL("./support/docs-typecheck.mjs", import.meta.url), {
    workerData: { root: ROOT, prelude, examples, paths },
  });
  const errors = new Promise<string[]>((resolve, reject) => {
    worker.once("message", (m: { errors?: string[]; failure?: string }) =>
      m.errors ? resolve(m.errors) : reject(new Error(m.failure)),
    );
    worker.once("error", reject);
    worker.once("exit", (code) =>
      reject(new Error(`the type-check worker exited (${code}) without an answer`)),
    );
  });
  return { errors, worker };
}

/** Runs a `run` block: its public imports point at the sources, then the module is imported. */
async function run(block: DocBlock, i: number): Promise<void> {
  let code = block.code;
  for (const [name, source] of Object.entries(publicSources())) {
    code = code.replaceAll(`"${name}"`, JSON.stringify(source));
  }
  const file = path.join(OUT, `run-${path.basename(blockFile(i, block))}`);
  writeFileSync(file, `${code}\n`);
  await import(pathToFileURL(file).href);
}

describe("the docs' TypeScript examples", () => {
  const blocks = tsBlocksOfFiles(docFiles(), (f) => path.relative(ROOT, f));
  let check: ReturnType<typeof startTypeCheck>;

  beforeAll(() => {
    rmSync(OUT, { recursive: true, force: true });
    mkdirSync(OUT, { recursive: true });
    // Compiles while the runnable blocks below run.
    check = startTypeCheck(blocks.filter((b) => b.mode !== "nocheck"));
  });

  afterAll(async () => {
    await check?.worker.terminate();
  });

  it("are found in README.md and docs/", () => {
    expect(blocks.filter((b) => b.file === "README.md").length).toBeGreaterThan(0);
    expect(blocks.filter((b) => b.file.startsWith("docs")).length).toBeGreaterThan(0);
  });

  const runnable = blocks.map((b, i) => ({ b, i })).filter(({ b }) => b.mode === "run");
  it.each(runnable.map(({ b, i }) => [`${b.file}:${b.line}`, b, i] as const))(
    "%s runs",
    async (_where, block, i) => {
      await run(block, i);
    },
  );

  it("type-check against the public surfaces", async () => {
    const errors = await check.errors;
    expect(errors, errors.join("\n")).toEqual([]);
  }, 30_000);
});

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens. */
function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, "")
    .replace(/ /g, "-");
}

describe("the docs' links", () => {
  it("point at files that exist, and at headings those files have", () => {
    const broken: string[] = [];
    for (const file of docFiles()) {
      const text = readFileSync(file, "utf8").replace(/^```[\s\S]*?^```/gm, "");
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue;
        const [rel = "", hash] = target.split("#");
        const linked = rel === "" ? file : path.resolve(path.dirname(file), rel);
        if (!existsSync(linked)) broken.push(`${path.relative(ROOT, file)}: ${target} (no such file)`);
        else if (hash !== undefined && linked.endsWith(".md")) {
          const headings = [...readFileSync(linked, "utf8").matchAll(/^#+ (.+)$/gm)].map((h) =>
            anchorOf(h[1]!),
          );
          if (!headings.includes(hash))
            broken.push(`${path.relative(ROOT, file)}: ${target} (no such heading)`);
        }
      }
    }
    expect(broken, broken.join("\n")).toEqual([]);
  });
});

describe("tsBlocksOf", () => {
  it("takes ts and typescript blocks with their mode and first line, and nothing else", () => {
    const md = [
      "# T", // 1
      "```ts", // 2
      "const a = 1;", // 3
      "```", // 4
      "```sh", // 5
      "echo", // 6
      "```", // 7
      "- item", // 8
      "  ```typescript run", // 9
      "  const b = 2;", // 10
      "  ```", // 11
      "```ts nocheck", // 12
      "x", // 13
      "```", // 14
    ].join("\n");
    expect(tsBlocksOf(md, "x.md")).toEqual([
      { file: "x.md", line: 3, mode: "check", code: "const a = 1;" },
      { file: "x.md", line: 10, mode: "run", code: "const b = 2;" },
      { file: "x.md", line: 13, mode: "nocheck", code: "x" },
    ]);
  });

  it("refuses an unknown word after the language, so a typo skips nothing", () => {
    expect(() => tsBlocksOf("```ts nochek\nx\n```\n", "x.md")).toThrow(/x\.md:1: unknown word "nochek"/);
  });
});
