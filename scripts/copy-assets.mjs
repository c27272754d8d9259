// Copies the files a build needs beside its JavaScript that tsc does not emit: the Python worker
// runtime (endpoint/worker/python/fabric_runtime.py). Usage: node scripts/copy-assets.mjs [OUTDIR]
// (default dist/).
import { copyFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.resolve(root, process.argv[2] ?? "dist");
const ASSETS = ["endpoint/worker/python/fabric_runtime.py"];

for (const rel of ASSETS) {
  const to = path.join(out, rel);
  mkdirSync(path.dirname(to), { recursive: true });
  copyFileSync(path.join(root, rel), to);
}
