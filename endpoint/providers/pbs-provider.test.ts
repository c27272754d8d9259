import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

import { mapPbsJob, parseQstatJson, parseQsubOutput, pbsScript, pbsSelect } from "./pbs-provider.js";
import type { PbsScriptConfig } from "./pbs-provider.js";

const fixtures = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "test",
  "fixtures",
  "pbs",
);
const fixture = (name: string) => readFileSync(path.join(fixtures, name), "utf8");

const base: PbsScriptConfig = {
  nodesPerBlock: 1,
  walltime: "00:30:00",
  workerInit: "",
  schedulerOptions: "",
  queue: undefined,
  account: undefined,
  cpusPerNode: undefined,
  gpusPerNode: undefined,
  memPerNode: undefined,
  selectOptions: "",
  launcher: undefined,
};
const launch = {
  blockId: "b-1",
  command: ["/usr/bin/node", "/opt/fabric/manager.js", "--agent", "login1:7000"],
  env: { FABRIC_BLOCK_SECRET: "s3cr'et" },
  logFile: "/home/u/.fabric/endpoints/hpc/blocks/b-1.log",
};

/** Every setting used, as on a Polaris-like system. */
const polaris: PbsScriptConfig = {
  ...base,
  nodesPerBlock: 2,
  cpusPerNode: 64,
  gpusPerNode: 4,
  memPerNode: "256gb",
  selectOptions: "system=polaris",
  queue: "debug",
  account: "Proj",
  schedulerOptions: "-l filesystems=home:eagle\n#PBS -m n",
  workerInit: "module load conda\nconda activate fabric",
};

describe("PBS job script", () => {
  it("writes select, walltime, queue, account, raw options and worker-init before the manager", () => {
    const script = pbsScript(polaris, launch);
    const lines = script.split("\n");
    expect(lines[0]).toBe("#!/bin/bash");
    expect(lines).toContain("#PBS -l select=2:ncpus=64:ngpus=4:mem=256gb:system=polaris");
    expect(lines).toContain("#PBS -l place=scatter");
    expect(lines).toContain("#PBS -l walltime=00:30:00");
    expect(lines).toContain("#PBS -q debug");
    expect(lines).toContain("#PBS -A Proj");
    expect(lines).toContain("#PBS -l filesystems=home:eagle");
    expect(lines).toContain("#PBS -m n");
    expect(lines).toContain("#PBS -o /home/u/.fabric/endpoints/hpc/blocks/b-1.log");
    // Directives come before any command; worker-init runs before the launcher.
    const lastDirective = lines.findLastIndex((l) => l.startsWith("#PBS"));
    const init = lines.indexOf("module load conda");
    const launcher = lines.findIndex((l) => l.startsWith("exec mpiexec -n 2 -ppn 1 "));
    expect(lastDirective).toBeLessThan(init);
    expect(init).toBeLessThan(launcher);
    expect(lines).toContain(`export FABRIC_BLOCK_SECRET='s3cr'\\''et'`);
    expect(lines).toContain("export FABRIC_BLOCK_WALLTIME_S=1800");
  });

  it("starts a one-node block's manager directly", () => {
    expect(pbsSelect(base)).toBe("1");
    expect(pbsScript(base, launch)).toContain(
      "\nexec /usr/bin/node /opt/fabric/manager.js --agent login1:7000\n",
    );
  });

  it("reads the job id qsub prints", () => {
    expect(parseQsubOutput("1013.vm-priboy\n")).toBe("1013.vm-priboy");
    expect(parseQsubOutput("2154.edtb-01.mcp.alcf.anl.gov\n")).toBe("2154.edtb-01.mcp.alcf.anl.gov");
    expect(parseQsubOutput("qsub: Unknown queue\n")).toBeUndefined();
  });
});

describe("qstat -f -F json (recorded outputs)", () => {
  it("a running job is running, with its start time", () => {
    const s = parseQstatJson(fixture("qstat-running-20.0.1.json"), "", ["1008.qot-calc0"]).get(
      "1008.qot-calc0",
    )!;
    expect(s.state).toBe("running");
    expect(s.native).toBe("R");
    expect(new Date(s.startedAtMs!).getFullYear()).toBe(2021);
  });

  it("queued, held and running jobs on Polaris; ids may be given without the server suffix", () => {
    const out = parseQstatJson(fixture("qstat-polaris-2022.1.1.json"), "", [
      "359322",
      "412020.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov",
      "1147579",
    ]);
    expect(out.get("359322")).toMatchObject({
      state: "pending",
      reason: "Not Running: Job is requesting an exclusive node and node is in use",
    });
    const held = out.get("412020.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov")!;
    expect(held.state).toBe("held");
    expect(held.reason).toContain("Exit_status -3");
    expect(held.reason).toContain("too many failed attempts to run");
    expect(out.get("1147579")!.state).toBe("running");
  });

  it("a finished job with Exit_status 0 is completed", () => {
    const s = parseQstatJson(fixture("qstat-finished-19.2.8.json"), "", ["4732778.login02"]).get(
      "4732778.login02",
    )!;
    expect(s).toMatchObject({ state: "completed", native: "F" });
  });

  it("ids qstat does not know are missing, naming PBS's answer", () => {
    const out = parseQstatJson("", fixture("qstat-unknown.stderr"), ["2001.g3", "2002.g3"]);
    expect(out.get("2001.g3")).toMatchObject({ state: "missing" });
    expect(out.get("2001.g3")!.reason).toMatch(/Unknown Job Id/);
  });
});

describe("PBS state mapping with Exit_status", () => {
  // Attribute sets as qstat -x reports finished jobs (job_state F with substate and Exit_status).
  it("a failed or deleted job is never completed", () => {
    expect(mapPbsJob({ job_state: "F", substate: 93, Exit_status: 1 }).state).toBe("failed");
    expect(mapPbsJob({ job_state: "F", substate: 91, Exit_status: 271 }).state).toBe("cancelled");
    expect(mapPbsJob({ job_state: "F", substate: 91 }).state).toBe("cancelled");
    expect(mapPbsJob({ job_state: "F" }).state).toBe("cancelled");
    expect(mapPbsJob({ job_state: "F", Exit_status: 271, comment: "Job deleted by user" }).state).toBe(
      "cancelled",
    );
    expect(mapPbsJob({ job_state: "F", Exit_status: 265 }).reason).toContain("killed by signal 9");
  });

  it("walltime, memory and PBS's own failures map to timeout, out of memory, failed", () => {
    expect(mapPbsJob({ job_state: "F", Exit_status: -29 }).state).toBe("timeout");
    expect(
      mapPbsJob({ job_state: "F", Exit_status: 271, comment: "job killed: walltime 65 exceeded limit 60" })
        .state,
    ).toBe("timeout");
    expect(mapPbsJob({ job_state: "F", Exit_status: -27 }).state).toBe("out_of_memory");
    expect(mapPbsJob({ job_state: "F", Exit_status: -1 })).toMatchObject({ state: "failed" });
    expect(mapPbsJob({ job_state: "F", Exit_status: -1 }).reason).toContain("JOB_EXEC_FAIL1");
    expect(mapPbsJob({ job_state: "F", Exit_status: -20 }).state).toBe("node_failure");
  });

  it("other states: exiting is still running, waiting is pending, moved is gone", () => {
    expect(mapPbsJob({ job_state: "E" }).state).toBe("running");
    expect(mapPbsJob({ job_state: "W" }).state).toBe("pending");
    expect(mapPbsJob({ job_state: "M" }).state).toBe("missing");
    expect(mapPbsJob({ job_state: "Z" }).state).toBe("unknown");
  });
});
