import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";

import { writeConfigFile } from "./config-file.js";

const run = promisify(execFile);
const OPENSSL = process.env["OPENSSL_BIN"] ?? "openssl";

/** A certificate and its private key, as PEM files. */
export interface CertFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** Subject alternative names a server certificate from {@link TestCa.issueServer} carries. */
const SERVER_SAN = "DNS:localhost,IP:127.0.0.1";

/**
 * A throwaway certificate authority for tests, made with the system's `openssl` (Debian's
 * /usr/bin/openssl): EC P-256 keys, valid for a day, everything under `dir`. Keys are written
 * 0600 as real ones would be.
 *
 * @example
 * const ca = await TestCa.create(path.join(dir, "ca"), "fabric test CA");
 * const server = await ca.issueServer("broker");   // SAN localhost, 127.0.0.1
 * const client = await ca.issueClient("alice");
 */
export class TestCa implements CertFiles {
  private serial = 1;
  private constructor(
    readonly dir: string,
    readonly certFile: string,
    readonly keyFile: string,
  ) {}

  /** Creates a self-signed CA named `commonName` in `dir`. */
  static async create(dir: string, commonName: string): Promise<TestCa> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const ca = new TestCa(dir, path.join(dir, "ca.pem"), path.join(dir, "ca-key.pem"));
    await openssl([
      "req",
      "-x509",
      ...newEcKey(ca.keyFile),
      "-out",
      ca.certFile,
      "-days",
      "1",
      "-subj",
      `/CN=${commonName}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    return ca;
  }

  /** A server certificate for localhost and 127.0.0.1, written to `<name>.pem` / `<name>-key.pem`. */
  issueServer(name: string): Promise<CertFiles> {
    return this.issue(name, "serverAuth", SERVER_SAN);
  }

  /** A client certificate (for mTLS) whose subject is `CN=<name>`. */
  issueClient(name: string): Promise<CertFiles> {
    return this.issue(name, "clientAuth", `DNS:${name}`);
  }

  private async issue(name: string, usage: string, san: string): Promise<CertFiles> {
    const files = {
      certFile: path.join(this.dir, `${name}.pem`),
      keyFile: path.join(this.dir, `${name}-key.pem`),
    };
    const csr = path.join(this.dir, `${name}.csr`);
    const ext = path.join(this.dir, `${name}.ext`);
    writeConfigFile(ext, [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      `extendedKeyUsage=${usage}`,
      `subjectAltName=${san}`,
    ]);
    await openssl(["req", "-new", ...newEcKey(files.keyFile), "-out", csr, "-subj", `/CN=${name}`]);
    await openssl([
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      this.certFile,
      "-CAkey",
      this.keyFile,
      // Distinct serials, so two certificates issued for one name can be told apart.
      "-set_serial",
      String(Date.now() * 100 + this.serial++),
      "-days",
      "1",
      "-extfile",
      ext,
      "-out",
      files.certFile,
    ]);
    return files;
  }
}

function newEcKey(keyFile: string): string[] {
  return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile];
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run(OPENSSL, args, { timeout: 20_000 });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${OPENSSL} ${args.slice(0, 2).join(" ")} failed: ${e.stderr || e.message}`, {
      cause: err,
    });
  }
}
