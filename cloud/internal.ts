/**
 * What the broker's own tests and the dev harness reach beyond the public surface
 * ({@link ./index.ts}): names of the bus layout the broker hands out. Not part of the package's API.
 */
export { agentInboxPrefix } from "./auth/nats-credentials.js";
