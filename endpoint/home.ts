import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";

import { parseDocument } from "yaml";

import { FabricError, fabricHome } from "../common/index.js";

/** Files of one configured endpoint, under `$FABRIC_HOME/endpoints/<name>/`. */
export interface EndpointPaths {
  readonly name: string;
  readonly dir: string;
  /** YAML config; mode 0600 because it holds the user's token until the endpoint registers. */
  readonly config: string;
  /** `{endpointId, endpointToken}`; mode 0600. */
  readonly credentials: string;
  readonly pid: string;
  readonly log: string;
  /** Per-block logs of worker managers. */
  readonly blockLogDir: string;
}

/** What the agent keeps after registering: its id and the endpoint token the broker issued. */
export interface EndpointCredentials {
  readonly endpointId: string;
  readonly endpointToken: string;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export { fabricHome };

/** Checks an endpoint name is usable as a directory name. */
export function validateEndpointName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new FabricError(
      "INVALID_ARGUMENT",
      `endpoint name ${JSON.stringify(name)} is not valid: use letters, digits, '.', '_' or '-' (at most 64)`,
    );
  }
}

/** Paths of the endpoint called `name`. */
export function endpointPaths(name: string, env: NodeJS.ProcessEnv = process.env): EndpointPaths {
  validateEndpointName(name);
  const dir = path.join(fabricHome(env), "endpoints", name);
  return {
    name,
    dir,
    config: path.join(dir, "config.yaml"),
    credentials: path.join(dir, "credentials.json"),
    pid: path.join(dir, "agent.pid"),
    log: path.join(dir, "agent.log"),
    blockLogDir: path.join(dir, "blocks"),
  };
}

/** Writes a file readable only by its owner, atomically (a crash never leaves half a secret). */
export function writePrivateFile(file: string, text: string): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/** The saved credentials, or undefined when the endpoint has not registered yet. */
export function readCredentials(paths: EndpointPaths): EndpointCredentials | undefined {
  if (!existsSync(paths.credentials)) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(paths.credentials, "utf8"));
  } catch (err) {
    throw new FabricError(
      "FAILED_PRECONDITION",
      `${paths.credentials} is unreadable (${(err as Error).message}); delete it to register again`,
    );
  }
  const c = doc as Partial<EndpointCredentials> | null;
  if (!c || typeof c.endpointId !== "string" || typeof c.endpointToken !== "string" || !c.endpointId) {
    throw new FabricError(
      "FAILED_PRECONDITION",
      `${paths.credentials} lacks endpointId/endpointToken; delete it to register again`,
    );
  }
  return { endpointId: c.endpointId, endpointToken: c.endpointToken };
}

/** Saves credentials with mode 0600. */
export function writeCredentials(paths: EndpointPaths, creds: EndpointCredentials): void {
  writePrivateFile(paths.credentials, JSON.stringify(creds, null, 2) + "\n");
}

/**
 * Removes the owner's user token from the endpoint's config.yaml, keeping every other line
 * (comments included) and mode 0600; the file is replaced atomically. Once the endpoint holds its
 * own credential the user token is of no use to it, and a function on a bare endpoint (same OS
 * user) could read the file and act as the owner. Returns whether there was a token to remove.
 */
export function removeConfigToken(paths: EndpointPaths): boolean {
  const text = readFileSync(paths.config, "utf8");
  const doc = parseDocument(text);
  if (!doc.has("token")) return false;
  doc.delete("token");
  writePrivateFile(paths.config, doc.toString());
  return true;
}

/** The pid in the pid file, if there is one and that process is alive. */
export function runningAgentPid(paths: EndpointPaths): number | undefined {
  let text: string;
  try {
    text = readFileSync(paths.pid, "utf8");
  } catch {
    return undefined;
  }
  const pid = Number.parseInt(text.trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  return isAlive(pid) ? pid : undefined;
}

/** Whether a process exists (signal 0 probes without touching it). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Records the running agent's pid. */
export function writePidFile(paths: EndpointPaths, pid: number): void {
  mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  writeFileSync(paths.pid, `${pid}\n`);
}

/** Removes the pid file if it still names `pid` (another agent may have replaced it). */
export function removePidFile(paths: EndpointPaths, pid?: number): void {
  try {
    if (pid !== undefined && readFileSync(paths.pid, "utf8").trim() !== String(pid)) return;
    rmSync(paths.pid, { force: true });
  } catch {
    // already gone
  }
}
