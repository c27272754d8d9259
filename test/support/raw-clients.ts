import * as grpc from "@grpc/grpc-js";

import { bearer, callUnary, channelFor, clientOptions } from "../../common/index.js";
import {
  EndpointServiceClient,
  FunctionServiceClient,
  TaskServiceClient,
  type CancelTasksRequest,
  type CancelTasksResponse,
  type GetEndpointRequest,
  type GetEndpointResponse,
  type GetFunctionRequest,
  type GetFunctionResponse,
  type GetTasksRequest,
  type GetTasksResponse,
  type ListEndpointsResponse,
  type ListFunctionsResponse,
  type RegisterEndpointRequest,
  type RegisterEndpointResponse,
  type RegisterFunctionRequest,
  type RegisterFunctionResponse,
  type SubmitTasksRequest,
  type SubmitTasksResponse,
  type DeleteFunctionRequest,
  type DeleteFunctionResponse,
} from "../../proto/index.js";

/** The generated gRPC clients, bound to one address and token: for tests below the SDK. */
export class RawClients {
  readonly functions: FunctionServiceClient;
  readonly endpoints: EndpointServiceClient;
  readonly tasks: TaskServiceClient;
  readonly md: grpc.Metadata;

  constructor(address: string, token: string) {
    const { target, credentials } = channelFor(address);
    this.functions = new FunctionServiceClient(target, credentials, clientOptions);
    this.endpoints = new EndpointServiceClient(target, credentials, clientOptions);
    this.tasks = new TaskServiceClient(target, credentials, clientOptions);
    this.md = bearer(token);
  }

  private call<Req, Res>(client: grpc.Client, method: unknown, req: Req): Promise<Res> {
    return callUnary<Req, Res>(method as Parameters<typeof callUnary<Req, Res>>[0], client, req, this.md, {
      deadlineMs: 20_000,
    });
  }

  registerFunction(req: RegisterFunctionRequest) {
    return this.call<RegisterFunctionRequest, RegisterFunctionResponse>(
      this.functions,
      this.functions.registerFunction.bind(this.functions),
      req,
    );
  }
  getFunction(req: GetFunctionRequest) {
    return this.call<GetFunctionRequest, GetFunctionResponse>(
      this.functions,
      this.functions.getFunction.bind(this.functions),
      req,
    );
  }
  listFunctions() {
    return this.call<object, ListFunctionsResponse>(
      this.functions,
      this.functions.listFunctions.bind(this.functions),
      {},
    );
  }
  deleteFunction(req: DeleteFunctionRequest) {
    return this.call<DeleteFunctionRequest, DeleteFunctionResponse>(
      this.functions,
      this.functions.deleteFunction.bind(this.functions),
      req,
    );
  }
  registerEndpoint(req: RegisterEndpointRequest) {
    return this.call<RegisterEndpointRequest, RegisterEndpointResponse>(
      this.endpoints,
      this.endpoints.registerEndpoint.bind(this.endpoints),
      req,
    );
  }
  getEndpoint(req: GetEndpointRequest) {
    return this.call<GetEndpointRequest, GetEndpointResponse>(
      this.endpoints,
      this.endpoints.getEndpoint.bind(this.endpoints),
      req,
    );
  }
  listEndpoints() {
    return this.call<object, ListEndpointsResponse>(
      this.endpoints,
      this.endpoints.listEndpoints.bind(this.endpoints),
      {},
    );
  }
  submit(req: SubmitTasksRequest) {
    return this.call<SubmitTasksRequest, SubmitTasksResponse>(
      this.tasks,
      this.tasks.submitTasks.bind(this.tasks),
      req,
    );
  }
  getTasks(req: GetTasksRequest) {
    return this.call<GetTasksRequest, GetTasksResponse>(
      this.tasks,
      this.tasks.getTasks.bind(this.tasks),
      req,
    );
  }
  cancel(req: CancelTasksRequest) {
    return this.call<CancelTasksRequest, CancelTasksResponse>(
      this.tasks,
      this.tasks.cancelTasks.bind(this.tasks),
      req,
    );
  }

  /** Sends raw bytes as the request of `path` (e.g. "/fabric.v1.TaskService/SubmitTasks"). */
  rawCall(path: string, bytes: Uint8Array): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.tasks.makeUnaryRequest(
        path,
        (b: Uint8Array) => Buffer.from(b),
        (b: Buffer) => b,
        bytes,
        this.md,
        {},
        (err, res) => (err ? reject(err) : resolve(res)),
      );
    });
  }

  close(): void {
    this.functions.close();
    this.endpoints.close();
    this.tasks.close();
  }
}
