// The broker's server-side TLS: certificate files read once at start, read again when they change
// or on SIGHUP, and handed to the listeners without restarting them. Node's TLS servers take a new
// secure context for new connections (setSecureContext) and leave established ones alone, which
// is what lets a certificate rotate without dropping a stream.
import { type StatsListener, readFileSync, unwatchFile, watchFile } from "node:fs";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { BlockList, isIP } from "node:net";
import { createSecureContext, type SecureContextOptions } from "node:tls";

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";

import { FabricError, silentLogger } from "../../common/index.js";

/** The `tls` block of the broker config (see BrokerConfigSchema). */
export interface ServerTlsConfig {
  readonly certFile: string;
  readonly keyFile: string;
  readonly clientCaFile?: string | undefined;
  readonly requireClientCert: boolean;
}

/** How often the certificate files are checked for changes. */
const WATCH_INTERVAL_MS = 1_000;
/** A change is read this long after the last one, so a cert and key written one after the other are read together. */
const SETTLE_MS = 250;

/** What a loaded certificate is, for logs. */
export interface CertificateSummary {
  readonly subject: string;
  readonly issuer: string;
  readonly serialNumber: string;
  readonly validTo: string;
  readonly fingerprint256: string;
}

type Listener = (options: SecureContextOptions) => void;

/**
 * The broker's current certificate, key and client CA, kept up to date from their files. A
 * listener (the gRPC server, later the HTTP one) takes {@link current} at start and follows
 * {@link onChange}. A file read mid-write, or a key that does not match the certificate, is
 * refused with a warning and the previous pair stays in use until a valid one is read.
 *
 * @example
 * const tls = ServerTlsContext.load(config.tls, log);
 * tls.watch();
 * server.bindAsync(config.listen, grpcServerCredentials(tls), cb);
 * process.on("SIGHUP", () => tls.reload("SIGHUP"));
 */
export class ServerTlsContext {
  private options: SecureContextOptions;
  private summary: CertificateSummary;
  private readonly listeners = new Set<Listener>();
  private readonly watched: Array<{ file: string; listener: StatsListener }> = [];
  private settleTimer: NodeJS.Timeout | undefined;

  private constructor(
    readonly config: ServerTlsConfig,
    private readonly log: Logger,
    first: { options: SecureContextOptions; summary: CertificateSummary },
  ) {
    this.options = first.options;
    this.summary = first.summary;
  }

  /**
   * Reads the files for the first time. A missing or invalid file is FAILED_PRECONDITION naming
   * the field and the file: the broker does not start without its certificate.
   */
  static load(config: ServerTlsConfig, log: Logger = silentLogger): ServerTlsContext {
    const first = readMaterial(config);
    const ctx = new ServerTlsContext(config, log, first);
    log.info({ certificate: first.summary, clientCerts: clientCertMode(config) }, "TLS certificate loaded");
    return ctx;
  }

  /** The secure-context options of the pair in use (cert, key, and the client CA if any). */
  current(): SecureContextOptions {
    return this.options;
  }

  /** The certificate in use. */
  get certificate(): CertificateSummary {
    return this.summary;
  }

  /** Calls `listener` with the new options after each successful reload; returns an unsubscribe. */
  onChange(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Reads the files again. On success new connections get the new certificate (established ones
   * keep theirs) and it returns true; on failure it logs a warning, keeps the current pair and
   * returns false. Never throws.
   */
  reload(reason: string): boolean {
    let next: ReturnType<typeof readMaterial>;
    try {
      next = readMaterial(this.config);
    } catch (err) {
      this.log.warn(
        { reason, err: (err as Error).message, current: this.summary.serialNumber },
        "cannot reload the TLS certificate; keeping the current one until a valid pair is read",
      );
      return false;
    }
    if (next.summary.fingerprint256 === this.summary.fingerprint256 && sameCa(next.options, this.options)) {
      this.log.debug({ reason }, "TLS files read again: unchanged");
      return true;
    }
    this.options = next.options;
    this.summary = next.summary;
    for (const l of this.listeners) l(next.options);
    this.log.info({ reason, certificate: next.summary }, "TLS certificate reloaded");
    return true;
  }

  /** Reloads when one of the files changes (polled, so a file replaced by rename is seen too). */
  watch(intervalMs = WATCH_INTERVAL_MS): void {
    if (this.watched.length > 0) return;
    const files = [this.config.certFile, this.config.keyFile, this.config.clientCaFile].filter(
      (f): f is string => f !== undefined,
    );
    for (const file of new Set(files)) {
      const listener: StatsListener = (now, before) => {
        if (now.mtimeMs === before.mtimeMs && now.size === before.size && now.ino === before.ino) return;
        clearTimeout(this.settleTimer);
        this.settleTimer = setTimeout(() => this.reload(`${file} changed`), SETTLE_MS);
        this.settleTimer.unref();
      };
      watchFile(file, { interval: intervalMs, persistent: false }, listener);
      this.watched.push({ file, listener });
    }
  }

  /** Stops watching the files. */
  close(): void {
    clearTimeout(this.settleTimer);
    for (const { file, listener } of this.watched.splice(0)) unwatchFile(file, listener);
    this.listeners.clear();
  }
}

function clientCertMode(config: ServerTlsConfig): string {
  if (!config.clientCaFile) return "not requested";
  return config.requireClientCert ? "required" : "requested, not required";
}

function sameCa(a: SecureContextOptions, b: SecureContextOptions): boolean {
  const ca = (o: SecureContextOptions) => (o.ca === undefined ? "" : String(o.ca));
  return ca(a) === ca(b);
}

function readFileOf(field: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new FabricError(
      "FAILED_PRECONDITION",
      `tls.${field}: cannot read ${file}: ${(err as Error).message}`,
    );
  }
}

