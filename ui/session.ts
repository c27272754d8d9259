import { createContext } from "preact";
import { useContext } from "preact/hooks";

import type { Api } from "./api.js";
import { shortId } from "./format.js";
import type { EndpointWithStatus, FunctionInfo } from "./types.js";

/** The names of the functions and endpoints the user may see, for the tables' columns. */
export interface Directory {
  readonly functions: ReadonlyMap<string, FunctionInfo>;
  readonly endpoints: ReadonlyMap<string, EndpointWithStatus>;
}

/** What every view of a signed-in page reads: the API with the user's token, and who they are. */
export interface Session {
  readonly api: Api;
  /** The token's user (display only). */
  readonly me: string;
  readonly directory: Directory;
}

export const SessionContext = createContext<Session | undefined>(undefined);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside a signed-in page");
  return s;
}

/** A function's name for a table: its name, else the start of its id. */
export function functionName(d: Directory, id: string): string {
  const fn = d.functions.get(id);
  return fn?.name || shortId(id);
}

/** An endpoint's name for a table. */
export function endpointName(d: Directory, id: string): string {
  const ep = d.endpoints.get(id);
  return ep?.endpoint.name || shortId(id);
}
