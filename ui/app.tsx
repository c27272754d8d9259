import { useMemo, useState } from "preact/hooks";

import { Api, ApiError, userOfToken } from "./api.js";
import { usePoll, useRoute } from "./hooks.js";
import { SessionContext, type Directory } from "./session.js";
import type { EndpointWithStatus, FunctionInfo } from "./types.js";
import { EndpointsView } from "./views/endpoints.js";
import { FunctionsView } from "./views/functions.js";
import { TaskDetailView } from "./views/task-detail.js";
import { TasksView } from "./views/tasks.js";

/** Where the token is kept: this tab's session only (gone when it closes), never a URL or a cookie. */
const TOKEN_KEY = "fabric.token";

/** The page: the sign-in form until a token works, then the views. */
export function App() {
  const [token, setToken] = useState<string | null>(() => sessionStorage.getItem(TOKEN_KEY));
  const [notice, setNotice] = useState<string | undefined>(undefined);
  const signOut = (why?: string) => {
    sessionStorage.removeItem(TOKEN_KEY);
    setToken(null);
    setNotice(why);
  };
  if (!token) {
    return (
      <SignIn
        notice={notice}
        onToken={(t) => {
          sessionStorage.setItem(TOKEN_KEY, t);
          setNotice(undefined);
          setToken(t);
        }}
      />
    );
  }
  return <SignedIn token={token} onSignOut={signOut} />;
}

function SignIn({ notice, onToken }: { notice: string | undefined; onToken: (t: string) => void }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState<string | undefined>(notice);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const token = value.trim().replace(/^Bearer\s+/i, "");
    if (!token) return;
    setBusy(true);
    setError(undefined);
    try {
      // Any call checks the token; this one every user may make.
      await new Api(token).get("/v1/functions");
      onToken(token);
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? `The broker refused this token: ${err.message}`
          : String(err),
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      {/* method=post: were the script to fail, the token would never go into a URL. */}
      <form method="post" class="card" onSubmit={(e) => void submit(e)} aria-label="sign in">
        <h1>fabric</h1>
        <p class="muted">
          Sign in with your API token (<code>fabric-broker token -u USER</code>, or the one{" "}
          <code>fabric configure</code> saved). It stays in this tab only.
        </p>
        <label>
          token
          <input
            type="password"
            name="token"
            autocomplete="off"
            spellcheck={false}
            value={value}
            onInput={(e) => setValue((e.target as HTMLInputElement).value)}
            required
          />
        </label>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}

const NAV = [
  { path: "/endpoints", label: "Endpoints" },
  { path: "/tasks", label: "Tasks" },
  { path: "/functions", label: "Functions" },
] as const;

function SignedIn({ token, onSignOut }: { token: string; onSignOut: (why?: string) => void }) {
  const api = useMemo(() => new Api(token, (message) => onSignOut(`Signed out: ${message}`)), [token]);
  const me = useMemo(() => userOfToken(token), [token]);
  const route = useRoute();
  const fns = usePoll(
    (signal) => api.get<{ functions: FunctionInfo[] }>("/v1/functions", undefined, signal),
    15_000,
    [api],
  );
  const eps = usePoll(
    (signal) => api.get<{ endpoints: EndpointWithStatus[] }>("/v1/endpoints", undefined, signal),
    15_000,
    [api],
  );
  const directory: Directory = useMemo(
    () => ({
      functions: new Map((fns.data?.functions ?? []).map((f) => [f.id, f])),
      endpoints: new Map((eps.data?.endpoints ?? []).map((e) => [e.endpoint.id, e])),
    }),
    [fns.data, eps.data],
  );
  const taskId = /^\/tasks\/([^/]+)$/.exec(route.path)?.[1];
  const section = taskId ? "/tasks" : route.path;
  return (
    <SessionContext.Provider value={{ api, me, directory }}>
      <header class="top">
        <span class="brand">fabric</span>
        <nav aria-label="views">
          {NAV.map((n) => (
            <a key={n.path} href={`#${n.path}`} class={section === n.path ? "current" : ""}>
              {n.label}
            </a>
          ))}
        </nav>
        <span class="who">
          {me && <span data-testid="user">{me}</span>}
          <button type="button" class="link" onClick={() => onSignOut()}>
            Sign out
          </button>
        </span>
      </header>
      <main class="content">
        {taskId ? (
          <TaskDetailView taskId={decodeURIComponent(taskId)} />
        ) : route.path === "/tasks" ? (
          <TasksView route={route} />
        ) : route.path === "/functions" ? (
          <FunctionsView />
        ) : (
          <EndpointsView />
        )}
      </main>
    </SessionContext.Provider>
  );
}
