import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

import { ROOT } from "./processes.js";

let built: string | undefined;

/**
 * Compiles endpoint/ (and what it imports) to `.tmp/endpoint-test-dist/` so unit tests can spawn
 * the real manager and worker entry files: Node 20 cannot run TypeScript itself. Only that
 * folder's closure is compiled, so half-written code elsewhere in the repository cannot break
 * those tests. Output stays under the repository so `node_modules` resolves. Returns the dist root.
 */
export function buildEndpointForTests(): string {
  if (built) return built;
  const out = path.join(ROOT, ".tmp", "endpoint-test-dist");
  mkdirSync(out, { recursive: true });
  const tsconfig = path.join(ROOT, ".tmp", "tsconfig.endpoint-tests.json");
  writeFileSync(
    tsconfig,
    JSON.stringify({
      extends: path.join(ROOT, "tsconfig.json"),
      compilerOptions: {
        outDir: out,
        rootDir: ROOT,
        declaration: false,
        sourceMap: false,
        incremental: true,
        tsBuildInfoFile: path.join(out, ".tsbuildinfo"),
      },
      include: [path.join(ROOT, "endpoint/**/*.ts")],
      exclude: [path.join(ROOT, "**/*.test.ts")],
    }),
  );
  execFileSync(process.execPath, [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", tsconfig], {
    cwd: ROOT,
    stdio: "pipe",
  });
  execFileSync(process.execPath, [path.join(ROOT, "scripts/copy-assets.mjs"), out], {
    cwd: ROOT,
    stdio: "pipe",
  });
  built = out;
  return out;
}
