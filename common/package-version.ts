import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE_NAME = "hpc-function-fabric";

/**
 * The package's version, from its package.json (found upward from this file: in a checkout,
 * in dist/, or installed under node_modules). "0.0.0-unknown" if none is found.
 */
export const FABRIC_VERSION: string = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const file = path.join(dir, "package.json");
    if (existsSync(file)) {
      try {
        const pkg = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version?: string };
        if (pkg.name === PACKAGE_NAME && pkg.version) return pkg.version;
      } catch {
        // not ours: look further up
      }
    }
    dir = path.dirname(dir);
  }
  return "0.0.0-unknown";
})();
