import { homedir } from "node:os";
import path from "node:path";

/**
 * The fabric's home directory on this machine: `$FABRIC_HOME`, else `~/.fabric`. The client keeps
 * its settings there (`client.json`) and each endpoint its own directory (`endpoints/NAME/`).
 */
export function fabricHome(env: NodeJS.ProcessEnv = process.env): string {
  return env["FABRIC_HOME"] || path.join(homedir(), ".fabric");
}
