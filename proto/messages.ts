/**
 * Every message, without the gRPC services (which load @grpc/grpc-js): what processes on a
 * block's start path (the worker manager, the workers) import, so that their start stays quick.
 * Generated from proto/fabric/v1/*.proto by ts-proto (`npm run gen`); never edited by hand.
 */
export {
  TaskState,
  Payload,
  RemoteException,
  ShellResult,
  ErrorInfo,
  StateTransition,
  JsFunctionSpec,
  ShellFunctionSpec,
  FunctionSpec,
  PythonFunctionSpec,
  TaskOutput,
} from "./gen/fabric/v1/common.js";
export {
  TaskMessage,
  TaskUpdate,
  TaskUpdateBatch,
  TaskUpdateBatchReply,
  TaskCheck,
  CheckedTask,
  TaskCheckReply,
  BlockStatus,
  EndpointStatus,
  EndpointControl,
  PythonInfo,
  TaskIndexPage,
  TaskIndexEntry,
} from "./gen/fabric/v1/bus.js";
export {
  WorkItem,
  WorkOutcome,
  ManagerHello,
  ManagerHeartbeat,
  ManagerMessage,
  WorkOutcomeBatch,
  TaskStarted,
  WorkBatch,
  AgentWelcome,
  Shutdown,
  AgentMessage,
  CancelTasks,
  WorkerRequest,
  WorkerResponse,
} from "./gen/fabric/v1/worker.js";
