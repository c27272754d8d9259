/**
 * What the SDK and the `fabric` CLI use of common/: the lean part, the gRPC client helpers and
 * logging, without the NATS modules (message signing, the JetStream publisher, NATS TLS), so that a
 * client never loads a NATS library it does not use.
 */
export * from "./lean.js";
export * from "./grpc-client.js";
export * from "./logger.js";
export * from "./package-version.js";
