/**
 * The cloud broker: authenticates callers, validates requests, keeps all state in NATS JetStream
 * and routes tasks to endpoint agents. Stateless; run several replicas on one NATS cluster.
 */
export { Broker } from "./broker.js";
export { BrokerConfigSchema, resolveBrokerConfig, loadBrokerConfigFile } from "./config.js";
export type { BrokerConfig, BrokerConfigInput } from "./config.js";
export { TokenAuthority, REVOKED_TOKENS_BUCKET } from "./auth.js";
export type { Principal } from "./auth.js";
export { AccessPolicy, assertFunctionAllowed } from "./authz.js";
export { NatsCredentialMinter, agentPermissions, createOperatorSetup } from "./nats-credentials.js";
export type { AgentNatsCredentials, OperatorSetup } from "./nats-credentials.js";
export { OidcVerifier } from "./oidc.js";
export type { OidcOptions } from "./oidc.js";
export { RateLimiter, RateLimitedError } from "./rate-limit.js";
export { applyTaskUpdate, cancelTask } from "./task-transitions.js";
export { ServerTlsContext, grpcServerCredentials, isLocalOnlyListen } from "./tls.js";
export type { CertificateSummary, ServerTlsConfig } from "./tls.js";
