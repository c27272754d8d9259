/**
 * The dev harness: real services on this machine for tests, benchmarks and the demo. Every
 * server starts on a free port in a temporary directory and is stopped by pid by whoever started
 * it. Not part of the package's exports (`sdk`, `cloud`, `endpoint`); it is compiled into
 * `dist/devkit/` only because the demo and the benchmarks run from `dist/`.
 */

// A whole local fabric: nats-server, broker and endpoints.
export { LocalFabric } from "./fabric.js";
export type { AgentLink, LocalEndpointOptions, LocalFabricOptions, Stoppable } from "./fabric.js";

// Its parts, for tests that wire them differently (a cluster, TLS, a proxy in between).
export { BrokerProcess, EndpointProcess, ManagedProcess, ROOT, distEntry, runCli } from "./processes.js";
export type { BrokerOptions, EndpointOptions } from "./processes.js";
export { NatsServer, freePort, waitForPort } from "./nats-server.js";
export type { NatsServerTls } from "./nats-server.js";
export { NatsCluster, NatsClusterNode } from "./nats-cluster.js";
export type { NatsClusterOptions } from "./nats-cluster.js";
export { TestCa } from "./test-ca.js";
export type { CertFiles } from "./test-ca.js";

// Schedulers and container engines.
export { SlurmCluster, slurmProviderConfig } from "./slurm.js";
export type { SlurmClusterOptions } from "./slurm.js";
export { ensureDockerEngine, removeImagesByLabel, startPodmanService } from "./docker.js";
export type { ContainerEngine } from "./docker.js";
export { ensureWorkerImages } from "./worker-images.js";
export type { WorkerImageKind, WorkerImageOptions } from "./worker-images.js";

// Waiting, and compiling endpoint/ for unit tests that spawn its entry files.
export { until, untilValue } from "./wait.js";
export { buildEndpointForTests } from "./build-for-tests.js";
