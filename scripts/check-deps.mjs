// Keeps dependencies flowing one way: proto ← common ← {cloud, endpoint, sdk}; sdk never imports
// cloud/ or endpoint/, the agent never imports the broker, and the broker never imports either.
// Unit tests beside the code may use the dev harness (devkit/); the code they test may not.
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const forbidden = {
  proto: ["common", "cloud", "endpoint", "sdk", "devkit"],
  common: ["cloud", "endpoint", "sdk", "devkit"],
  cloud: ["endpoint", "sdk", "devkit"],
  endpoint: ["cloud", "sdk", "devkit"],
  sdk: ["cloud", "endpoint", "devkit"],
};

function* files(dir) {
  for (const name of readdirSync(dir)) {
    if (name === "gen" || name === "node_modules") continue;
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) yield* files(p);
    else if (p.endsWith(".ts")) yield p;
  }
}

let bad = 0;
for (const [folder, banned] of Object.entries(forbidden)) {
  for (const file of files(path.join(root, folder))) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/from\s+"(\.[^"]+)"/g)) {
      const target = path.relative(root, path.resolve(path.dirname(file), m[1]));
      const top = target.split(path.sep)[0];
      if (banned.includes(top) && !(top === "devkit" && file.endsWith(".test.ts"))) {
        console.error(`${path.relative(root, file)} imports ${m[1]}: ${folder}/ must not depend on ${top}/`);
        bad++;
      }
    }
  }
}
if (bad > 0) process.exit(1);
console.log("dependency directions ok");
