import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";

import type { Logger } from "pino";
import { z } from "zod";

import { FabricError, fabricHome } from "../common/client.js";

/** Most tasks the broker accepts in one SubmitTasks call (its default `maxBatchSize`). */
export const BROKER_MAX_BATCH = 10_000;

/** Options of a {@link Client}. */
export const clientOptionsSchema = z.object({
  /**
   * Broker address: `host:port` (plaintext) or `grpcs://host:port` (TLS; `https://` and `tls://`
   * mean the same). Replicas of one fabric: a list, or one string with commas
   * (`"a.example.org:50051,b.example.org:50051"`); the client uses the first that accepts a
   * connection and moves to the next when its connection fails.
   */
  address: z.union([
    z.string().min(1, { message: "the broker address is required (host:port)" }),
    z
      .array(z.string().min(1, { message: "a broker address is empty" }))
      .min(1, { message: "name at least one broker address (host:port)" }),
  ]),
  /**
   * With several broker addresses: how long a connection to one may take before the next is
   * tried, in milliseconds.
   * @default 5000
   */
  connectTimeoutMs: z.number().int().positive().default(5_000),
  /**
   * The user's JWT, sent as `authorization: Bearer <token>` on every call. At most 16 KiB: the
   * broker refuses longer ones, and past 64 KiB HTTP/2 itself cannot carry the header.
   */
  token: z
    .string()
    .max(16 * 1024, { message: "a token is at most 16 KiB; is this the right token?" })
    .default(""),
  /**
   * PEM bundle of the CAs the broker's certificate must chain to (a site CA). TLS addresses only.
   * @default Node's trusted roots (its Mozilla bundle, plus NODE_EXTRA_CA_CERTS)
   */
  caFile: z.string().min(1).optional(),
  /** PEM client certificate, for a broker that requires one (mTLS). Needs `keyFile`. @default none */
  certFile: z.string().min(1).optional(),
  /** PEM private key of `certFile`. @default none */
  keyFile: z.string().min(1).optional(),
  /**
   * Where the SDK logs (debug level: reconnects, chunking). Default: silent.
   * @default undefined
   */
  logger: z
    .custom<Logger>((v) => v === undefined || (typeof v === "object" && v !== null && "child" in v))
    .optional(),
  /**
   * Most tasks (or ids) per SubmitTasks / GetTasks / WatchTasks request; larger batches are split.
   * @default 5000
   */
  submitChunkSize: z.number().int().min(1).max(BROKER_MAX_BATCH).default(5_000),
  /**
   * Deadline of each unary call, in milliseconds.
   * @default 60000
   */
  callTimeoutMs: z.number().int().positive().default(60_000),
});

/**
 * The broker addresses of a client's `address`: a list, or one string of addresses separated by
 * commas (as `FABRIC_BROKER` and `fabric configure --broker` take them), in the order tried.
 */
export function brokerAddresses(address: string | readonly string[]): string[] {
  const list = (typeof address === "string" ? [address] : [...address])
    .flatMap((a) => a.split(","))
    .map((a) => a.trim())
    .filter((a) => a !== "");
  if (list.length === 0)
    throw new FabricError("INVALID_ARGUMENT", "the broker address is required (host:port)");
  return [...new Set(list)];
}

/** Options of a {@link Client} as given by the caller (defaults not yet applied). */
export type ClientOptions = z.input<typeof clientOptionsSchema>;
/** Options of a {@link Client} after validation and defaults. */
export type ResolvedClientOptions = Readonly<z.output<typeof clientOptionsSchema>>;

/** Validates client options once, at the edge; a bad one names the field. */
export function resolveClientOptions(options: ClientOptions): ResolvedClientOptions {
  const parsed = clientOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issues = parsed.error.issues
      .map((i) => `${i.path.join(".") || "options"}: ${i.message}`)
      .join("; ");
    throw new FabricError("INVALID_ARGUMENT", `invalid client options: ${issues}`);
  }
  return Object.freeze(parsed.data);
}

/** The saved client settings, `$FABRIC_HOME/client.json`. */
export const clientFileSchema = z.object({
  broker: z.string().min(1).optional(),
  token: z.string().optional(),
  caFile: z.string().min(1).optional(),
  certFile: z.string().min(1).optional(),
  keyFile: z.string().min(1).optional(),
});
/** The contents of `$FABRIC_HOME/client.json`. */
export type ClientFile = z.infer<typeof clientFileSchema>;

export { fabricHome };

/** Path of the saved client settings. */
export function clientConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(fabricHome(env), "client.json");
}

/** Reads `client.json`; a missing file is empty settings, a broken one is INVALID_ARGUMENT. */
export function readClientFile(file: string): ClientFile {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new FabricError("FAILED_PRECONDITION", `cannot read ${file}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new FabricError("INVALID_ARGUMENT", `${file} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = clientFileSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new FabricError("INVALID_ARGUMENT", `${file} is not valid: ${issues}`);
  }
  return parsed.data;
}

/** What {@link loadClientSettings} finds: where to connect, the token and the TLS files. */
export interface ClientSettings {
  readonly address: string;
  readonly token: string;
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

/**
 * Where to connect and with which token and TLS files: `FABRIC_BROKER`, `FABRIC_TOKEN`,
 * `FABRIC_CA_FILE`, `FABRIC_CERT_FILE` and `FABRIC_KEY_FILE` override `$FABRIC_HOME/client.json`.
 * No broker anywhere is FAILED_PRECONDITION saying how to set one.
 */
export function loadClientSettings(env: NodeJS.ProcessEnv = process.env): ClientSettings {
  const file = clientConfigPath(env);
  const saved = readClientFile(file);
  const address = env["FABRIC_BROKER"] || saved.broker;
  const token = env["FABRIC_TOKEN"] || saved.token || "";
  const caFile = env["FABRIC_CA_FILE"] || saved.caFile;
  const certFile = env["FABRIC_CERT_FILE"] || saved.certFile;
  const keyFile = env["FABRIC_KEY_FILE"] || saved.keyFile;
  if (!address) {
    throw new FabricError(
      "FAILED_PRECONDITION",
      `no broker configured: run \`fabric configure --broker HOST:PORT --token TOKEN\` or set FABRIC_BROKER (looked in ${file})`,
    );
  }
  return {
    address,
    token,
    ...(caFile ? { caFile } : {}),
    ...(certFile ? { certFile } : {}),
    ...(keyFile ? { keyFile } : {}),
  };
}

/** Saves the client settings to `$FABRIC_HOME/client.json`, readable only by its owner. */
export function writeClientFile(settings: ClientFile, env: NodeJS.ProcessEnv = process.env): string {
  const file = clientConfigPath(env);
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // Write-then-rename so a crash never leaves half a token behind; 0600 from creation on.
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(settings, null, 2) + "\n", { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
  return file;
}
