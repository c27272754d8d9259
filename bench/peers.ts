import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";

import { ROOT } from "../devkit/index.js";
import { LATENCY_WARMUP } from "./core.js";

/** Dask distributed on this machine, same no-op tasks, same number of worker processes. */
export async function dask(workers = 2): Promise<Record<string, number>> {
  execFileSync("bash", [path.join(ROOT, "scripts", "ensure-system.sh"), "python3-distributed"], {
    stdio: "inherit",
  });
  // Debian's python3 has python3-distributed; a pyenv shim earlier on PATH would not.
  const python = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  const out = execFileSync(
    python,
    [path.join(ROOT, "bench", "dask_peer.py"), String(workers), "1000", "20000", String(LATENCY_WARMUP)],
    {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
      timeout: 600_000,
    },
  );
  const line = out.trim().split("\n").pop() ?? "{}";
  return JSON.parse(line) as Record<string, number>;
}
