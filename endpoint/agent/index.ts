/**
 * The agent's entry for its siblings in endpoint/ (the CLI, the folder's public index.ts): what
 * they may use of the agent. Its parts stay behind this file.
 */
export { EndpointAgent, AGENT_VERSION, MANAGER_MAIN } from "./agent.js";
export type { EndpointAgentOptions } from "./agent.js";
export { EndpointRejectedError } from "./broker-link.js";
export { BlockScaler } from "./block-scaler.js";
export type { BlockScalerOptions, BlockView, ScalingDecision } from "./block-scaler.js";
