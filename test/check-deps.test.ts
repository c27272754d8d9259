import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterEach, describe, expect, it } from "vitest";

const script = path.resolve(import.meta.dirname, "../scripts/check-deps.mjs");
const trees: string[] = [];

/** A small tree of the project's shape; `files` maps paths to their text. */
function tree(files: Record<string, string>): string {
  const root = mkdtempSync(path.join(tmpdir(), "check-deps-"));
  trees.push(root);
  const base: Record<string, string> = {
    "proto/index.ts": "export const p = 1;\n",
    "common/index.ts": 'export { p } from "../proto/index.js";\n',
    "cloud/index.ts": 'export { s } from "./state/store.js";\n',
    "cloud/state/store.ts": 'import { p } from "../../common/index.js";\nexport const s = p;\n',
    "endpoint/index.ts": 'import { p } from "../common/index.js";\nexport const e = p;\n',
    "sdk/index.ts": "export const c = 1;\n",
    "test/a.test.ts": 'import { s } from "../cloud/index.js";\nexport const t = s;\n',
  };
  for (const [p, text] of Object.entries({ ...base, ...files })) {
    mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    writeFileSync(path.join(root, p), text);
  }
  return root;
}

function check(root: string): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, [script, root], { encoding: "utf8" });
  return { code: r.status, out: r.stdout + r.stderr };
}

/** Checks a tree with `files` and expects it to fail, naming each of `problems`. */
function expectFailure(files: Record<string, string>, ...problems: string[]): void {
  const r = check(tree(files));
  expect(r.code).toBe(1);
  for (const problem of problems) expect(r.out).toContain(problem);
}

afterEach(() => {
  for (const t of trees.splice(0)) rmSync(t, { recursive: true, force: true });
});

describe("the dependency check", () => {
  it("passes a tree that keeps the rules", () => {
    const r = check(tree({}));
    expect(r.out).toContain("dependency check ok");
    expect(r.code).toBe(0);
  });

  /** Trees that break one rule: what they do, their files, and the problems the check must name. */
  const broken: Array<[string, Record<string, string>, string[]]> = [
    [
      "an import against the direction, static or dynamic",
      {
        "cloud/bad.ts": 'export const x = () => import("../endpoint/index.js");\n',
        "sdk/bad.ts": 'export type { s } from "../cloud/index.js";\n',
      },
      [
        "cloud/bad.ts imports ../endpoint/index.js: cloud/ must not depend on endpoint/",
        "sdk/bad.ts imports ../cloud/index.js: sdk/ must not depend on cloud/",
      ],
    ],
    [
      "a deep import past a folder's index.ts, from the tests too",
      { "test/deep.test.ts": 'import { s } from "../cloud/state/store.js";\nexport { s };\n' },
      ["test/deep.test.ts imports ../cloud/state/store.js: import cloud/ through cloud/index.ts"],
    ],
    [
      "a dashboard module (.tsx too) that imports the broker or the SDK",
      {
        "ui/app.tsx":
          'import { c } from "../sdk/index.js";\nimport { v } from "./view.js";\nexport const a = [c, v];\n',
        "ui/view.tsx": 'export { s as v } from "../cloud/index.js";\n',
      },
      [
        "ui/app.tsx imports ../sdk/index.js: ui/ must not depend on sdk/",
        "ui/view.tsx imports ../cloud/index.js: ui/ must not depend on cloud/",
      ],
    ],
    [
      "an import cycle",
      {
        "sdk/a.ts": 'import { b } from "./b.js";\nexport const a = () => b;\n',
        "sdk/b.ts": 'import type { a } from "./a.js";\nexport const b = 1 as unknown as typeof a;\n',
      },
      ["import cycle: sdk/a.ts ↔ sdk/b.ts"],
    ],
  ];
  it.each(broken)("fails %s", (_what, files, problems) => {
    expectFailure(files, ...problems);
  });

  it("fails a worker process that loads gRPC or NATS at start, and lets it load them lazily", () => {
    const net = {
      "common/index.ts": 'export { p } from "../proto/index.js";\nexport * from "./net.js";\n',
      "common/net.ts": 'import { connect } from "@nats-io/transport-node";\nexport { connect };\n',
    };
    expectFailure(
      {
        ...net,
        "endpoint/worker/main.ts": 'import { p } from "../../common/index.js";\nexport const w = p;\n',
      },
      "endpoint/worker/main.ts loads @nats-io/transport-node at start (endpoint/worker/main.ts → common/index.ts → common/net.ts)",
    );
    const lazy = tree({
      ...net,
      "endpoint/worker/main.ts": 'export const w = () => import("../../common/index.js");\n',
    });
    expect(check(lazy).code).toBe(0);
  });

  it("lets a test beside its code use the dev harness, but not product code", () => {
    const devkit = { "devkit/index.ts": "export const d = 1;\n" };
    const t = tree({
      ...devkit,
      "cloud/state/store.test.ts": 'import { d } from "../../devkit/index.js";\nexport const x = d;\n',
    });
    expect(check(t).code).toBe(0);
    expectFailure(
      {
        ...devkit,
        "cloud/state/use.ts": 'import { d } from "../../devkit/index.js";\nexport const x = d;\n',
      },
      "cloud/state/use.ts imports ../../devkit/index.js: cloud/ must not depend on devkit/",
    );
  });
});
