import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir, userInfo } from "node:os";
import path from "node:path";

import { writeConfigFile } from "./config-file.js";
import { freePort } from "./nats-server.js";
import { ROOT } from "./processes.js";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function onPath(cmd: string): boolean {
  return (
    spawnSync("sh", ["-c", `command -v ${cmd} || test -x /usr/sbin/${cmd}`], { stdio: "ignore" }).status === 0
  );
}

/** Installs slurm-wlm and munge with apt when they are missing (through scripts/ensure-system.sh). */
export function ensureSlurmInstalled(): void {
  if (onPath("sbatch") && onPath("slurmctld") && onPath("slurmd") && onPath("munged")) return;
  const r = spawnSync("bash", [path.join(ROOT, "scripts", "ensure-system.sh"), "slurm-wlm", "munge"], {
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (r.status !== 0) throw new Error("cannot install slurm-wlm and munge (scripts/ensure-system.sh failed)");
}

/**
 * The `provider` block of an endpoint that runs its workers on a {@link SlurmCluster}: elastic
 * from 0 blocks to 1, one worker on one core per block, a 10-minute walltime, the scheduler polled
 * every 0.5 s. `extra` fields are merged over it.
 */
export function slurmProviderConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: "slurm",
    initBlocks: 0,
    minBlocks: 0,
    maxBlocks: 1,
    workersPerNode: 1,
    coresPerNode: 1,
    walltime: "00:10:00",
    statusIntervalSeconds: 0.5,
    ...extra,
  };
}

/** Options of {@link SlurmCluster.start}. */
export interface SlurmClusterOptions {
  /** CPUs of the one node. @default 2 */
  readonly cpus?: number;
  /** Memory of the node in MB. @default 2048 */
  readonly memoryMb?: number;
  /** slurm.conf `SchedulerParameters`. @default Slurm's defaults */
  readonly schedulerParameters?: string;
}

/**
 * A real one-node Slurm cluster for tests, benchmarks and the demo: munged, slurmctld and slurmd
 * in a temporary directory, on a free port pair, with their own munge key and socket, so nothing
 * is shared with a Slurm already on the machine. Slurm commands reach it through `env` (SLURM_CONF).
 * `stop()` cancels its jobs and ends every process it started, by pid.
 */
export class SlurmCluster {
  private readonly procs: ChildProcess[] = [];
  private constructor(
    readonly dir: string,
    readonly confFile: string,
    readonly partition: string,
  ) {}

  /** Environment for Slurm commands and for anything that submits to this cluster. */
  get env(): Record<string, string> {
    return { SLURM_CONF: this.confFile };
  }

