/**
 * Killing a worker with everything it started. A shell command runs in its own process group (so
 * that its walltime can end the whole command), and a function may start processes that leave
 * their group (setsid, daemons): killing the worker, or its group, would orphan them. The tree is
 * read from /proc before anything is killed, while every descendant still names its parent.
 */
import { readdirSync, readFileSync } from "node:fs";

/** Parent of each process, from /proc; empty where there is no /proc (not Linux). */
function parents(): Map<number, number> {
  const out = new Map<number, number>();
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return out;
  }
  for (const name of entries) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    try {
      // "pid (comm) state ppid …": comm may hold spaces and parentheses; the last ")" ends it.
      const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (Number.isInteger(ppid)) out.set(pid, ppid);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Every descendant of `pid` alive now (children, their children, …), `pid` not included. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const [child, parent] of parents()) {
    const list = children.get(parent) ?? [];
    list.push(child);
    children.set(parent, list);
  }
  const out: number[] = [];
  const todo = [...(children.get(pid) ?? [])];
  for (let p = todo.pop(); p !== undefined; p = todo.pop()) {
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/**
 * SIGKILLs `pid`, its process group if it leads one, and every descendant with the groups they
 * lead: nothing the worker started outlives it.
 */
export function killTree(pid: number): void {
  // Stopped first, so that none of them forks a process the second look would miss.
  const first = [pid, ...descendants(pid)];
  signalAll(first, "SIGSTOP");
  const all = new Set([...first, ...descendants(pid)]);
  signalAll(all, "SIGKILL");
}

function signalAll(pids: Iterable<number>, signal: NodeJS.Signals): void {
  for (const p of pids) {
    for (const target of [-p, p]) {
      try {
        process.kill(target, signal);
      } catch {
        // not a group leader, or gone already
      }
    }
  }
}
