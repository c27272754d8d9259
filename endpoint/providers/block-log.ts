import { closeSync, fstatSync, openSync, readSync } from "node:fs";

/**
 * The last lines of a block's log (what its job script and manager printed), to put beside a
 * scheduler's verdict when a block dies before it connects: that is where `module: command not
 * found` or a Python traceback from worker-init shows up. Empty when there is no log (yet).
 */
export function blockLogTail(file: string, maxLines = 5, maxBytes = 4096): string {
  let fd: number | undefined;
  try {
    fd = openSync(file, "r");
    const size = fstatSync(fd).size;
    const len = Math.min(size, maxBytes);
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, size - len);
    return buf
      .toString("utf8")
      .split("\n")
      .map((l) => l.trimEnd())
      .filter((l) => l.length > 0)
      .slice(-maxLines)
      .join(" | ");
  } catch {
    return "";
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
