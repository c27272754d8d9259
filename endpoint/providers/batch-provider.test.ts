/**
 * The skeleton every batch provider shares, against a stand-in scheduler: three small shell
 * scripts that answer as a scheduler would (no Slurm or PBS needed).
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { silentLogger } from "../../common/index.js";
import type { BlockJobStatus, BlockLaunch } from "../provider.js";
import { BatchProvider } from "./batch-provider.js";
import type { BatchProviderOptions } from "./batch-provider.js";

let dir: string;

/** A scheduler whose commands are the scripts in `dir` (on its PATH); `MODE` picks their answer. */
class FakeSchedulerProvider extends BatchProvider<{ readonly tag: string }> {
  constructor(opts: BatchProviderOptions<{ readonly tag: string }>) {
    super(
      {
        name: "fake",
        scriptSuffix: ".job",
        submit: (file) => ["fake-submit", file],
        jobIdOf: (stdout) => /^job (\d+)$/m.exec(stdout)?.[1],
        cancel: (jobId) => ["fake-cancel", jobId],
        alreadyEnded: /job has ended/i,
      },
      opts,
    );
  }

  protected override script(launch: BlockLaunch): string {
    return `#!/bin/sh\n# ${this.opts.config.tag} ${launch.blockId}\n`;
  }

  protected override async jobStates(jobIds: readonly string[]): Promise<Map<string, BlockJobStatus>> {
    const r = await this.query(["fake-status", ...jobIds], /unknown job/i);
    const out = new Map<string, BlockJobStatus>();
    for (const id of jobIds) out.set(id, { state: r.stdout.includes(id) ? "running" : "missing" });
    return out;
  }
}

function provider(mode: string): FakeSchedulerProvider {
  return new FakeSchedulerProvider({
    config: { tag: "demo", commandTimeoutSeconds: 5 },
    log: silentLogger,
    scriptDir: path.join(dir, "scripts"),
    env: { ...process.env, PATH: `${dir}:${process.env["PATH"]}`, MODE: mode, SEEN: path.join(dir, "seen") },
  });
}

const launch: BlockLaunch = { blockId: "b-7", command: ["node", "m.js"], env: {} };

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "fabric-batch-provider-"));
  const script = (name: string, body: string) => {
    const file = path.join(dir, `fake-${name}`);
    writeFileSync(file, `#!/bin/sh\n${body}\n`);
    chmodSync(file, 0o755);
  };
  // Records the script's mode and text, as the scheduler would read them.
  script(
    "submit",
    [
      'stat -c %a "$1" > "$SEEN"; cat "$1" >> "$SEEN"',
      'case "$MODE" in ok) echo "job 42" ;; *) echo "submit: error: no such queue" >&2; exit 1 ;; esac',
    ].join("\n"),
  );
  script(
    "cancel",
    'case "$MODE" in ok) exit 0 ;; ended) echo "cancel: job has ended" >&2; exit 1 ;; *) echo "cancel: error: server down" >&2; exit 2 ;; esac',
  );
  script(
    "status",
    'case "$MODE" in ok) echo "$1 R" ;; unknown) echo "$1 R"; echo "status: Unknown Job $2" >&2; exit 1 ;; *) echo "status: error: server down" >&2; exit 2 ;; esac',
  );
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("BatchProvider", () => {
  it("submits the block's script (mode 0600) and removes it afterwards", async () => {
    const p = provider("ok");
    expect(p.name).toBe("fake");
    await expect(p.submitBlock(launch)).resolves.toBe("42");
    const seen = readFileSync(path.join(dir, "seen"), "utf8");
    expect(seen).toBe("600\n#!/bin/sh\n# demo b-7\n");
    expect(existsSync(path.join(dir, "scripts", "b-7.job"))).toBe(false);
  });

  it("a refused submission fails FAILED_PRECONDITION, quoting the scheduler", async () => {
    await expect(provider("refuse").submitBlock(launch)).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: "fake-submit refused the block: submit: error: no such queue",
    });
    expect(existsSync(path.join(dir, "scripts", "b-7.job"))).toBe(false);
  });

  it("asks for states only with ids, and tolerates a status command that names unknown jobs", async () => {
    expect((await provider("down").status([])).size).toBe(0);
    const states = await provider("unknown").status(["5", "6"]);
    expect(states.get("5")?.state).toBe("running");
    expect(states.get("6")?.state).toBe("missing");
    await expect(provider("down").status(["5"])).rejects.toMatchObject({
      code: "UNAVAILABLE",
      message: "fake-status failed: status: error: server down",
    });
  });

  it("cancelling a job that has ended is no failure; a scheduler that cannot cancel is UNAVAILABLE", async () => {
    await expect(provider("ok").cancel("5")).resolves.toBeUndefined();
    await expect(provider("ended").cancel("5")).resolves.toBeUndefined();
    await expect(provider("down").cancel("5")).rejects.toMatchObject({
      code: "UNAVAILABLE",
      message: "fake-cancel 5 failed: cancel: error: server down",
    });
  });
});
