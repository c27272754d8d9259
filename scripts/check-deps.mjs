// Keeps the tree's rooms honest. Every import counts: static, type-only, re-exports and import().
//
// 1. Direction: proto ← common ← {cloud, endpoint, sdk} ← devkit ← {bench, test, examples}.
//    The broker (cloud/), the agent (endpoint/) and the client (sdk/) never import one another.
//    The web dashboard (ui/, bundled for the browser) imports nothing of the project's.
//    Tests (`*.test.ts` anywhere) may also use the dev harness.
// 2. Surfaces: a file imports another top-level folder only through that folder's index.ts, or
//    its internal.ts (what siblings, the dev harness and tests need beyond the public surface),
//    or a lighter entry the folder declares below for processes whose start-up time matters.
// 3. No import cycles among the project's own modules.
// 4. The processes on a block's start path (worker manager, workers) load neither gRPC nor NATS.
//
// Usage: node scripts/check-deps.mjs [ROOT]   (exits 1 and names each broken rule)
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

import ts from "typescript";

const root = path.resolve(
  process.argv[2] ?? path.join(path.dirname(new URL(import.meta.url).pathname), ".."),
);

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
  ui: [],
};
/** The files through which other folders may enter a folder. */
const surfaces = ["index.ts", "internal.ts"];
/** Lighter entries, for the processes on a block's start path (rule 4). */
const lightSurfaces = {
  proto: ["messages.ts"], // every message, without the gRPC services
  common: ["lean.ts", "logger.ts", "client.ts"], // no network client or logging; the logger alone; no NATS (the SDK)
};
/** Entry points whose static imports must not reach these packages (rule 4). */
const startPath = [
  ["endpoint/manager/main.ts", /^(@grpc\/|@nats-io\/)/, "keep gRPC and NATS off a block's start path"],
  ["endpoint/worker/main.ts", /^(@grpc\/|@nats-io\/)/, "keep gRPC and NATS off a block's start path"],
  ["sdk/index.ts", /^@nats-io\//, "a client talks gRPC only: keep NATS out of the SDK"],
];
const skipped = new Set(["node_modules", "dist", "gen", ".git", ".tmp"]);

function* sources(dir) {
  for (const name of readdirSync(dir)) {
    if (skipped.has(name)) continue;
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) yield* sources(p);
    else if ((p.endsWith(".ts") || p.endsWith(".tsx")) && !p.endsWith(".d.ts")) yield p;
  }
}

/** The project file a relative specifier names, or undefined for a package or a file outside the tree. */
function resolve(from, spec) {
  if (!spec.startsWith(".")) return undefined;
  let target = path.resolve(path.dirname(from), spec);
  if (target.endsWith(".js")) {
    target = target.slice(0, -3) + ".ts";
    if (!existsSync(target) && existsSync(`${target}x`)) target += "x"; // a .tsx module
  } else if (existsSync(target) && statSync(target).isDirectory()) target = path.join(target, "index.ts");
  else if (!target.endsWith(".ts")) target += ".ts";
  return target;
}

const rel = (p) => path.relative(root, p);
const topOf = (p) => rel(p).split(path.sep)[0];
const problems = [];
const graph = new Map();
const staticGraph = new Map();

for (const folder of Object.keys(allowed)) {
  const dir = path.join(root, folder);
  if (!existsSync(dir)) continue;
  for (const file of sources(dir)) {
    const edges = [];
    const staticEdges = [];
    const packages = [];
    graph.set(file, edges);
    staticGraph.set(file, { edges: staticEdges, packages });
    const text = readFileSync(file, "utf8");
    const { importedFiles } = ts.preProcessFile(text, true, true);
    const isTest = file.endsWith(".test.ts");
    for (const { fileName: spec } of importedFiles) {
      const dynamic = new RegExp(`import\\(\\s*["']${spec.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}["']`).test(
        text,
      );
      const target = resolve(file, spec);
      if (!target) {
        if (!dynamic) packages.push(spec);
        continue;
      }
      if (!dynamic) staticEdges.push(target);
      const top = topOf(target);
      if (top === folder) {
        edges.push(target);
        continue;
      }
      if (!(top in allowed)) continue; // generated code under proto/gen is reached through proto/index.ts
      edges.push(target);
      const where = `${rel(file)} imports ${spec}`;
      if (!allowed[folder].includes(top) && !(isTest && top === "devkit")) {
        problems.push(`${where}: ${folder}/ must not depend on ${top}/`);
      } else if (
        path.dirname(target) !== path.join(root, top) ||
        ![...surfaces, ...(lightSurfaces[top] ?? [])].includes(path.basename(target))
      ) {
        problems.push(
          `${where}: import ${top}/ through ${top}/index.ts or ${top}/internal.ts, not a file inside it`,
        );
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

// Rule 4: what the start-path entry points load before their first line runs.
for (const [entry, heavyPackages, why] of startPath) {
  const start = path.join(root, entry);
  if (!staticGraph.has(start)) continue;
  const seen = new Set([start]);
  const queue = [[start, [entry]]];
  while (queue.length > 0) {
    const [file, via] = queue.shift();
    const node = staticGraph.get(file);
    if (!node) continue;
    for (const pkg of node.packages) {
      if (heavyPackages.test(pkg)) {
        problems.push(`${entry} loads ${pkg} at start (${via.join(" → ")}): ${why}`);
      }
    }
    for (const next of node.edges) {
      if (seen.has(next)) continue;
      seen.add(next);
      queue.push([next, [...via, rel(next)]]);
    }
  }
}

for (const p of problems) console.error(p);
if (problems.length > 0) {
  console.error(`dependency check: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`dependency check ok: ${graph.size} files, directions, surfaces and no cycles`);
