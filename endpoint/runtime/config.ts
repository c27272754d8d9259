import { z } from "zod";

import { nonNegativeInt, positiveInt } from "../config-fields.js";

/** Version tag of the worker images this code builds and expects. */
export const WORKER_IMAGE_VERSION = "0.1.0";
/** The image for JavaScript functions (node and the worker only). */
export const DEFAULT_WORKER_IMAGE = `fabric-worker:${WORKER_IMAGE_VERSION}`;
/** The image for shell functions (the worker plus a POSIX shell and its tools). */
export const DEFAULT_SHELL_WORKER_IMAGE = `fabric-worker-shell:${WORKER_IMAGE_VERSION}`;
export const DEFAULT_PYTHON_WORKER_IMAGE = `fabric-worker-python:${WORKER_IMAGE_VERSION}`;

/** A host path mounted into every container. Nothing else of the host is. */
export const ContainerMountSchema = z.strictObject({
  /** Absolute path on the node. */
  source: z
    .string({ error: "expected an absolute path" })
    .regex(/^\//, { error: "expected an absolute path" }),
  /** Absolute path inside the container. */
  target: z
    .string({ error: "expected an absolute path" })
    .regex(/^\/./, { error: "expected an absolute path" }),
  /**
   * Mounted read-only unless this says otherwise.
   * @default true
   */
  readOnly: z.boolean({ error: "expected true or false" }).default(true),
});

/**
 * The `container` section of the endpoint config: where functions run. `runtime: none` (the
 * default) runs them in bare worker processes on the node; `docker` and `podman` keep warm pools
 * of hardened containers, one long-lived worker in each; `apptainer` runs each worker under
 * `apptainer exec --containall`.
 */
export const ContainerConfigSchema = z.strictObject({
  /**
   * The container runtime on the compute nodes.
   * @default "none"
   */
  runtime: z
    .enum(["none", "docker", "podman", "apptainer"], {
      error: 'expected one of "none", "docker", "podman", "apptainer"',
    })
    .default("none"),
  /**
   * The engine's API socket (docker: /var/run/docker.sock; podman: /run/podman/podman.sock).
   * Only the manager talks to it; it is never mounted into a container.
   */
  socket: z.string({ error: "expected a socket path" }).min(1).optional(),
  /**
   * Image of functions that name none (JavaScript functions).
   * @default "fabric-worker:0.1.0"
   */
  image: z.string({ error: "expected an image name" }).min(1).default(DEFAULT_WORKER_IMAGE),
  /**
   * Image of shell functions that name none.
   * @default "fabric-worker-shell:0.1.0"
   */
  shellImage: z.string({ error: "expected an image name" }).min(1).default(DEFAULT_SHELL_WORKER_IMAGE),
  /**
   * Image of Python functions that name none: an image with a python3 (3.8 or later) on its PATH
   * and the packages the functions import.
   * @default "fabric-worker-python:0.1.0"
   */
  pythonImage: z.string({ error: "expected an image name" }).min(1).default(DEFAULT_PYTHON_WORKER_IMAGE),
  /**
   * The user functions run as inside the container, `uid:gid`; never root.
   * @default "65534:65534"
   */
  user: z
    .string({ error: 'expected "uid:gid"' })
    .regex(/^\d+:\d+$/, { error: 'expected "uid:gid" with numeric ids' })
    .refine((u) => !u.startsWith("0:"), { error: "expected a non-root user (uid 0 is refused)" })
    .default("65534:65534"),
  /** Resource limits of each container (one worker, one task at a time). */
  limits: z
    .strictObject({
      /**
       * Memory (and memory+swap) limit; a task that exceeds it fails with "out of memory".
       * @default 512
       */
      memoryMiB: positiveInt().min(16, { error: "expected at least 16 MiB" }).default(512),
      /**
       * CPUs (fractions allowed).
       * @default 1
       */
      cpus: z
        .number({ error: "expected a number of CPUs" })
        .positive({ error: "expected a number of CPUs > 0" })
        .default(1),
      /**
       * Most processes and threads in the container (stops fork bombs).
       * @default 256
       */
      pids: positiveInt().min(32, { error: "expected at least 32 (node needs threads)" }).default(256),
      /**
       * Size of the writable scratch tmpfs at /tmp (counts against the memory limit).
       * @default 64
       */
      tmpfsMiB: positiveInt().default(64),
    })
    .prefault({}),
  /** Host paths mounted into every container; nothing else of the host is visible. */
  mounts: z.array(ContainerMountSchema, { error: "expected a list of mounts" }).default([]),
  /** Network access of containers. */
  network: z
    .strictObject({
      /**
       * `deny`: never a network; `on-request`: only functions registered with `network: true`
       * get one; `allow`: every container gets one.
       * @default "on-request"
       */
      policy: z
        .enum(["deny", "on-request", "allow"], { error: 'expected "deny", "on-request" or "allow"' })
        .default("on-request"),
      /**
       * The engine network a container joins when it has network access.
       * @default "bridge"
       */
      mode: z.string({ error: "expected a network name" }).min(1).default("bridge"),
    })
    .prefault({}),
  /** The warm pool of containers on each node. */
  pool: z
    .strictObject({
      /**
       * Containers of the default image started with the manager and kept even when idle.
       * @default 1
       */
      keepWarm: nonNegativeInt().default(1),
      /**
       * A container idle this long is removed (beyond `keepWarm`).
       * @default 300
       */
      idleSeconds: positiveInt().default(300),
      /**
       * How long a new container may take to start its worker.
       * @default 60
       */
      startTimeoutSeconds: positiveInt().default(60),
    })
    .prefault({}),
  /** Apptainer/Singularity only. */
  apptainer: z
    .strictObject({
      /**
       * The apptainer (or singularity) executable.
       * @default "apptainer"
       */
      executable: z.string({ error: "expected a command" }).min(1).default("apptainer"),
      /**
       * Where the worker code lives inside the SIF images.
       * @default "/fabric/worker/endpoint/worker/main.js"
       */
      workerPath: z
        .string({ error: "expected an absolute path" })
        .regex(/^\//)
        .default("/fabric/worker/endpoint/worker/main.js"),
      /**
       * The interpreter of Python functions inside the SIF images (a name on the image's PATH
       * or a path).
       * @default "python3"
       */
      python: z.string({ error: "expected a command" }).min(1).default("python3"),
      /**
       * Where the Python runtime (fabric_runtime.py) lives inside the SIF images.
       * @default "/fabric/worker/fabric_runtime.py"
       */
      pythonRuntimePath: z
        .string({ error: "expected an absolute path" })
        .regex(/^\//)
        .default("/fabric/worker/fabric_runtime.py"),
    })
    .prefault({}),
});

/** The `container` section as written. */
export type ContainerConfigInput = z.input<typeof ContainerConfigSchema>;
/** The resolved `container` section. */
export type ContainerConfig = z.output<typeof ContainerConfigSchema>;
/** Container runtimes. */
export type ContainerRuntimeName = ContainerConfig["runtime"];

/** Resolves a `container` section (for the manager, which receives it as JSON from the agent). */
export function resolveContainerConfig(doc: unknown): ContainerConfig {
  return ContainerConfigSchema.parse(doc ?? {});
}
