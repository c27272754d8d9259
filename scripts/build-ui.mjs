// Bundles the web dashboard (ui/) into dist/ui/: app.js (Preact and uPlot included, minified),
// app.css (with uPlot's style) and index.html. Everything the page loads is here: no CDN, works
// offline. The broker serves the folder at /ui/ (cloud/http/dashboard.ts).
// Usage: node scripts/build-ui.mjs [OUTDIR] (default dist/ui).
import { copyFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.resolve(root, process.argv[2] ?? "dist/ui");
mkdirSync(out, { recursive: true });

await build({
  absWorkingDir: root,
  entryPoints: { app: "ui/main.tsx" },
  outdir: out,
  bundle: true,
  format: "esm",
  target: ["es2022"],
  platform: "browser",
  jsx: "automatic",
  jsxImportSource: "preact",
  minify: true,
  legalComments: "eof",
  logLevel: "warning",
});
await build({
  absWorkingDir: root,
  entryPoints: { app: "ui/style.css" },
  outdir: out,
  bundle: true,
  minify: true,
  logLevel: "warning",
});
copyFileSync(path.join(root, "ui/index.html"), path.join(out, "index.html"));
