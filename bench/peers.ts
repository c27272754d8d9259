import { execFileSync } from "node:child_process";
import path from "node:path";

import { ROOT } from "../devkit/processes.js";

/** Dask distributed on this machine, same no-op tasks, same number of worker processes. */
export async function dask(workers = 2): Promise<Record<string, number>> {
  execFileSync("bash", [path.join(ROOT, "scripts", "ensure-system.sh"), "python3-distributed"], {
    stdio: "inherit",
  });
  const out = execFileSync(
    "python3",
    [path.join(ROOT, "bench", "dask_peer.py"), String(workers), "1000", "20000"],
    {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
      timeout: 600_000,
    },
  );
  const line = out.trim().split("\n").pop() ?? "{}";
  return JSON.parse(line) as Record<string, number>;
}
