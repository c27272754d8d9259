/**
 * The cloud broker: authenticates callers, validates requests, keeps all state in NATS JetStream
 * and routes tasks to endpoint agents. Stateless; run several replicas on one NATS cluster.
 */
export { Broker } from "./broker.js";
export { BrokerConfigSchema, resolveBrokerConfig, loadBrokerConfigFile } from "./config.js";
export type { BrokerConfig, BrokerConfigInput } from "./config.js";
export { TokenAuthority } from "./auth.js";
export type { Principal } from "./auth.js";
export { applyTaskUpdate, cancelTask } from "./task-transitions.js";
