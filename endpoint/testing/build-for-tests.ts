import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

let built: string | undefined;

/**
 * Compiles endpoint/ (and what it imports) to `.tmp/endpoint-test-dist/` so tests can spawn the
 * real manager and worker entry files: Node 20 cannot run TypeScript itself. Only this folder's
 * closure is compiled, so half-written code elsewhere in the repository cannot break these tests.
 * Output stays under the repository so `node_modules` resolves. Returns the dist root.
 */
export function buildEndpointForTests(): string {
  if (built) return built;
  const out = path.join(REPO_ROOT, ".tmp", "endpoint-test-dist");
  mkdirSync(out, { recursive: true });
  const tsconfig = path.join(REPO_ROOT, ".tmp", "tsconfig.endpoint-tests.json");
  writeFileSync(
    tsconfig,
    JSON.stringify({
      extends: path.join(REPO_ROOT, "tsconfig.json"),
      compilerOptions: {
        outDir: out,
        rootDir: REPO_ROOT,
        declaration: false,
        sourceMap: false,
        incremental: true,
        tsBuildInfoFile: path.join(out, ".tsbuildinfo"),
      },
      include: [path.join(REPO_ROOT, "endpoint/**/*.ts")],
      exclude: [path.join(REPO_ROOT, "**/*.test.ts")],
    }),
  );
  execFileSync(process.execPath, [path.join(REPO_ROOT, "node_modules/typescript/bin/tsc"), "-p", tsconfig], {
    cwd: REPO_ROOT,
    stdio: "pipe",
  });
  built = out;
  return out;
}
