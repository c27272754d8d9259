/**
 * The fabric's TypeScript SDK: the whole public surface of `sdk/`.
 *
 * @example
 * ```ts
 * import { Client, TaskFailedError } from "hpc-function-fabric/sdk";
 *
 * const client = Client.fromEnv();
 * const fnId = await client.registerFunction(function add(a: number, b: number) {
 *   return a + b;
 * });
 * const taskId = await client.run(fnId, endpointId, [2, 40]);
 * try {
 *   console.log(await client.waitForResult<number>(taskId, { timeoutMs: 60_000 }));
 * } catch (err) {
 *   if (err instanceof TaskFailedError) console.error(err.reason, err.remote?.message);
 * }
 * client.close();
 * ```
 */
export { Client } from "./client.js";
export type { FromConfigOptions } from "./client.js";
export type {
  AnyFunction,
  RegisterOptions,
  RegisterShellOptions,
  SubmittedBatch,
  WaitOptions,
} from "./types.js";
export { Executor } from "./executor.js";
export type { CloseOptions, ExecutorOptions } from "./executor.js";
export { BatchSubmitError, TaskFailedError, TaskPendingError } from "./errors.js";
export {
  FabricError,
  ErrorCode,
  FailureReason,
  type RemoteExceptionInfo,
  type ShellOutcome,
} from "../common/client.js";
export { clientConfigPath, fabricHome, loadClientSettings, writeClientFile } from "./config.js";
export type { ClientFile, ClientOptions, ClientSettings, ResolvedClientOptions } from "./config.js";
export type { TaskInput } from "./codec.js";
export type { JsSource } from "./function-source.js";
export type {
  BlockInfo,
  EndpointInfo,
  EndpointReport,
  EndpointStatusInfo,
  EndpointTasks,
  FunctionInfo,
  FunctionKind,
  PythonReport,
  PythonSource,
  TaskErrorInfo,
  TaskFailure,
  TaskInfo,
  TaskPage,
  TaskSummaryInfo,
  ListTasksOptions,
  TaskOutcome,
  TaskOutputInfo,
  TaskStateName,
  TaskSuccess,
  TaskTransition,
} from "./types.js";
