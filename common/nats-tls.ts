import type { TlsOptions } from "@nats-io/transport-node";

import type { ClientTlsFiles } from "./grpc-client.js";
import { readPem } from "./grpc-client.js";

/**
 * The `tls` connect option of a NATS client (broker, agent, broker CLI). TLS is required when a
 * server URL is `tls://…` or any file is configured; the option is then always set, because
 * nats.js otherwise follows what the server's INFO offers, and a server (or something in the
 * middle) that offers no TLS would get the connection in clear. Files are checked here so a bad
 * path names its field (`prefix.caFile`) instead of failing inside a reconnect loop.
 */
export function natsTlsOption(
  servers: readonly string[],
  files: ClientTlsFiles | undefined,
  prefix: string,
): { tls?: TlsOptions } {
  const f = files ?? {};
  const wanted = servers.some((s) => /^tls:\/\//i.test(s)) || Boolean(f.caFile || f.certFile || f.keyFile);
  if (!wanted) return {};
  if (f.caFile) readPem(`${prefix}.caFile`, f.caFile, "certificate");
  if (f.certFile) readPem(`${prefix}.certFile`, f.certFile, "certificate");
  if (f.keyFile) readPem(`${prefix}.keyFile`, f.keyFile, "key");
  // nats.js reads the files itself on every (re)connect, so a rotated client certificate is used
  // from the next connection on.
  return {
    tls: {
      ...(f.caFile ? { caFile: f.caFile } : {}),
      ...(f.certFile ? { certFile: f.certFile } : {}),
      ...(f.keyFile ? { keyFile: f.keyFile } : {}),
    },
  };
}
