import { createHash } from "node:crypto";

/**
 * Names of every JetStream stream, consumer, KV bucket, object store and subject the fabric uses.
 * The broker creates them; agents only use the ones of their own endpoint, as told by the broker
 * in `ConnectEndpointResponse.bus`.
 */
const PAYLOAD_BUCKET_PREFIX = "fabric_payloads_";

export const Bus = {
  /** Work-queue stream holding each endpoint's pending tasks (TaskMessage), one subject per endpoint. */
  taskStream: "FABRIC_TASKS",
  taskSubject: (endpointId: string) => `fabric.tasks.${endpointId}`,
  taskSubjects: "fabric.tasks.*",
  /** Durable pull consumer of one endpoint's tasks (the name it has while no agent holds it). */
  taskConsumer: (endpointId: string) => `ep-${endpointId}`,
  /**
   * The name of the consumer generation created for an agent connecting with endpoint credential
   * `credentialId`: the credential's short id (to see who holds the queue) and a fresh suffix (so
   * that no earlier agent's NATS user, allowed only the name it was given, can use it).
   */
  agentTaskConsumer: (endpointId: string, credentialId: string, generation: string) =>
    `ep-${endpointId}-${credentialId.replace(/[^A-Za-z0-9]/g, "").slice(0, 8) || "none"}-${generation}`,

  /** Work-queue stream of TaskUpdateBatch messages from agents, consumed by the brokers. */
  resultStream: "FABRIC_RESULTS",
  resultSubject: (endpointId: string) => `fabric.results.${endpointId}`,
  resultSubjects: "fabric.results.*",
  resultConsumer: "brokers",
  /**
   * Core NATS subject where an agent sends its TaskUpdateBatch as a request: any broker (one queue
   * group) records it and answers. The quick way; the result stream is the durable fallback.
   */
  resultRequestSubject: (endpointId: string) => `fabric.result-requests.${endpointId}`,
  resultRequestSubjects: "fabric.result-requests.*",
  resultRequestQueue: "brokers",
  /**
   * Core NATS subject where an agent asks what is recorded of tasks it may have seen before
   * (TaskCheck): any broker of the "brokers" queue group answers.
   */
  taskCheckSubject: (endpointId: string) => `fabric.task-checks.${endpointId}`,
  taskCheckSubjects: "fabric.task-checks.*",

  /** KV buckets. Values are protobuf-encoded (FunctionMessage, Endpoint, Task, EndpointStatus). */
  functionsBucket: "fabric_functions",
  endpointsBucket: "fabric_endpoints",
  tasksBucket: "fabric_tasks",
  groupsBucket: "fabric_groups",
  /** Each owner's task index: pages of TaskIndexEntry, newest last (see cloud/tasks/task-index.ts). */
  taskIndexBucket: "fabric_task_index",
  endpointStatusBucket: "fabric_endpoint_status",
  /** Facts every broker replica must agree on (a check value of the shared signing key). */
  brokersBucket: "fabric_brokers",
  /** An agent publishes its EndpointStatus here (a KV put is a publish on this subject). */
  endpointStatusSubject: (endpointId: string) => `$KV.fabric_endpoint_status.${endpointId}`,

  /**
   * Object store of one endpoint's payloads (arguments, results) too large to travel inline. One
   * bucket per endpoint: an agent's NATS user may read and write only its own bucket's stream.
   */
  payloadBucket: (endpointId: string) => `${PAYLOAD_BUCKET_PREFIX}${endpointId}`,
  payloadBucketPrefix: PAYLOAD_BUCKET_PREFIX,
  argsObject: (taskId: string) => `${taskId}.args`,
  kwargsObject: (taskId: string) => `${taskId}.kwargs`,
  resultObject: (taskId: string) => `${taskId}.result`,

  /** Core NATS subject where brokers send an endpoint EndpointControl messages (cancellations). */
  controlSubject: (endpointId: string) => `fabric.control.${endpointId}`,

  /** Core NATS subject on which brokers announce a task's terminal state (payload: Task). */
  taskEventSubject: (owner: string) => `fabric.events.${subjectToken(owner)}`,
} as const;

/** A subject-safe token for an arbitrary string (owner ids may contain dots or spaces). */
export function subjectToken(s: string): string {
  return createHash("sha256").update(s).digest("hex").slice(0, 32);
}