/** Reads and checks the files: the certificate parses, the key matches it, OpenSSL takes both. */
function readMaterial(config: ServerTlsConfig): {
  options: SecureContextOptions;
  summary: CertificateSummary;
} {
  const cert = readFileOf("certFile", config.certFile);
  const key = readFileOf("keyFile", config.keyFile);
  const ca = config.clientCaFile ? readFileOf("clientCaFile", config.clientCaFile) : undefined;
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new FabricError(
      "FAILED_PRECONDITION",
      `tls.certFile: ${config.certFile} is not a PEM certificate: ${(err as Error).message}`,
    );
  }
  try {
    if (!x509.checkPrivateKey(createPrivateKey(key))) throw new Error("it is not the certificate's key");
  } catch (err) {
    throw new FabricError(
      "FAILED_PRECONDITION",
      `tls.keyFile: ${config.keyFile} does not hold the private key of ${config.certFile}: ${(err as Error).message}`,
    );
  }
  if (ca) {
    try {
      new X509Certificate(ca);
    } catch (err) {
      throw new FabricError(
        "FAILED_PRECONDITION",
        `tls.clientCaFile: ${config.clientCaFile} is not a PEM certificate: ${(err as Error).message}`,
      );
    }
  }
  const options: SecureContextOptions = { cert, key, ...(ca ? { ca } : {}), minVersion: "TLSv1.2" };
  try {
    // What the listener will do with them: catches what the checks above do not (a broken chain).
    createSecureContext(options);
  } catch (err) {
    throw new FabricError("FAILED_PRECONDITION", `tls: OpenSSL refuses the files: ${(err as Error).message}`);
  }
  return {
    options,
    summary: {
      subject: x509.subject.replace(/\n/g, ", "),
      issuer: x509.issuer.replace(/\n/g, ", "),
      serialNumber: x509.serialNumber,
      validTo: x509.validTo,
      fingerprint256: x509.fingerprint256,
    },
  };
}

/**
 * gRPC server credentials that follow a {@link ServerTlsContext}: grpc-js listens for context
 * updates on any ServerCredentials and passes them to its HTTP/2 server's setSecureContext.
 * (grpc-js's own FileWatcherCertificateProvider would stop accepting connections on a bad pair;
 * this keeps the last good one.)
 */
class ReloadingServerCredentials extends grpc.ServerCredentials {
  constructor(ctx: ServerTlsContext) {
    super(
      {
        requestCert: ctx.config.clientCaFile !== undefined,
        rejectUnauthorized: ctx.config.clientCaFile !== undefined && ctx.config.requireClientCert,
      },
      ctx.current(),
    );
    ctx.onChange((options) => this.updateSecureContextOptions(options));
  }

  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** Server credentials for `grpc.Server.bindAsync` serving `ctx`'s certificate, reloads included. */
export function grpcServerCredentials(ctx: ServerTlsContext): grpc.ServerCredentials {
  return new ReloadingServerCredentials(ctx);
}

const loopback = new BlockList();
loopback.addSubnet("127.0.0.0", 8, "ipv4");
loopback.addAddress("::1", "ipv6");
loopback.addSubnet("::ffff:127.0.0.0", 104, "ipv6");

/**
 * Whether a listen address (`host:port`, `[v6]:port`, `ipv4:…`, `unix:…`) only takes connections
 * from this machine: 127.0.0.0/8, ::1, `localhost`, or a Unix socket. `0.0.0.0`, `::` and any
 * other name are not.
 */
export function isLocalOnlyListen(address: string): boolean {
  const a = address.trim().replace(/^dns:(\/\/[^/]*\/)?/, "");
  if (/^unix(-abstract)?:/.test(a)) return true;
  const hosts = /^ipv[46]:/.test(a) ? a.slice(5).split(",") : [a];
  return hosts.every((h) => {
    const host = grpc.experimental.splitHostPort(h)?.host ?? h;
    if (host.toLowerCase() === "localhost") return true;
    const family = isIP(host);
    return family !== 0 && loopback.check(host, family === 4 ? "ipv4" : "ipv6");
  });
}
