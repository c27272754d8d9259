// Generates TypeScript from proto/*.proto with ts-proto, using the protoc binary shipped in the
// `protoc` npm package (works offline). Output: proto/gen/ (git-ignored, never edited by hand).
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
