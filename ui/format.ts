/** How the page writes times, durations and ids. Pure. */

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** `2026-12-02 14:03:07` in the browser's time zone. */
export function dateTime(ms: number): string {
  if (!ms) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(ms)}`;
}

/** `14:03:07`. */
export function clock(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `14:03:07.125`. */
export function clockMs(ms: number): string {
  return `${clock(ms)}.${pad(new Date(ms).getMilliseconds(), 3)}`;
}

/** `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 10 min`, `3 d 4 h`. */
export function duration(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${pad(Math.floor(s % 60))} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${pad(m % 60)} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** `3 s ago`, `in 2 min` (rounded down to what a person reads). */
export function ago(ms: number, now: number): string {
  if (!ms) return "never";
  const d = now - ms;
  if (Math.abs(d) < 1000) return "just now";
  const text = duration(Math.abs(d)).replace(/ \d+ (s|min|h)$/, "");
  return d >= 0 ? `${text} ago` : `in ${text}`;
}

/**
 * The last 12 characters of an id, as a short handle: the tasks of one submission share the
 * start of their ids (derived from its idempotency key) and differ at the end.
 */
export function shortId(id: string): string {
  return id.length > 12 ? id.slice(-12) : id;
}

/** A state's name for people: `waiting_for_endpoint` → `waiting for endpoint`. */
export function stateLabel(state: string): string {
  return state.replace(/_/g, " ");
}

/** The text, cut to `max` characters, and how many were cut. */
export function truncate(text: string, max: number): { text: string; cut: number } {
  return text.length <= max ? { text, cut: 0 } : { text: text.slice(0, max), cut: text.length - max };
}

/** A count with thousands separated: `100,000`. */
export function count(n: number): string {
  return n.toLocaleString("en-US");
}
