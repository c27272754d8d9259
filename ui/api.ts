import { SseParser, type SseEvent } from "./sse.js";

/** A failed call: the API's `{code, message}` and the HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Query parameters: empty and undefined values are left out; arrays repeat the name. */
export type Query = Record<string, string | number | readonly string[] | undefined>;

function queryString(q: Query | undefined): string {
  if (!q) return "";
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined || v === "") continue;
    if (Array.isArray(v)) for (const x of v as readonly string[]) p.append(k, x);
    else p.append(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}

/**
 * The HTTP API as the page calls it: same origin, the user's token in the `Authorization` header
 * of every call (never in a URL). A 401 tells the app to sign in again.
 */
export class Api {
  constructor(
    private readonly token: string,
    private readonly onUnauthenticated: (message: string) => void = () => undefined,
  ) {}

  private headers(json: boolean): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, ...(json ? { "content-type": "application/json" } : {}) };
  }

  private async fail(res: Response): Promise<never> {
    let code = "UNKNOWN";
    let message = `${res.status} ${res.statusText}`;
    try {
      const body = (await res.json()) as { code?: string; message?: string };
      code = body.code ?? code;
      message = body.message ?? message;
    } catch {
      // Not the API's JSON (a proxy's page): keep the status.
    }
    if (res.status === 401) this.onUnauthenticated(message);
    throw new ApiError(res.status, code, message);
  }

  async get<T>(path: string, query?: Query, signal?: AbortSignal): Promise<T> {
    const res = await fetch(path + queryString(query), {
      headers: this.headers(false),
      cache: "no-store",
      ...(signal ? { signal } : {}),
    });
    if (!res.ok) return this.fail(res);
    return (await res.json()) as T;
  }

  async post<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    const res = await fetch(path, {
      method: "POST",
      headers: this.headers(true),
      body: JSON.stringify(body),
      ...(signal ? { signal } : {}),
    });
    if (!res.ok) return this.fail(res);
    return (await res.json()) as T;
  }

  /**
   * A Server-Sent Events route, read with `fetch` and a reader (EventSource cannot send the
   * token): each event to `onEvent` until the stream ends or `signal` aborts it.
   */
  async stream(
    path: string,
    body: unknown,
    onEvent: (e: SseEvent) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const res = await fetch(path, {
      method: "POST",
      headers: this.headers(true),
      body: JSON.stringify(body),
      signal,
    });
    if (!res.ok) return this.fail(res);
    if (!res.body) return;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const e of parser.push(value)) onEvent(e);
      }
    } finally {
      reader.releaseLock();
    }
  }
}

/** The user a token names (its `sub`), for display only: the broker checks the token itself. */
export function userOfToken(token: string): string {
  try {
    const part = token.split(".")[1] ?? "";
    const json = atob(
      part
        .replace(/-/g, "+")
        .replace(/_/g, "/")
        .padEnd(Math.ceil(part.length / 4) * 4, "="),
    );
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === "string" ? sub : "";
  } catch {
    return "";
  }
}
