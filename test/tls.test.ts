// TLS end to end, with real processes and a throwaway CA made by openssl: the broker's gRPC
// listener and NATS both over TLS, clients that trust the wrong CA or speak plaintext refused,
// mTLS, a certificate reload that keeps open connections, and the plaintext warning.
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  freePort,
  NatsServer,
  BrokerProcess,
  EndpointProcess,
  runCli,
  TestCa,
  type CertFiles,
} from "../devkit/index.js";
import { Client } from "../sdk/index.js";

/** The serial number of the certificate a fresh TLS connection to the broker is served. */
async function servedSerial(
  port: number,
  ca: string,
): Promise<{ serial: string; session: http2.ClientHttp2Session }> {
  const session = http2.connect(`https://127.0.0.1:${port}`, {
    ca: readFileSync(ca),
    servername: "localhost",
  });
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
  });
  const socket = session.socket as unknown as { getPeerCertificate(): { serialNumber: string } };
  return { serial: socket.getPeerCertificate().serialNumber, session };
}

/** A gRPC health check sent by hand on an existing HTTP/2 session: proves that connection still works. */
async function healthCheck(session: http2.ClientHttp2Session): Promise<string> {
  const req = session.request({
    ":method": "POST",
    ":path": "/grpc.health.v1.Health/Check",
    "content-type": "application/grpc",
    te: "trailers",
  });
  // One gRPC frame: not compressed, an empty HealthCheckRequest (service "").
  req.end(Buffer.from([0, 0, 0, 0, 0]));
  return new Promise((resolve, reject) => {
    req.on("trailers", (t: http2.IncomingHttpHeaders) => resolve(String(t["grpc-status"])));
    req.on("error", reject);
    req.resume();
  });
}

function serialOf(file: string): string {
  return new X509Certificate(readFileSync(file)).serialNumber;
}

