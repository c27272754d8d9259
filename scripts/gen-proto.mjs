// Generates TypeScript from proto/*.proto with ts-proto, using the protoc binary shipped in the
// `protoc` npm package (works offline). Output: proto/gen/ (git-ignored, never edited by hand).
//
// With `--pbjs`: instead generates protobufjs static code (one ES module plus its TypeScript
// definitions) into proto/gen-pbjs/ (git-ignored), which only the codec benchmark loads, to
// compare the two generators on the same messages.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const protocBin = require.resolve("protoc/protoc.cjs");
const plugin = path.join(root, "node_modules", ".bin", "protoc-gen-ts_proto");
const out = path.join(root, "proto", "gen");
const protoDir = path.join(root, "proto");
const files = readdirSync(path.join(protoDir, "fabric", "v1"))
  .filter((f) => f.endsWith(".proto"))
  .map((f) => path.join("fabric", "v1", f));

if (process.argv.includes("--pbjs")) {
  generatePbjs();
  process.exit(0);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const opts = [
  "outputServices=grpc-js",
  "esModuleInterop=true",
  "importSuffix=.js",
  "env=both",
  "forceLong=number",
  "enumsAsLiterals=true",
  "useDate=false",
  "oneof=unions-value",
  "outputPartialMethods=false",
  "useExactTypes=false",
].join(",");
execFileSync(
  process.execPath,
  [
    protocBin,
    `--plugin=protoc-gen-ts_proto=${plugin}`,
    `--ts_proto_out=${out}`,
    `--ts_proto_opt=${opts}`,
    `-I${protoDir}`,
    ...files,
  ],
  { stdio: "inherit", cwd: root },
);

function generatePbjs() {
  const cli = path.dirname(require.resolve("protobufjs-cli/package.json"));
  const pbjsOut = path.join(root, "proto", "gen-pbjs");
  const js = path.join(pbjsOut, "fabric.js");
  rmSync(pbjsOut, { recursive: true, force: true });
  mkdirSync(pbjsOut, { recursive: true });
  // The explicit `.js` dependency: Node's ES module resolution needs the file name, and the
  // protobufjs package has no export map. No services: protobufjs's own RPC classes are not
  // grpc-js's. `--force-number` only types 64-bit fields as number; the reader still returns a
  // Long unless protobufjs is configured without one (the benchmark does that).
  execFileSync(
    process.execPath,
    [
      path.join(cli, "bin", "pbjs"),
      "-t",
      "static-module",
      "-w",
      "es6",
      "--dependency",
      "protobufjs/minimal.js",
      "--force-number",
      "--no-service",
      "--no-delimited",
      "-p",
      protoDir,
      "-o",
      js,
      ...files.map((f) => path.join(protoDir, f)),
    ],
    { stdio: "inherit", cwd: root },
  );
  execFileSync(
    process.execPath,
    [path.join(cli, "bin", "pbts"), "-o", path.join(pbjsOut, "fabric.d.ts"), js],
    {
      stdio: "inherit",
      cwd: root,
    },
  );
}
