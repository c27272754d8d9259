/**
 * What the broker, the agent and the SDK share: errors and their codes, ids, JSON checks, limits,
 * the payload rule, timers, framing, the bus layout, task states, message signing, the gRPC and
 * NATS client helpers, and logging. (./lean.ts is the part without network clients or logging.)
 */
export * from "./lean.js";
export * from "./grpc-client.js";
export * from "./js-publisher.js";
export * from "./logger.js";
export * from "./config-issues.js";
export * from "./package-version.js";
export * from "./message-auth.js";
export * from "./nats-tls.js";
export * from "./pretty-log.js";
