/**
 * The part of common/ that loads no network client and no logging library: errors, ids, JSON,
 * limits, the payload rule, timers, framing, the bus layout, task states. Processes on a block's
 * start path (the worker manager and its workers) import this rather than ./index.ts, and the
 * logger from ./logger.ts when they need it, so that a new block's first task does not wait for
 * gRPC or NATS to load.
 */
export * from "./bus-layout.js";
export * from "./errors.js";
export * from "./framing.js";
export * from "./home.js";
export * from "./ids.js";
export * from "./json.js";
export * from "./limits.js";
export * from "./payload.js";
export * from "./task-state.js";
export * from "./timers.js";
export * from "./version.js";
