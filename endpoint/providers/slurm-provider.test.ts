import { describe, expect, it } from "vitest";

import { formatWalltime, launcherLine, parseWalltime, shellQuote } from "./batch-script.js";
import { mapSlurmState, parseSacct, parseSbatchOutput, parseSqueue, slurmScript } from "./slurm-provider.js";
import type { SlurmScriptConfig } from "./slurm-provider.js";

const base: SlurmScriptConfig = {
  nodesPerBlock: 1,
  walltime: "01:00:00",
  workerInit: "",
  schedulerOptions: "",
  partition: undefined,
  account: undefined,
  qos: undefined,
  constraint: undefined,
  coresPerNode: undefined,
  memPerNode: undefined,
  gpusPerNode: undefined,
  exclusive: false,
  launcher: undefined,
};
const launch = {
  blockId: "b-42",
  command: ["/usr/bin/node", "/opt/fabric/manager.js", "--agent", "login1:7000", "--workers", "8"],
  env: { FABRIC_BLOCK_SECRET: "abc" },
  logFile: "/scratch/u/blocks/b-42.log",
};

describe("sbatch script", () => {
  it("carries every configured resource, raw options and worker-init, then one manager per node via srun", () => {
    const script = slurmScript(
      {
        ...base,
        nodesPerBlock: 4,
        partition: "gpu",
        account: "m1234",
        qos: "debug",
        constraint: "a100",
        coresPerNode: 64,
        memPerNode: "200G",
        gpusPerNode: 4,
        exclusive: true,
        walltime: "00:20:00",
        schedulerOptions: "--reservation=beamtime\n#SBATCH --mail-type=NONE",
        workerInit: "module load python\nsource /opt/env/bin/activate",
      },
      launch,
    );
    const lines = script.split("\n");
    for (const d of [
      "--job-name=fabric-b-42",
      "--output=/scratch/u/blocks/b-42.log",
      "--nodes=4",
      "--ntasks-per-node=1",
      "--cpus-per-task=64",
      "--mem=200G",
      "--gpus-per-node=4",
      "--time=00:20:00",
      "--partition=gpu",
      "--account=m1234",
      "--qos=debug",
      "--constraint=a100",
      "--exclusive",
      "--reservation=beamtime",
      "--mail-type=NONE",
    ]) {
      expect(lines).toContain(`#SBATCH ${d}`);
    }
    const lastDirective = lines.findLastIndex((l) => l.startsWith("#SBATCH"));
    expect(lines.indexOf("module load python")).toBeGreaterThan(lastDirective);
    const launcher = lines.findIndex((l) =>
      l.startsWith("exec srun --nodes=4 --ntasks=4 --ntasks-per-node=1"),
    );
    expect(launcher).toBeGreaterThan(lines.indexOf("source /opt/env/bin/activate"));
    expect(lines[launcher]).toContain("/usr/bin/node /opt/fabric/manager.js --agent login1:7000 --workers 8");
    expect(lines).toContain("export FABRIC_BLOCK_WALLTIME_S=1200");
  });

  it("omits what is not configured and runs a one-node block's manager directly", () => {
    const script = slurmScript(base, launch);
    expect(script).not.toMatch(/--partition|--account|--qos|--constraint|--exclusive|--mem|--gpus/);
    expect(script).toContain("\nexec /usr/bin/node /opt/fabric/manager.js");
  });

  it("launchers: single, srun, mpiexec (with options)", () => {
    const cmd = ["node", "m.js"];
    expect(launcherLine({ type: "single" }, 1, cmd)).toBe("exec node m.js");
    expect(launcherLine({ type: "srun", options: "--cpu-bind=none" }, 2, cmd)).toBe(
      "exec srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=0 --cpu-bind=none node m.js",
    );
    expect(launcherLine({ type: "mpiexec" }, 3, cmd)).toBe("exec mpiexec -n 3 -ppn 1 node m.js");
    expect(launcherLine({ type: "mpiexec", options: "--map-by ppr:1:node" }, 3, cmd)).toBe(
      "exec mpiexec -n 3 --map-by ppr:1:node node m.js",
    );
  });

  it("quotes words and walltimes both ways", () => {
    expect(shellQuote("plain/path-1.js")).toBe("plain/path-1.js");
    expect(shellQuote("it's $HOME")).toBe(`'it'\\''s $HOME'`);
    expect(parseWalltime("01:30:00")).toBe(5400);
    expect(parseWalltime("1-00:00:00")).toBe(86_400);
    expect(parseWalltime("45")).toBe(45);
    expect(parseWalltime("10:00")).toBe(600);
    expect(parseWalltime("soon")).toBeUndefined();
    expect(formatWalltime(90_061)).toBe("25:01:01");
  });
});

