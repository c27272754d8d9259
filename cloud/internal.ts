/**
 * What the broker's own tests reach beyond its public surface (index.ts): names of the bus
 * layout the broker hands out. Not part of the package's API.
 */
export { agentInboxPrefix } from "./auth/nats-credentials.js";
