// Keeps the tree's rooms honest. Every import counts: static, type-only, re-exports and import().
//
// 1. Direction: proto ← common ← {cloud, endpoint, sdk} ← devkit ← {bench, test, examples}.
//    The broker (cloud/), the agent (endpoint/) and the client (sdk/) never import one another.
// 2. Surfaces: a file imports another top-level folder only through that folder's index.ts, or
//    its internal.ts (what siblings, the dev harness and tests need beyond the public surface).
// 3. No import cycles among the project's own modules.
//
// Usage: node scripts/check-deps.mjs [ROOT]   (exits 1 and names each broken rule)
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

import ts from "typescript";

const root = path.resolve(process.argv[2] ?? path.join(path.dirname(new URL(import.meta.url).pathname), ".."));

/** What each top-level folder may import, besides itself. */
const allowed = {
  proto: [],
  common: ["proto"],
  cloud: ["proto", "common"],
  endpoint: ["proto", "common"],
  sdk: ["proto", "common"],
  devkit: ["proto", "common", "cloud", "endpoint", "sdk"],
  bench: ["proto", "common", "cloud", "endpoint", "sdk", "devkit"],
  examples: ["proto", "common", "sdk", "devkit"],
  test: ["proto", "common", "cloud", "endpoint", "sdk", "devkit"],
};
/** The files through which other folders may enter a folder. */
const surfaces = ["index.ts", "internal.ts"];
const skipped = new Set(["node_modules", "dist", "gen", ".git", ".tmp"]);

function* sources(dir) {
  for (const name of readdirSync(dir)) {
    if (skipped.has(name)) continue;
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) yield* sources(p);
    else if (p.endsWith(".ts") && !p.endsWith(".d.ts")) yield p;
  }
}

/** The project file a relative specifier names, or undefined for a package or a file outside the tree. */
function resolve(from, spec) {
  if (!spec.startsWith(".")) return undefined;
  let target = path.resolve(path.dirname(from), spec);
  if (target.endsWith(".js")) target = target.slice(0, -3) + ".ts";
  else if (existsSync(target) && statSync(target).isDirectory()) target = path.join(target, "index.ts");
  else if (!target.endsWith(".ts")) target += ".ts";
  return target;
}

const rel = (p) => path.relative(root, p);
const topOf = (p) => rel(p).split(path.sep)[0];
const problems = [];
const graph = new Map();

for (const folder of Object.keys(allowed)) {
  const dir = path.join(root, folder);
  if (!existsSync(dir)) continue;
  for (const file of sources(dir)) {
    const edges = [];
    graph.set(file, edges);
    const { importedFiles } = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
    for (const { fileName: spec } of importedFiles) {
      const target = resolve(file, spec);
      if (!target) continue;
      const top = topOf(target);
      if (top === folder) {
        edges.push(target);
        continue;
      }
      if (!(top in allowed)) continue; // generated code under proto/gen is reached through proto/index.ts
      edges.push(target);
      const where = `${rel(file)} imports ${spec}`;
      if (!allowed[folder].includes(top)) {
        problems.push(`${where}: ${folder}/ must not depend on ${top}/`);
      } else if (path.dirname(target) !== path.join(root, top) || !surfaces.includes(path.basename(target))) {
        problems.push(`${where}: import ${top}/ through ${top}/index.ts or ${top}/internal.ts, not a file inside it`);
      }
    }
  }
}

// Cycles: Tarjan's strongly connected components over the import graph.
let index = 0;
const stack = [];
const state = new Map();
function connect(v) {
  const s = { index, low: index, onStack: true };
  index++;
  state.set(v, s);
  stack.push(v);
  for (const w of graph.get(v) ?? []) {
    if (!graph.has(w)) continue;
    const t = state.get(w);
    if (!t) {
      connect(w);
      s.low = Math.min(s.low, state.get(w).low);
    } else if (t.onStack) s.low = Math.min(s.low, t.index);
  }
  if (s.low === s.index) {
    const component = [];
    let w;
    do {
      w = stack.pop();
      state.get(w).onStack = false;
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || (graph.get(v) ?? []).includes(v)) {
      problems.push(`import cycle: ${component.map(rel).sort().join(" ↔ ")}`);
    }
  }
}
for (const v of graph.keys()) if (!state.has(v)) connect(v);

for (const p of problems) console.error(p);
if (problems.length > 0) {
  console.error(`dependency check: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`dependency check ok: ${graph.size} files, directions, surfaces and no cycles`);