describe("TLS: broker gRPC and NATS", () => {
  let dir: string;
  let ca: TestCa;
  let otherCa: TestCa;
  let brokerCert: CertFiles;
  let clientCert: CertFiles;
  let nats: NatsServer;
  let broker: BrokerProcess;
  let endpoint: EndpointProcess;
  let token: string;
  const clients: Client[] = [];
  const brokers: BrokerProcess[] = [];

  const client = (opts: Partial<ConstructorParameters<typeof Client>[0]> = {}, b = broker) => {
    const c = new Client({ address: b.address, token, caFile: ca.certFile, callTimeoutMs: 10_000, ...opts });
    clients.push(c);
    return c;
  };

  /** A GET over HTTPS to the broker's HTTP API: its status, or the connection's error. */
  const httpsGet = (port: number, urlPath: string, tlsFiles: { certFile?: string; keyFile?: string } = {}) =>
    new Promise<number | string>((resolve) => {
      const req = https.get(
        {
          host: "127.0.0.1",
          port,
          path: urlPath,
          servername: "localhost",
          ca: readFileSync(ca.certFile),
          ...(tlsFiles.certFile
            ? { cert: readFileSync(tlsFiles.certFile), key: readFileSync(tlsFiles.keyFile!) }
            : {}),
          headers: { authorization: `Bearer ${token}` },
          agent: false,
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
  let httpPort = 0;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "fabric-tls-"));
    ca = await TestCa.create(path.join(dir, "ca"), "fabric test CA");
    otherCa = await TestCa.create(path.join(dir, "other-ca"), "unrelated CA");
    brokerCert = await ca.issueServer("broker");
    const natsCert = await ca.issueServer("nats");
    clientCert = await ca.issueClient("alice");
    const natsClient = await ca.issueClient("nats-user");
    // NATS requires TLS and a client certificate from our CA.
    nats = await NatsServer.start({
      storeDir: path.join(dir, "nats"),
      tls: { ...natsCert, caFile: ca.certFile, verify: true },
    });
    httpPort = await freePort();
    broker = await BrokerProcess.start({
      natsUrl: nats.url,
      dir: path.join(dir, "broker"),
      extra: {
        http: { listen: `127.0.0.1:${httpPort}` },
        tls: { certFile: brokerCert.certFile, keyFile: brokerCert.keyFile },
        nats: { servers: [nats.url], tls: { caFile: ca.certFile, ...natsClient } },
      },
    });
    brokers.push(broker);
    expect(broker.address).toMatch(/^grpcs:\/\//);
    token = await broker.token("alice");
    endpoint = await EndpointProcess.start({
      home: path.join(dir, "home-alice"),
      name: "tls-ep",
      broker: broker.address,
      token,
      workers: 1,
      blocks: 1,
      configureArgs: ["--ca-file", ca.certFile],
      extra: { natsTls: { caFile: ca.certFile, ...natsClient } },
    });
  }, 90_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await endpoint?.stop().catch(() => undefined);
    for (const b of brokers) await b.stop().catch(() => undefined);
    await nats?.stop().catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("runs a task end to end with TLS on every hop (SDK → broker → NATS → agent)", async () => {
    const c = client();
    const fnId = await c.registerFunction(function triple(x: number) {
      return x * 3;
    });
    const taskId = await c.run(fnId, endpoint.endpointId(), [14]);
    expect(await c.waitForResult(taskId, { timeoutMs: 30_000 })).toBe(42);
    expect(endpoint.process!.output).toMatch(/"endpoint ready"/);
  });

  it("the fabric CLI: configure --ca-file, then calls over TLS; FABRIC_CA_FILE overrides the saved CA", async () => {
    const home = path.join(dir, "home-cli");
    await runCli(
      "sdk/cli.js",
      ["configure", "--broker", broker.address, "--token", token, "--ca-file", ca.certFile],
      home,
    );
    expect(JSON.parse(readFileSync(path.join(home, "client.json"), "utf8"))).toMatchObject({
      broker: broker.address,
      caFile: ca.certFile,
    });
    expect(await runCli("sdk/cli.js", ["endpoint", "list", "--json"], home)).toContain(endpoint.endpointId());
    const saved = process.env["FABRIC_CA_FILE"];
    process.env["FABRIC_CA_FILE"] = otherCa.certFile;
    try {
      await expect(runCli("sdk/cli.js", ["endpoint", "list"], home)).rejects.toThrow(
        /error: UNAVAILABLE: no TLS connection to the broker .*certificate/,
      );
    } finally {
      if (saved === undefined) delete process.env["FABRIC_CA_FILE"];
      else process.env["FABRIC_CA_FILE"] = saved;
    }
  });

  it("refuses a client that trusts another CA, or only the default roots, naming the certificate", async () => {
    for (const caFile of [otherCa.certFile, undefined]) {
      const err = await client({ caFile })
        .listFunctions()
        .then(
          () => undefined,
          (e: unknown) => e as Error & { code: string },
        );
      expect(err?.code).toBe("UNAVAILABLE");
      expect(err?.message).toMatch(/certificate/i);
      expect(err?.message).toMatch(/no TLS connection to the broker/);
    }
  });

  it("refuses plaintext where TLS is required: gRPC and NATS", async () => {
    const err = await client({ address: `127.0.0.1:${broker.port}`, caFile: undefined })
      .listFunctions()
      .then(
        () => undefined,
        (e: unknown) => e as Error & { code: string },
      );
    expect(err?.code).toBe("UNAVAILABLE");
    // TLS files with a plaintext address are a mistake, not a quiet downgrade.
    expect(() => client({ address: `127.0.0.1:${broker.port}` })).toThrow(/plaintext: write it grpcs:/);

    // NATS: a client that skips the TLS upgrade is told so and dropped.
    const answer = await new Promise<string>((resolve, reject) => {
      const s = new Socket();
      let text = "";
      s.on("data", (d: Buffer) => {
        text += d.toString();
        if (text.startsWith("INFO") && !text.includes("CONNECT_SENT")) {
          expect(text).toMatch(/"tls_required":true/);
          text += "CONNECT_SENT";
          s.write('CONNECT {"verbose":false,"pedantic":false,"tls_required":false}\r\nPING\r\n');
        }
      });
      s.on("close", () => resolve(text));
      s.on("error", reject);
      s.connect(nats.port, "127.0.0.1");
    });
    expect(answer).not.toMatch(/PONG/);
  });

  it("serves the HTTP API over HTTPS with the broker's certificate, never in plaintext", async () => {
    expect(await httpsGet(httpPort, "/v1/functions")).toBe(200);
    // Plain HTTP to the same port gets no API answer.
    const plain = await fetch(`http://127.0.0.1:${httpPort}/v1/functions`, {
      headers: { authorization: `Bearer ${token}` },
    }).then(
      (r) => r.status,
      (e: unknown) => String(e),
    );
    expect(plain).not.toBe(200);
  });

  it("with requireClientCert, refuses a client without a certificate from the CA and serves one with it", async () => {
    const mtlsHttp = await freePort();
    const mtls = await BrokerProcess.start({
      natsUrl: nats.url,
      dir: path.join(dir, "broker-mtls"),
      keyFile: broker.keyFile,
      extra: {
        http: { listen: `127.0.0.1:${mtlsHttp}` },
        tls: { ...brokerCert, clientCaFile: ca.certFile, requireClientCert: true },
        nats: {
          servers: [nats.url],
          tls: { caFile: ca.certFile, ...(await ca.issueClient("broker2-nats")) },
        },
      },
    });
    brokers.push(mtls);
    const strangerCert = await otherCa.issueClient("mallory");
    for (const tlsFiles of [{}, strangerCert]) {
      const err = await client(tlsFiles, mtls)
        .listFunctions()
        .then(
          () => undefined,
          (e: unknown) => e as Error & { code: string },
        );
      expect(err?.code).toBe("UNAVAILABLE");
    }
    await expect(client(clientCert, mtls).listFunctions()).resolves.toBeInstanceOf(Array);
    // The HTTP API asks for the same certificates.
    expect(await httpsGet(mtlsHttp, "/v1/functions")).not.toBe(200);
    expect(await httpsGet(mtlsHttp, "/v1/functions", strangerCert)).not.toBe(200);
    expect(await httpsGet(mtlsHttp, "/v1/functions", clientCert)).toBe(200);
  });

  it("reloads the certificate when its files change or on SIGHUP, keeping open connections", async () => {
    const out = broker.process!;
    const first = await servedSerial(broker.port, ca.certFile);
    expect(first.serial).toBe(serialOf(brokerCert.certFile));

    // A task that runs across the reloads, its result awaited on a stream opened before them.
    const c = client();
    const fnId = await c.registerFunction(async function slow(x: number) {
      await new Promise((r) => setTimeout(r, 4_000));
      return x + 1;
    });
    const result = c.waitForResult(await c.run(fnId, endpoint.endpointId(), [1]), { timeoutMs: 30_000 });

    // Half-written: a truncated certificate is refused and the old one kept.
    const good = readFileSync(brokerCert.certFile, "utf8");
    writeFileSync(brokerCert.certFile, good.slice(0, good.length / 2));
    await out.waitFor(/cannot reload the TLS certificate; keeping the current one/, 10_000);
    const during = await servedSerial(broker.port, ca.certFile);
    expect(during.serial).toBe(first.serial);
    during.session.close();

    // A new pair from the same CA, written over the old files.
    const next = await ca.issueServer("broker-next");
    copyFileSync(next.keyFile, brokerCert.keyFile);
    copyFileSync(next.certFile, brokerCert.certFile);
    await out.waitFor(/"TLS certificate reloaded"/, 10_000);
    const after = await servedSerial(broker.port, ca.certFile);
    expect(after.serial).toBe(serialOf(next.certFile));
    expect(after.serial).not.toBe(first.serial);
    after.session.close();

    // SIGHUP reads them at once (before the file poll would).
    const third = await ca.issueServer("broker-third");
    copyFileSync(third.keyFile, brokerCert.keyFile);
    copyFileSync(third.certFile, brokerCert.certFile);
    out.proc.kill("SIGHUP");
    await out.waitFor(/"reason":"SIGHUP"[^\n]*"TLS certificate reloaded"/, 10_000);
    const hup = await servedSerial(broker.port, ca.certFile);
    expect(hup.serial).toBe(serialOf(third.certFile));
    hup.session.close();

    // The connection opened before all this still has its certificate and still answers.
    expect(
      (
        first.session.socket as unknown as { getPeerCertificate(): { serialNumber: string } }
      ).getPeerCertificate().serialNumber,
    ).toBe(first.serial);
    expect(await healthCheck(first.session)).toBe("0");
    first.session.close();
    expect(await result).toBe(2);
    expect(out.running).toBe(true);
  });

  it("warns loudly about a plaintext listener on a non-loopback address", async () => {
    const port = await freePort();
    const plain = await BrokerProcess.start({
      natsUrl: nats.url,
      dir: path.join(dir, "broker-plain"),
      keyFile: broker.keyFile,
      port,
      extra: {
        // Bound on every interface; the test only ever talks to it over loopback.
        listen: `0.0.0.0:${port}`,
        nats: {
          servers: [nats.url],
          tls: { caFile: ca.certFile, ...(await ca.issueClient("broker3-nats")) },
        },
      },
    });
    brokers.push(plain);
    expect(plain.process!.output).toMatch(
      /"level":40[^\n]*PLAINTEXT gRPC listener on a non-loopback address/,
    );
    expect(plain.process!.output).toMatch(/tls\.certFile and tls\.keyFile/);
    await plain.stop();
  });
});
