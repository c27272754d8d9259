import { writeFileSync } from "node:fs";

/** Writes a config file of `lines`, each ending in a newline; with `mode` (e.g. 0o600), created so. */
export function writeConfigFile(file: string, lines: readonly string[], mode?: number): void {
  writeFileSync(file, lines.map((line) => `${line}\n`).join(""), mode === undefined ? undefined : { mode });
}