  static async start(opts: SlurmClusterOptions = {}): Promise<SlurmCluster> {
    ensureSlurmInstalled();
    const dir = mkdtempSync(path.join(tmpdir(), "fabric-slurm-"));
    // munged wants every directory above its socket to be searchable by all.
    chmodSync(dir, 0o755);
    const keyDir = path.join(dir, "munge-key");
    const runDir = path.join(dir, "run");
    for (const d of [keyDir, runDir, path.join(dir, "state"), path.join(dir, "spool")])
      mkdirSync(d, { recursive: true });
    chmodSync(keyDir, 0o700);
    chmodSync(runDir, 0o755);
    const key = path.join(keyDir, "munge.key");
    writeFileSync(key, randomBytes(1024), { mode: 0o400 });
    const socket = path.join(runDir, "munge.socket");
    const confFile = path.join(dir, "slurm.conf");
    const cluster = new SlurmCluster(dir, confFile, "debug");
    try {
      cluster.spawnDaemon("munged", [
        "-F",
        `--key-file=${key}`,
        `--socket=${socket}`,
        `--pid-file=${path.join(runDir, "munged.pid")}`,
        `--log-file=${path.join(dir, "munged.log")}`,
        `--seed-file=${path.join(keyDir, "munged.seed")}`,
      ]);
      await cluster.waitFor(
        () => existsSync(socket),
        10_000,
        "munged did not create its socket",
        "munged.log",
      );
      const [ctldPort, dPort] = await twoFreePorts();
      const user = userInfo().username;
      writeConfigFile(confFile, [
        "ClusterName=fabrictest",
        "SlurmctldHost=localhost",
        `SlurmctldPort=${ctldPort}`,
        `SlurmdPort=${dPort}`,
        `SlurmUser=${user}`,
        `SlurmdUser=${user}`,
        "AuthType=auth/munge",
        "CredType=cred/munge",
        `AuthInfo=socket=${socket}`,
        `StateSaveLocation=${path.join(dir, "state")}`,
        `SlurmdSpoolDir=${path.join(dir, "spool")}`,
        `SlurmctldPidFile=${path.join(runDir, "slurmctld.pid")}`,
        `SlurmdPidFile=${path.join(runDir, "slurmd.pid")}`,
        `SlurmctldLogFile=${path.join(dir, "slurmctld.log")}`,
        `SlurmdLogFile=${path.join(dir, "slurmd.log")}`,
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        ...(opts.schedulerParameters ? [`SchedulerParameters=${opts.schedulerParameters}`] : []),
        "MpiDefault=none",
        "ReturnToService=2",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        "MinJobAge=300",
        "KillWait=2",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        `NodeName=localhost NodeHostname=${hostname()} CPUs=${opts.cpus ?? 2} RealMemory=${opts.memoryMb ?? 2048} State=UNKNOWN`,
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
      ]);
      cluster.spawnDaemon("slurmctld", ["-D", "-f", confFile]);
      cluster.spawnDaemon("slurmd", ["-D", "-f", confFile]);
      await cluster.waitFor(
        () => /^idle/m.test(cluster.command(["sinfo", "-h", "-o", "%t"]).stdout),
        30_000,
        "the Slurm node did not become idle",
        "slurmctld.log",
      );
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  /** Runs a Slurm client command against this cluster (synchronously; for setup and tests). */
  command(argv: readonly string[], timeoutMs = 15_000): { code: number; stdout: string; stderr: string } {
    const [exe, ...args] = argv;
    const r = spawnSync(exe!, args, {
      env: { ...process.env, ...this.env },
      encoding: "utf8",
      timeout: timeoutMs,
    });
    return { code: r.status ?? 1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
  }

  /** The job's state as squeue shows it (`RUNNING`, `CANCELLED`, ...), or "" when unknown. */
  jobState(jobId: string): string {
    return this.command(["squeue", "-h", "-t", "all", "-j", jobId, "-o", "%T"]).stdout.trim();
  }

  /**
   * When slurmctld accepted a job and when it started it (allocated its nodes), from its log, to
   * the millisecond: `squeue` shows start times to the second only. Undefined while not logged.
   */
  jobTimes(jobId: string): { submittedAtMs?: number; startedAtMs?: number } {
    const file = path.join(this.dir, "slurmctld.log");
    const text = existsSync(file) ? readFileSync(file, "utf8") : "";
    const out: { submittedAtMs?: number; startedAtMs?: number } = {};
    const id = new RegExp(`\\bJobId=${jobId}\\b`);
    for (const line of text.split("\n")) {
      const m = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\] (.*)$/.exec(line);
      if (!m || !id.test(m[2]!)) continue;
      // slurmctld logs local time without a zone, as Date reads such a string.
      const at = new Date(m[1]!).getTime();
      if (/_slurm_rpc_submit_batch_job:/.test(m[2]!)) out.submittedAtMs ??= at;
      else if (/sched: Allocate JobId=|_start_job: Started JobId=/.test(m[2]!)) out.startedAtMs ??= at;
    }
    return out;
  }

  /** Ids of this cluster's jobs in the given states (`squeue -t`). */
  jobs(states = "all"): string[] {
    return this.command(["squeue", "-h", "-t", states, "-o", "%i"])
      .stdout.split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
  }

  /** Cancels every job, then stops slurmd, slurmctld and munged (by pid) and removes the directory. */
  async stop(): Promise<void> {
    if (this.procs.some((p) => p.exitCode === null && p.signalCode === null) && existsSync(this.confFile)) {
      this.command(["scancel", "--full", "-u", userInfo().username], 5000);
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline && this.jobs("PENDING,RUNNING,COMPLETING,CONFIGURING").length > 0)
        await sleep(100);
    }
    for (const p of [...this.procs].reverse()) {
      if (p.exitCode !== null || p.signalCode !== null) continue;
      const gone = new Promise((r) => p.once("exit", r));
      p.kill("SIGTERM");
      const timer = setTimeout(() => p.kill("SIGKILL"), 5000);
      await gone;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  private spawnDaemon(name: string, args: string[]): void {
    const child = spawn(name, args, {
      env: { ...process.env, ...this.env },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let err = "";
    child.stderr?.on("data", (d: Buffer) => {
      if (err.length < 20_000) err += d.toString();
    });
    child.once("error", (e) => {
      err += `cannot start ${name}: ${e.message}`;
    });
    (child as ChildProcess & { stderrText?: () => string }).stderrText = () => err;
    this.procs.push(child);
  }

  private async waitFor(
    cond: () => boolean,
    timeoutMs: number,
    what: string,
    logName: string,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      const dead = this.procs.find((p) => p.exitCode !== null || p.signalCode !== null);
      if (dead || Date.now() > deadline) {
        const log = path.join(this.dir, logName);
        const text = existsSync(log) ? readFileSync(log, "utf8").slice(-3000) : "";
        const stderr = this.procs
          .map((p) => (p as ChildProcess & { stderrText?: () => string }).stderrText?.() ?? "")
          .join("\n")
          .slice(-3000);
        throw new Error(
          `${what}${dead ? ` (${dead.spawnfile} exited with ${dead.exitCode ?? dead.signalCode})` : ""}:\n${stderr}\n${text}`,
        );
      }
      await sleep(100);
    }
  }
}

async function twoFreePorts(): Promise<[number, number]> {
  const a = await freePort();
  let b = await freePort();
  while (b === a) b = await freePort();
  return [a, b];
}
