/**
 * The cloud broker: authenticates callers, validates requests, keeps all state in NATS JetStream
 * and routes tasks to endpoint agents. Stateless; run several replicas on one NATS cluster.
 */
export { Broker } from "./broker.js";
export { BrokerConfigSchema, resolveBrokerConfig, loadBrokerConfigFile } from "./config.js";
export type { BrokerConfig, BrokerConfigInput } from "./config.js";
export { TokenAuthority } from "./auth/tokens.js";
export { REVOKED_TOKENS_BUCKET } from "./state/revocations.js";
export type { Principal } from "./auth/tokens.js";
export { AccessPolicy, assertFunctionAllowed } from "./auth/authz.js";
export { NatsCredentialMinter, agentPermissions, createOperatorSetup } from "./auth/nats-credentials.js";
export type { AgentNatsCredentials, OperatorSetup } from "./auth/nats-credentials.js";
export { OidcVerifier } from "./auth/oidc.js";
export type { OidcOptions } from "./auth/oidc.js";
export { RateLimiter, RateLimitedError } from "./auth/rate-limit.js";
export { applyTaskUpdate, cancelTask } from "./tasks/task-transitions.js";
export { ServerTlsContext, grpcServerCredentials, isLocalOnlyListen } from "./rpc/tls.js";
export type { CertificateSummary, ServerTlsConfig } from "./rpc/tls.js";
