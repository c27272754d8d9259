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

afterEach(() => {
  for (const t of trees.splice(0)) rmSync(t, { recursive: true, force: true });
});

describe("the dependency check", () => {
  it("passes a tree that keeps the rules", () => {
    const r = check(tree({}));
    expect(r.out).toContain("dependency check ok");
    expect(r.code).toBe(0);
  });

  it("fails an import against the direction, static or dynamic", () => {
    const r = check(
      tree({
        "cloud/bad.ts": 'export const x = () => import("../endpoint/index.js");\n',
        "sdk/bad.ts": 'export type { s } from "../cloud/index.js";\n',
      }),
    );
    expect(r.code).toBe(1);
    expect(r.out).toContain("cloud/bad.ts imports ../endpoint/index.js: cloud/ must not depend on endpoint/");
    expect(r.out).toContain("sdk/bad.ts imports ../cloud/index.js: sdk/ must not depend on cloud/");
  });

  it("fails a deep import past a folder's index.ts, from the tests too", () => {
    const r = check(
      tree({ "test/deep.test.ts": 'import { s } from "../cloud/state/store.js";\nexport { s };\n' }),
    );
    expect(r.code).toBe(1);
    expect(r.out).toContain(
      "test/deep.test.ts imports ../cloud/state/store.js: import cloud/ through cloud/index.ts",
    );
  });

  it("fails an import cycle", () => {
    const r = check(
      tree({
        "sdk/a.ts": 'import { b } from "./b.js";\nexport const a = () => b;\n',
        "sdk/b.ts": 'import type { a } from "./a.js";\nexport const b = 1 as unknown as typeof a;\n',
      }),
    );
    expect(r.code).toBe(1);
    expect(r.out).toContain("import cycle: sdk/a.ts ↔ sdk/b.ts");
  });

  it("fails a worker process that loads gRPC or NATS at start, and lets it load them lazily", () => {
    const heavy = tree({
      "common/index.ts": 'export { p } from "../proto/index.js";\nexport * from "./net.js";\n',
      "common/net.ts": 'import { connect } from "@nats-io/transport-node";\nexport { connect };\n',
      "endpoint/worker/main.ts": 'import { p } from "../../common/index.js";\nexport const w = p;\n',
    });
    const r = check(heavy);
    expect(r.code).toBe(1);
    expect(r.out).toContain(
      "endpoint/worker/main.ts loads @nats-io/transport-node at start (endpoint/worker/main.ts → common/index.ts → common/net.ts)",
    );
    const lazy = tree({
      "common/index.ts": 'export { p } from "../proto/index.js";\nexport * from "./net.js";\n',
      "common/net.ts": 'import { connect } from "@nats-io/transport-node";\nexport { connect };\n',
      "endpoint/worker/main.ts": 'export const w = () => import("../../common/index.js");\n',
    });
    expect(check(lazy).code).toBe(0);
  });

  it("lets a test beside its code use the dev harness, but not product code", () => {
    const t = tree({
      "devkit/index.ts": "export const d = 1;\n",
      "cloud/state/store.test.ts": 'import { d } from "../../devkit/index.js";\nexport const x = d;\n',
    });
    expect(check(t).code).toBe(0);
    const bad = tree({
      "devkit/index.ts": "export const d = 1;\n",
      "cloud/state/use.ts": 'import { d } from "../../devkit/index.js";\nexport const x = d;\n',
    });
    const r = check(bad);
    expect(r.code).toBe(1);
    expect(r.out).toContain(
      "cloud/state/use.ts imports ../../devkit/index.js: cloud/ must not depend on devkit/",
    );
  });
});
