import type { ChildProcess } from "node:child_process";

const live = new Set<ChildProcess>();
let installed = false;

/**
 * Kills `proc` if this process exits while it still runs: a test run, benchmark or demo that
 * crashes must not leave brokers, agents and NATS servers behind. (A clean stop ends them first;
 * this is the safety net.)
 */
export function reapOnExit(proc: ChildProcess): void {
  if (!installed) {
    installed = true;
    process.once("exit", () => {
      for (const p of live) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    });
  }
  live.add(proc);
  proc.once("exit", () => live.delete(proc));
}
