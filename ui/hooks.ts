import { useEffect, useRef, useState } from "preact/hooks";

/** What a polled load has: its latest data (kept while a new load runs) or its latest error. */
export interface Polled<T> {
  readonly data: T | undefined;
  readonly error: Error | undefined;
  /** Loads again now (after a change the user made). */
  readonly refresh: () => void;
}

/**
 * Calls `load` now and every `intervalMs` after the previous call finished (never two at once),
 * again from the start when `deps` change; stops when the component goes. A new `intervalMs`
 * applies from the next wait.
 */
export function usePoll<T>(
  load: (signal: AbortSignal) => Promise<T>,
  intervalMs: number,
  deps: readonly unknown[],
): Polled<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<Error | undefined>(undefined);
  const kick = useRef<() => void>(() => undefined);
  // Read at each wait, so a change of pace needs no new start.
  const every = useRef(intervalMs);
  every.current = intervalMs;
  useEffect(() => {
    const ctl = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let running = false;
    const run = async () => {
      clearTimeout(timer);
      if (running || ctl.signal.aborted) return;
      running = true;
      try {
        const value = await load(ctl.signal);
        if (!ctl.signal.aborted) {
          setData(value);
          setError(undefined);
        }
      } catch (err) {
        if (!ctl.signal.aborted) setError(err instanceof Error ? err : new Error(String(err)));
      } finally {
        running = false;
        if (!ctl.signal.aborted) timer = setTimeout(() => void run(), every.current);
      }
    };
    kick.current = () => void run();
    void run();
    return () => {
      ctl.abort();
      clearTimeout(timer);
    };
    // The caller names what the load depends on.
  }, deps);
  return { data, error, refresh: () => kick.current() };
}

/** The time now, updated every `intervalMs` (for "3 s ago"). */
export function useNow(intervalMs = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(t);
  }, [intervalMs]);
  return now;
}

/** The page's location after the `#`: a path and its query. */
export interface Route {
  readonly path: string;
  readonly query: URLSearchParams;
}

function currentRoute(): Route {
  const hash = location.hash.replace(/^#/, "") || "/endpoints";
  const [path = "/endpoints", q = ""] = hash.split("?", 2);
  return { path, query: new URLSearchParams(q) };
}

/** The route in the location's hash, followed as it changes. */
export function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const on = () => setRoute(currentRoute());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

/** Goes to a route of the page: `navigate("/tasks", {state: "failed"})`. */
export function navigate(path: string, query: Record<string, string | undefined> = {}): void {
  location.hash = href(path, query).slice(1);
}

/** The link of a route: `#/tasks?state=failed`. */
export function href(path: string, query: Record<string, string | undefined> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v) q.set(k, v);
  const s = q.toString();
  return `#${path}${s ? `?${s}` : ""}`;
}
