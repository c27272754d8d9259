/**
 * The routes of the HTTP API, as data: method, path, the zod schemas of the body and the answer,
 * and a handler that calls the same service handlers the gRPC API does (with the proto request
 * made from the validated JSON). The server (server.ts) registers them and the OpenAPI document
 * (openapi.ts) is generated from them, so neither can drift from the other.
 */
import { z } from "zod";

import { FabricError } from "../../common/index.js";
import { FunctionMessage, RegisterFunctionRequest, type FunctionServiceServer } from "../../proto/index.js";
import type { CallContext, UnaryHandlers } from "../rpc/rpc.js";

/** One route of the API. */
export interface Route {
  readonly method: "GET" | "POST" | "DELETE";
  /** Path with `{name}` parameters, as OpenAPI writes them. */
  readonly path: string;
  readonly operationId: string;
  readonly summary: string;
  readonly tag: string;
  /** The request body's schema (POST). */
  readonly body?: z.ZodType;
  /** The query string's schema: an object of its parameters (GET). */
  readonly query?: z.ZodObject;
  /** The answer's schema (status 200); of a stream, each event's data. */
  readonly response: z.ZodType;
  /** Whether the route needs a token. @default true */
  readonly authenticated?: boolean;
  /** Answers the call with one JSON document. */
  readonly handler?: (input: RouteInput, ctx: CallContext) => Promise<unknown>;
  /**
   * Answers the call with a stream of Server-Sent Events instead. An error thrown before the first
   * event (or `ready`) answers as JSON with its status, like any call; after it, as an `error` event.
   */
  readonly events?: (input: RouteInput, ctx: CallContext, sink: EventSink) => Promise<void>;
}

/** What a handler gets: the validated body and query, and the path parameters. */
export interface RouteInput {
  readonly body: unknown;
  readonly query: unknown;
  readonly params: Readonly<Record<string, string>>;
  /** Aborted when the client goes away before the answer (a long-poll stops waiting). */
  readonly signal?: AbortSignal;
}

/** Where a streaming route sends its events. */
export interface EventSink {
  /** The client went away (or the server is stopping). */
  readonly closed: boolean;
  /** Sends one event; false when the socket's buffer is full (wait for "drain"). */
  send(event: string, data: unknown): boolean;
  /** The call was accepted: the stream starts now (before its first event). */
  ready(): void;
  once(event: "drain", listener: () => void): void;
  onClose(listener: () => void): () => void;
}

const id = z.string().describe("an id the API returned");

const jsSpec = z.strictObject({
  source: z.string().describe("module-less JavaScript source defining the entry point"),
  entryPoint: z.string().describe("the name of the function to call"),
});
const shellSpec = z.strictObject({
  command: z.string().describe("command template; {name} placeholders are filled from kwargs, shell-quoted"),
  walltimeS: z.number().int().min(0).optional().describe("seconds before the command is killed (0: default)"),
});
const pythonSpec = z.strictObject({
  source: z.string().describe("Python module source defining the entry point"),
  entryPoint: z.string().describe("the callable to call (a dotted path reaches into classes)"),
  minVersion: z.string().optional().describe('lowest Python version it needs, e.g. "3.10"'),
});

/** A function's spec in JSON: exactly one of `js`, `shell`, `python`, and the common options. */
export const FunctionSpecJson = z
  .strictObject({
    js: jsSpec.optional(),
    shell: shellSpec.optional(),
    python: pythonSpec.optional(),
    containerImage: z
      .string()
      .optional()
      .describe("container image it needs (empty: the endpoint's default)"),
    network: z.boolean().optional().describe("it needs network access in its container"),
    maxRetries: z.number().int().min(0).optional().describe("times a failed task runs again"),
    timeoutS: z.number().int().min(0).optional().describe("seconds a task may run (0: no limit)"),
  })
  .refine((s) => [s.js, s.shell, s.python].filter((k) => k !== undefined).length === 1, {
    message: "exactly one of js, shell or python is required",
  })
  .describe("FunctionSpec");

