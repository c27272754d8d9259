#!/usr/bin/env node
// A stand-in for PBS's qsub, qstat and qdel, for tests on machines without a PBS server. It
// really runs each job script (in the background, in its own process group) with PBS_JOBID,
// PBS_NODEFILE, PBS_O_WORKDIR and PBS_JOBNAME set, honours -o/-j oe and the walltime, and answers
// `qstat -x -f -F json` in PBS Pro's format: job_state Q/R/F, substate, Exit_status, comment, stime.
// State lives in $PBS_STANDIN_DIR (one JSON file per job).
import { spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  writeFileSync,
} from "node:fs";
import { hostname } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const dir = process.env.PBS_STANDIN_DIR;
if (!dir) {
  process.stderr.write("pbs stand-in: PBS_STANDIN_DIR is not set\n");
  process.exit(2);
}
mkdirSync(dir, { recursive: true });
const server = "standin";
const self = fileURLToPath(import.meta.url);
const recordFile = (id) => path.join(dir, `${id.split(".")[0]}.json`);
const read = (id) =>
  existsSync(recordFile(id)) ? JSON.parse(readFileSync(recordFile(id), "utf8")) : undefined;
const write = (job) => {
  const tmp = `${recordFile(job.id)}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(job));
  renameSync(tmp, recordFile(job.id));
};
const pbsTime = (ms) => {
  const d = new Date(ms);
  const day = d.toLocaleString("en-US", { weekday: "short" });
  const mon = d.toLocaleString("en-US", { month: "short" });
  const pad = (n) => String(n).padStart(2, "0");
  return `${day} ${mon} ${String(d.getDate()).padStart(2, " ")} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${d.getFullYear()}`;
};
const walltimeSeconds = (w) =>
  w
    ? w
        .split(":")
        .map(Number)
        .reduce((a, b) => a * 60 + b, 0)
    : 0;

function qsub(args) {
  const script = args.at(-1);
  if (!script || !existsSync(script)) {
    process.stderr.write(`qsub: script file:: No such file or directory\n`);
    return 2;
  }
  const text = readFileSync(script, "utf8");
  const opts = { N: path.basename(script), o: "", j: "", resources: {}, q: "workq", A: "" };
  for (const line of text.split("\n")) {
    const m = /^#PBS\s+-(\w)\s*(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, flag, value] = m;
    if (flag === "l") {
      for (const kv of value.split(",")) {
        const i = kv.indexOf("=");
        opts.resources[kv.slice(0, i)] = kv.slice(i + 1);
      }
    } else if (flag in opts) opts[flag] = value.trim();
  }
  if (opts.q === "nonexistent") {
    process.stderr.write("qsub: Unknown queue\n");
    return 170;
  }
  const seqFile = path.join(dir, "seq");
  const seq = (existsSync(seqFile) ? Number(readFileSync(seqFile, "utf8")) : 0) + 1;
  writeFileSync(seqFile, String(seq));
  const id = `${seq}.${server}`;
  const nodes = Number((opts.resources.select ?? "1").split(":")[0]) || 1;
  const job = {
    id,
    name: opts.N,
    state: "Q",
    substate: 10,
    queue: opts.q,
    account: opts.A,
    resources: opts.resources,
    nodes,
    out: opts.o,
    ctime: Date.now(),
    script: text,
    workdir: process.cwd(),
    comment: "Not Running: queued",
  };
  write(job);
  const runner = spawn(process.execPath, [self, "__run", id], {
    detached: true,
    stdio: "ignore",
    env: process.env,
  });
  runner.unref();
  process.stdout.write(`${id}\n`);
  return 0;
}

async function run(id) {
  const job = read(id);
  const scriptFile = path.join(dir, `${id.split(".")[0]}.sh`);
  writeFileSync(scriptFile, job.script, { mode: 0o700 });
  const nodefile = path.join(dir, `${id.split(".")[0]}.nodes`);
  writeFileSync(nodefile, `${Array.from({ length: job.nodes }, () => hostname()).join("\n")}\n`);
  const outFd = job.out ? openSync(job.out, "a") : "ignore";
  const child = spawn("/bin/bash", [scriptFile], {
    cwd: job.workdir,
    detached: true,
    stdio: ["ignore", outFd, outFd],
    env: {
      ...process.env,
      PBS_JOBID: id,
      PBS_JOBNAME: job.name,
      PBS_NODEFILE: nodefile,
      PBS_O_WORKDIR: job.workdir,
      PBS_QUEUE: job.queue,
      PBS_ENVIRONMENT: "PBS_BATCH",
    },
  });
  if (typeof outFd === "number") closeSync(outFd);
  const fresh = read(id);
  if (fresh.deleted) {
    process.kill(-child.pid, "SIGKILL");
  }
  Object.assign(fresh, {
    state: "R",
    substate: 42,
    pid: child.pid,
    stime: Date.now(),
    comment: `Job run at ${pbsTime(Date.now())} on (${hostname()}:ncpus=1)`,
  });
  write(fresh);
  let timedOut = false;
  const wall = walltimeSeconds(job.resources.walltime);
  const timer =
    wall > 0
      ? setTimeout(() => {
          timedOut = true;
          try {
            process.kill(-child.pid, "SIGKILL");
          } catch {
            /* already gone */
          }
        }, wall * 1000)
      : undefined;
  const [code, signal] = await new Promise((r) => child.once("exit", (c, s) => r([c, s])));
  if (timer) clearTimeout(timer);
  const done = read(id);
  const sig = signal ? ({ SIGTERM: 15, SIGKILL: 9, SIGINT: 2 }[signal] ?? 9) : 0;
  if (done.deleted)
    Object.assign(done, {
      substate: 91,
      Exit_status: 256 + (sig || 15),
      comment: "Job deleted by user (qdel)",
    });
  else if (timedOut)
    Object.assign(done, {
      substate: 93,
      Exit_status: -29,
      comment: `job killed: walltime ${wall} exceeded limit ${wall}`,
    });
  else if (sig)
    Object.assign(done, {
      substate: 93,
      Exit_status: 256 + sig,
      comment: "Job run and terminated by a signal",
    });
  else
    Object.assign(done, {
      substate: code === 0 ? 92 : 93,
      Exit_status: code,
      comment: `${done.comment} and finished`,
    });
  done.state = "F";
  done.mtime = Date.now();
  write(done);
}

function qstat(args) {
  const ids = args.filter((a) => !a.startsWith("-") && a !== "json");
  const jobs = {};
  let unknown = "";
  for (const id of ids) {
    const j = read(id);
    if (!j) {
      unknown += `qstat: Unknown Job Id ${id}\n`;
      continue;
    }
    jobs[j.id] = {
      Job_Name: j.name,
      Job_Owner: `${process.env.USER ?? "root"}@${hostname()}`,
      job_state: j.state,
      queue: j.queue,
      server,
      ...(j.account ? { Account_Name: j.account } : {}),
      ctime: pbsTime(j.ctime),
      Resource_List: { ...j.resources, nodect: j.nodes },
      ...(j.stime ? { stime: pbsTime(j.stime) } : {}),
      ...(j.mtime ? { mtime: pbsTime(j.mtime) } : {}),
      substate: j.substate,
      comment: j.comment,
      ...(j.Exit_status !== undefined ? { Exit_status: j.Exit_status } : {}),
      Submit_arguments: "",
      project: "_pbs_project_default",
    };
  }
  process.stdout.write(
    `${JSON.stringify({ timestamp: Math.floor(Date.now() / 1000), pbs_version: "stand-in", pbs_server: server, Jobs: jobs }, null, 4)}\n`,
  );
  process.stderr.write(unknown);
  return unknown ? 153 : 0;
}

function qdel(args) {
  let rc = 0;
  for (const id of args.filter((a) => !a.startsWith("-"))) {
    const j = read(id);
    if (!j) {
      process.stderr.write(`qdel: Unknown Job Id ${id}\n`);
      rc = 153;
      continue;
    }
    if (j.state === "F") {
      process.stderr.write(`qdel: Job has finished ${id}\n`);
      rc = 35;
      continue;
    }
    j.deleted = true;
    write(j);
    if (j.pid) {
      try {
        process.kill(-j.pid, "SIGTERM");
        setTimeout(() => {
          try {
            process.kill(-j.pid, "SIGKILL");
          } catch {
            /* already gone */
          }
        }, 1000);
      } catch {
        // The job's processes are already gone.
      }
    }
  }
  return rc;
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === "__run") await run(args[0]);
else if (cmd === "qsub") process.exitCode = qsub(args);
else if (cmd === "qstat") process.exitCode = qstat(args);
else if (cmd === "qdel") process.exitCode = qdel(args);
else if (cmd === "list")
  process.stdout.write(
    readdirSync(dir)
      .filter((f) => f.endsWith(".json"))
      .map((f) => read(f.replace(".json", "")))
      .map((j) => `${j.id} ${j.state}`)
      .join("\n") + "\n",
  );
else {
  process.stderr.write(`pbs stand-in: unknown command ${cmd}\n`);
  process.exitCode = 2;
}
