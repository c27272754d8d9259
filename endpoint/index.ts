/**
 * The endpoint: the agent that runs on a cluster login node, and what it launches.
 * This file is the folder's whole public surface.
 */
export { EndpointAgent, EndpointRejectedError, AGENT_VERSION, MANAGER_MAIN } from "./agent/index.js";
export type { EndpointAgentOptions } from "./agent/index.js";
export {
  EndpointConfigSchema,
  LocalProviderConfigSchema,
  ProviderConfigSchema,
  loadConfig,
  resolveConfig,
} from "./config.js";
export type { EndpointConfig, EndpointConfigInput, ProviderConfig } from "./config.js";
export {
  endpointPaths,
  fabricHome,
  readCredentials,
  writeCredentials,
  runningAgentPid,
  validateEndpointName,
} from "./home.js";
export type { EndpointCredentials, EndpointPaths } from "./home.js";
export { BlockJobState, isJobEnded } from "./provider.js";
export type { BlockJobStatus, BlockLaunch, ExecutionProvider } from "./provider.js";
export { LocalProvider } from "./providers/local-provider.js";
export { BlockScaler } from "./agent/index.js";
export type { BlockScalerOptions } from "./agent/index.js";
export { quoteShellArg, fillCommandTemplate } from "./worker/shell.js";
