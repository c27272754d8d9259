import * as grpc from "@grpc/grpc-js";

import { bearer, callUnary, channelFor, clientOptions } from "../../common/grpc-client.js";
import { EndpointServiceClient, FunctionServiceClient, TaskServiceClient } from "../../proto/index.js";

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

  call<Req, Res>(
    client: grpc.Client,
    method: (req: Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: (err: grpc.ServiceError | null, res: Res) => void) => grpc.ClientUnaryCall,
    req: Req,
  ): Promise<Res> {
    return callUnary(method, client, req, this.md, { deadlineMs: 20_000 });
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
