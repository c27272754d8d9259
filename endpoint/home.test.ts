import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parse } from "yaml";

import { endpointPaths, removeConfigToken, writePrivateFile } from "./home.js";

describe("removeConfigToken", () => {
  let home: string;
  beforeEach(() => {
    home = mkdtempSync(path.join(tmpdir(), "fabric-home-"));
  });
  afterEach(() => rmSync(home, { recursive: true, force: true }));

  const paths = () => endpointPaths("ep", { FABRIC_HOME: home });

  it("removes the token and keeps the rest of the file (comments too), mode 0600", () => {
    const p = paths();
    writePrivateFile(
      p.config,
      "# beamline 7\nbroker: b:1 # the broker\ntoken: eyJ.secret.sig\nprovider:\n  type: local\n",
    );
    expect(removeConfigToken(p)).toBe(true);
    const text = readFileSync(p.config, "utf8");
    expect(text).not.toContain("secret");
    expect(text).toContain("# beamline 7");
    expect(text).toContain("# the broker");
    expect(parse(text)).toEqual({ broker: "b:1", provider: { type: "local" } });
    expect(statSync(p.config).mode & 0o777).toBe(0o600);
  });

  it("leaves a config without a token untouched (not even rewritten)", () => {
    const p = paths();
    writePrivateFile(p.config, "{broker: 'b:1'}  # flow style, odd spacing\n");
    const before = statSync(p.config).mtimeMs;
    expect(removeConfigToken(p)).toBe(false);
    expect(readFileSync(p.config, "utf8")).toBe("{broker: 'b:1'}  # flow style, odd spacing\n");
    expect(statSync(p.config).mtimeMs).toBe(before);
  });

  it("handles a flow-style document", () => {
    const p = paths();
    mkdirSync(p.dir, { recursive: true });
    writeFileSync(p.config, "{ broker: 'b:1', token: 'eyJ.secret.sig' }\n", { mode: 0o644 });
    expect(removeConfigToken(p)).toBe(true);
    expect(parse(readFileSync(p.config, "utf8"))).toEqual({ broker: "b:1" });
    // Rewritten private, whatever the file's mode was.
    expect(statSync(p.config).mode & 0o777).toBe(0o600);
  });
});
