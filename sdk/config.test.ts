import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterEach, describe, expect, it } from "vitest";

import { loadClientSettings, resolveClientOptions } from "./config.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function home(contents?: string): string {
  const d = mkdtempSync(path.join(tmpdir(), "fabric-cfg-"));
  dirs.push(d);
  if (contents !== undefined) writeFileSync(path.join(d, "client.json"), contents);
  return d;
}

describe("loadClientSettings", () => {
  it("reads client.json", () => {
    const h = home('{"broker": "b:1", "token": "t"}');
    expect(loadClientSettings({ FABRIC_HOME: h })).toEqual({ address: "b:1", token: "t" });
  });

  it("lets FABRIC_BROKER and FABRIC_TOKEN override the file", () => {
    const h = home('{"broker": "b:1", "token": "t"}');
    expect(loadClientSettings({ FABRIC_HOME: h, FABRIC_BROKER: "env:2" })).toEqual({
      address: "env:2",
      token: "t",
    });
    expect(loadClientSettings({ FABRIC_HOME: h, FABRIC_TOKEN: "t2" })).toEqual({
      address: "b:1",
      token: "t2",
    });
  });

  it("reads the TLS files from client.json, FABRIC_CA_FILE / FABRIC_CERT_FILE / FABRIC_KEY_FILE first", () => {
    const h = home('{"broker": "grpcs://b:1", "token": "t", "caFile": "/file-ca.pem"}');
    expect(loadClientSettings({ FABRIC_HOME: h })).toEqual({
      address: "grpcs://b:1",
      token: "t",
      caFile: "/file-ca.pem",
    });
    expect(
      loadClientSettings({
        FABRIC_HOME: h,
        FABRIC_CA_FILE: "/env-ca.pem",
        FABRIC_CERT_FILE: "/c.pem",
        FABRIC_KEY_FILE: "/k.pem",
      }),
    ).toMatchObject({ caFile: "/env-ca.pem", certFile: "/c.pem", keyFile: "/k.pem" });
  });

  it("works from the environment alone", () => {
    expect(loadClientSettings({ FABRIC_HOME: home(), FABRIC_BROKER: "x:1" })).toEqual({
      address: "x:1",
      token: "",
    });
  });

  it("no broker anywhere is FAILED_PRECONDITION; a broken file names itself", () => {
    expect(() => loadClientSettings({ FABRIC_HOME: home() })).toThrow(/no broker configured/);
    const h = home("{not json");
    expect(() => loadClientSettings({ FABRIC_HOME: h })).toThrow(/client\.json is not valid JSON/);
    const h2 = home('{"broker": 5}');
    expect(() => loadClientSettings({ FABRIC_HOME: h2 })).toThrow(/broker/);
  });
});

describe("resolveClientOptions", () => {
  it("applies defaults and freezes", () => {
    const o = resolveClientOptions({ address: "a:1" });
    expect(o).toMatchObject({ address: "a:1", token: "", submitChunkSize: 5_000, callTimeoutMs: 60_000 });
    expect(Object.isFrozen(o)).toBe(true);
  });

  it("names the bad field", () => {
    expect(() => resolveClientOptions({ address: "a:1", submitChunkSize: 20_000 })).toThrow(
      /submitChunkSize/,
    );
    expect(() => resolveClientOptions({ address: "" })).toThrow(/address/);
  });
});
