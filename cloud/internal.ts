/**
 * What the broker's own tests reach beyond its public surface (index.ts): names of the bus
 * layout the broker hands out, the HTTP API's route table. Not part of the package's API.
 */
export { agentInboxPrefix } from "./auth/nats-credentials.js";
export { functionRoutes, type Route } from "./http/routes.js";
export { OPENAPI_PATH } from "./http/openapi.js";
export { taskRoutes } from "./http/task-routes.js";
export { endpointRoutes } from "./http/endpoint-routes.js";
export { TaskIndex, INDEX_PAGE_ENTRIES } from "./tasks/task-index.js";
export { kvIndexIo, type IndexIo } from "./state/store.js";