describe("Slurm outputs", () => {
  it("reads job ids from sbatch", () => {
    expect(parseSbatchOutput("123\n")).toBe("123");
    expect(parseSbatchOutput("123;cluster2\n")).toBe("123");
    expect(parseSbatchOutput("Submitted batch job 77\n")).toBe("77");
    expect(parseSbatchOutput("")).toBeUndefined();
  });

  it("maps every Slurm state, long and short names, and held pending jobs", () => {
    const cases: Array<[string, string, string]> = [
      ["PENDING", "Resources", "pending"],
      ["PD", "Priority", "pending"],
      ["PENDING", "JobHeldUser", "held"],
      ["PENDING", "JobHeldAdmin", "held"],
      ["CONFIGURING", "None", "pending"],
      ["RUNNING", "None", "running"],
      ["COMPLETING", "None", "running"],
      ["COMPLETED", "None", "completed"],
      ["FAILED", "NonZeroExitCode", "failed"],
      ["CANCELLED", "None", "cancelled"],
      ["CANCELLED by 1000", "", "cancelled"],
      ["TIMEOUT", "TimeLimit", "timeout"],
      ["NODE_FAIL", "None", "node_failure"],
      ["BOOT_FAIL", "None", "node_failure"],
      ["PREEMPTED", "None", "preempted"],
      ["OUT_OF_MEMORY", "OutOfMemory", "out_of_memory"],
      ["OOM", "", "out_of_memory"],
      ["REQUEUE_HOLD", "", "held"],
      ["DEADLINE", "", "timeout"],
      ["SOMETHING_NEW", "", "unknown"],
    ];
    for (const [native, reason, state] of cases)
      expect(mapSlurmState(native, reason).state, native).toBe(state);
    expect(mapSlurmState("PENDING", "PartitionDown").reason).toBe("PENDING: PartitionDown");
  });

  it("parses squeue -t all and sacct lines (as printed by Slurm 22.05)", () => {
    const sq = parseSqueue(
      "1|COMPLETED|None|2026-11-22T04:32:30\n2|PENDING|Resources|N/A\n3|CANCELLED|None|2026-11-22T04:40:01\n",
    );
    expect(sq.get("1")).toMatchObject({ state: "completed" });
    expect(sq.get("1")!.startedAtMs).toBe(new Date("2026-11-22T04:32:30").getTime());
    expect(sq.get("2")).toMatchObject({ state: "pending", reason: "PENDING: Resources" });
    expect(sq.get("2")!.startedAtMs).toBeUndefined();
    expect(sq.get("3")!.state).toBe("cancelled");
    const sa = parseSacct(
      "10|CANCELLED by 0|0:15|2026-11-22T05:00:00\n10.batch|CANCELLED|0:15|2026-11-22T05:00:00\n11|OUT_OF_MEMORY|0:125|2026-11-22T05:01:00\n12|RUNNING|0:0|2026-11-22T05:02:00\n",
    );
    expect(sa.get("10")).toMatchObject({ state: "cancelled" });
    expect(sa.get("10")!.reason).toContain("by uid 0");
    expect(sa.has("10.batch")).toBe(false);
    expect(sa.get("11")).toMatchObject({ state: "out_of_memory" });
    expect(sa.get("11")!.reason).toContain("exit 0:125");
    expect(sa.get("12")!.state).toBe("running");
  });
});
