/**
 * What the dev harness, the benchmarks and the tests use of the endpoint beyond its public surface
 * (./index.ts): the worker pool and the container runtime pieces they drive directly, and the
 * agent's object reader. Nothing outside devkit/, bench/ and test/ imports this.
 */
export { metaSubject, ObjectReader } from "./agent/object-reader.js";
export { WorkerPool } from "./manager/worker-pool.js";
export {
  DEFAULT_PYTHON_WORKER_IMAGE,
  DEFAULT_SHELL_WORKER_IMAGE,
  DEFAULT_WORKER_IMAGE,
  resolveContainerConfig,
} from "./runtime/config.js";
export type { ContainerConfig } from "./runtime/config.js";
export { DEFAULT_ENGINE_SOCKET, removeContainersByLabel } from "./runtime/docker-launcher.js";
export { MANAGED_LABEL, MANAGER_LABEL } from "./runtime/docker-options.js";
export { createWorkerLauncher } from "./runtime/runtimes.js";
export { CONFIG_ALTERNATIVES, configTemplate } from "./config-template.js";
