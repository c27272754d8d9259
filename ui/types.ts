/**
 * The JSON the dashboard reads from the HTTP API (docs/http.md; the OpenAPI document at
 * /v1/openapi.json is the reference). Written out here because the page is bundled on its own:
 * it imports nothing of the broker. Fields the API may leave out are optional.
 */

/** A task's state by name. */
export type TaskStateName =
  | "received"
  | "waiting_for_endpoint"
  | "waiting_for_nodes"
  | "running"
  | "success"
  | "failed"
  | "cancelled"
  | "expired";

/** The states in the order a task goes through them. */
export const TASK_STATES: readonly TaskStateName[] = [
  "received",
  "waiting_for_endpoint",
  "waiting_for_nodes",
  "running",
  "success",
  "failed",
  "cancelled",
  "expired",
];

export const TERMINAL_STATES: ReadonlySet<string> = new Set(["success", "failed", "cancelled", "expired"]);

export interface FunctionSpec {
  js?: { source: string; entryPoint: string };
  shell?: { command: string; walltimeS?: number };
  python?: { source: string; entryPoint: string; minVersion?: string };
  containerImage?: string;
  maxRetries?: number;
  timeoutS?: number;
}

export interface FunctionInfo {
  id: string;
  owner: string;
  name: string;
  description: string;
  spec?: FunctionSpec;
  createdAtMs: number;
  public: boolean;
  sharedWith: string[];
}

export interface Endpoint {
  id: string;
  owner: string;
  name: string;
  description: string;
  createdAtMs: number;
  sharedWith: string[];
  allowedFunctions: string[];
}

export interface BlockStatus {
  blockId?: string;
  jobId?: string;
  state?: string;
  sinceMs?: number;
  reason?: string;
}

/** The agent's last signed status (proto JSON: zero values left out). */
export interface AgentStatus {
  endpointId?: string;
  atMs?: number;
  state?: string;
  hostname?: string;
  agentVersion?: string;
  outstandingTasks?: number;
  runningTasks?: number;
  managers?: number;
  workers?: number;
  idleWorkers?: number;
  blocks?: BlockStatus[];
  provider?: string;
  lastError?: string;
  heartbeatIntervalS?: number;
  startedAtMs?: number;
  python?: { version?: string; executable?: string; implementation?: string; problem?: string };
}

export interface EndpointStatus {
  /** "online", "offline" or "never-connected". */
  connection: string;
  queuedTasks: number;
  last?: AgentStatus;
}

export interface EndpointWithStatus {
  endpoint: Endpoint;
  status: EndpointStatus;
}

export interface EndpointTasks {
  queuedCount: number;
  takenCount: number;
  tasks: { id: string; owner: string; functionId: string; state: string; createdAtMs: number }[];
}

export interface TaskSummary {
  id: string;
  functionId: string;
  endpointId: string;
  groupId: string;
  state: string;
  createdAtMs: number;
  completedAtMs: number;
}

export interface TaskPage {
  tasks: TaskSummary[];
  nextCursor: string;
}

export interface TaskError {
  code?: string;
  message?: string;
  reason?: string;
  remote?: { type?: string; message?: string; stack?: string };
  shell?: { exitCode?: number; stdout?: string; stderr?: string; signal?: string };
}

export interface Task {
  id: string;
  owner: string;
  functionId: string;
  endpointId: string;
  groupId: string;
  state: string;
  history: { state: string; atMs: number; actor: string; detail: string }[];
  result?: unknown;
  error?: TaskError;
  createdAtMs: number;
  completedAtMs: number;
  attempts: number;
  output?: { stdout?: string; stderr?: string };
}

export interface StateCounts {
  [state: string]: number;
}

export interface TaskStats {
  atMs: number;
  total: number;
  counts: StateCounts;
  unclassified: number;
  functions: { functionId: string; total: number; counts: StateCounts; unclassified: number }[];
  series: { fromMs: number; bucketMs: number; finished: number[]; failed: number[] };
  complete: boolean;
  oldestCreatedAtMs: number;
  pagesRead: number;
  recordsRead: number;
}
