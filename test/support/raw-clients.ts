import type * as grpc from "@grpc/grpc-js";

import { bearer, callUnary, channelFor, clientOptions } from "../../common/index.js";
import type { LocalFabric } from "../../devkit/index.js";
import {
  EndpointServiceClient,
  EndpointServiceService,
  FunctionServiceClient,
  FunctionServiceService,
  TaskServiceClient,
  TaskServiceService,
  type FunctionSpec,
} from "../../proto/index.js";

/** The unary methods of a generated service definition, each as `(request) => Promise<response>`. */
type UnaryCalls<Service> = {
  readonly [
    M in keyof Service as Service[M] extends { requestStream: false; responseStream: false } ? M : never
  ]: Service[M] extends {
    requestSerialize: (request: infer Req) => Buffer;
    responseDeserialize: (bytes: Buffer) => infer Res;
  }
    ? // A request of no fields may be left out: `raw.listFunctions()`.
      [keyof Req] extends [never]
      ? (request?: Req) => Promise<Res>
      : (request: Req) => Promise<Res>
    : never;
};

/** Every unary method of the broker's three services, by its name in the .proto (camelCase). */
type BrokerCalls = UnaryCalls<typeof FunctionServiceService> &
  UnaryCalls<typeof EndpointServiceService> &
  UnaryCalls<typeof TaskServiceService>;

type AnyUnary = Parameters<typeof callUnary<unknown, unknown>>[0];

/** A JS function's spec: `source` defining `entryPoint`. */
export function jsSpec(source: string, entryPoint = "f"): FunctionSpec {
  return { kind: { $case: "js", value: { source, entryPoint } }, containerImage: "" };
}

/**
 * The generated gRPC clients, bound to one address and token: for tests below the SDK. Each
 * unary method of the broker's services is a method of its own (`raw.submitTasks(request)`),
 * sent with the token and a 20 s deadline; errors arrive as `FabricError`. The generated
 * clients stay reachable for streams and hand-made calls.
 */
class RawChannels {
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
    this.bindUnary(this.functions, FunctionServiceService);
    this.bindUnary(this.endpoints, EndpointServiceService);
    this.bindUnary(this.tasks, TaskServiceService);
  }

  /** Raw clients of `fabric`'s broker signed in as `user`, closed when the fabric stops. */
  static async of(fabric: LocalFabric, user: string): Promise<RawClients> {
    return RawClients.withToken(fabric, await fabric.broker.token(user));
  }

  /** Raw clients of `fabric`'s broker that send `token` (whatever it is), closed when the fabric stops. */
  static withToken(fabric: LocalFabric, token: string): RawClients {
    const raw = new RawClients(fabric.broker.address, token);
    fabric.adopt({ stop: async () => raw.close() });
    return raw;
  }

  private bindUnary(
    client: grpc.Client,
    service: Record<string, { requestStream: boolean; responseStream: boolean }>,
  ) {
    const methods = client as unknown as Record<string, AnyUnary>;
    for (const [name, def] of Object.entries(service)) {
      if (def.requestStream || def.responseStream) continue;
      Object.defineProperty(this, name, {
        value: (request: unknown = {}) =>
          callUnary(methods[name]!, client, request, this.md, { deadlineMs: 20_000 }),
      });
    }
  }

  /** This, as the unary calls {@link bindUnary} gave it. */
  private get calls(): BrokerCalls {
    return this as unknown as BrokerCalls;
  }

  /** Registers a JS function (`source` defining `entryPoint`), named `name`; its id. */
  async registerJs(source: string, entryPoint = "f", name = entryPoint): Promise<string> {
    const res = await this.calls.registerFunction({
      name,
      description: "",
      spec: jsSpec(source, entryPoint),
    });
    return res.function!.id;
  }

  /** Registers an endpoint named `name` without starting an agent; its id and endpoint token. */
  async newEndpoint(name: string): Promise<{ id: string; token: string }> {
    const res = await this.calls.registerEndpoint({ name, description: "", endpointId: "" });
    return { id: res.endpoint!.id, token: res.endpointToken };
  }

  /**
   * Submits one task of `functionId` to `endpointId` with `args` (no kwargs, no group, no
   * idempotency key); its id. Throws unless the broker answers with exactly one id.
   */
  async submitOne(functionId: string, endpointId: string, args: unknown[] = []): Promise<string> {
    const res = await this.calls.submitTasks({
      tasks: [
        {
          functionId,
          endpointId,
          argsJson: new TextEncoder().encode(JSON.stringify(args)),
          kwargsJson: new Uint8Array(),
          timeoutS: 0,
        },
      ],
      groupId: "",
      idempotencyKey: "",
    });
    if (res.taskIds.length !== 1) throw new Error(`one task submitted, ${res.taskIds.length} ids answered`);
    return res.taskIds[0]!;
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

/** {@link RawChannels} with a method for each unary call of the broker's services. */
export type RawClients = RawChannels & BrokerCalls;
export const RawClients = RawChannels as unknown as {
  new (address: string, token: string): RawClients;
  of(fabric: LocalFabric, user: string): Promise<RawClients>;
  withToken(fabric: LocalFabric, token: string): RawClients;
};