/** A registered function, as the API shows it. */
export const FunctionJson = z
  .object({
    id,
    owner: z.string(),
    name: z.string(),
    description: z.string(),
    spec: FunctionSpecJson.optional(),
    createdAtMs: z.number().int(),
    public: z.boolean(),
    sharedWith: z.array(z.string()),
  })
  .describe("Function");

const RegisterFunctionBody = z
  .strictObject({
    name: z.string().optional(),
    description: z.string().optional(),
    spec: FunctionSpecJson,
  })
  .describe("RegisterFunctionRequest");

const ShareFunctionBody = z
  .strictObject({
    public: z.boolean().optional().describe("anyone with a token may run it"),
    // Bounded here, not only by the service: zod looks at every item of an unbounded array.
    sharedWith: z.array(z.string()).max(1000).optional().describe("users, or group:NAME"),
  })
  .describe("ShareFunctionRequest");

const functionOut = (fn: FunctionMessage | undefined) => {
  if (!fn) throw new FabricError("INTERNAL", "the service returned no function");
  // Every field, defaults included (proto JSON leaves them out).
  return {
    ...(FunctionMessage.toJSON(fn) as Record<string, unknown>),
    id: fn.id,
    owner: fn.owner,
    name: fn.name,
    description: fn.description,
    createdAtMs: fn.createdAtMs,
    public: fn.public,
    sharedWith: fn.sharedWith,
  };
};

/** The routes of functions: register, get, list, delete, share. */
export function functionRoutes(h: UnaryHandlers<FunctionServiceServer>): Route[] {
  return [
    {
      method: "POST",
      path: "/v1/functions",
      operationId: "registerFunction",
      summary: "Register a function (JavaScript, shell or Python); answers it with its new id",
      tag: "functions",
      body: RegisterFunctionBody,
      response: z.object({ function: FunctionJson }),
      handler: async ({ body }, ctx) => {
        const req = RegisterFunctionRequest.fromJSON(body);
        return { function: functionOut((await h.registerFunction(req, ctx)).function) };
      },
    },
    {
      method: "GET",
      path: "/v1/functions",
      operationId: "listFunctions",
      summary: "The functions the caller owns or may use",
      tag: "functions",
      response: z.object({ functions: z.array(FunctionJson) }),
      handler: async (_input, ctx) => ({
        functions: (await h.listFunctions({}, ctx)).functions.map(functionOut),
      }),
    },
    {
      method: "GET",
      path: "/v1/functions/{functionId}",
      operationId: "getFunction",
      summary: "One function (404 when unknown or not the caller's to use)",
      tag: "functions",
      response: z.object({ function: FunctionJson }),
      handler: async ({ params }, ctx) => ({
        function: functionOut((await h.getFunction({ functionId: params["functionId"]! }, ctx)).function),
      }),
    },
    {
      method: "DELETE",
      path: "/v1/functions/{functionId}",
      operationId: "deleteFunction",
      summary: "Delete a function the caller owns",
      tag: "functions",
      response: z.object({}),
      handler: async ({ params }, ctx) => {
        await h.deleteFunction({ functionId: params["functionId"]! }, ctx);
        return {};
      },
    },
    {
      method: "POST",
      path: "/v1/functions/{functionId}/share",
      operationId: "shareFunction",
      summary: "Set who may use a function the caller owns",
      tag: "functions",
      body: ShareFunctionBody,
      response: z.object({ function: FunctionJson }),
      handler: async ({ body, params }, ctx) => {
        const b = body as z.infer<typeof ShareFunctionBody>;
        const res = await h.shareFunction(
          { functionId: params["functionId"]!, public: b.public ?? false, sharedWith: b.sharedWith ?? [] },
          ctx,
        );
        return { function: functionOut(res.function) };
      },
    },
  ];
}
