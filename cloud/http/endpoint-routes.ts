/**
 * The endpoint routes of the HTTP API: register, get (with its status), list, delete, policy.
 * The agent's own call (connect) stays on gRPC. Handlers: registry/endpoints.ts endpointHandlers.
 */
import { z } from "zod";

import { FabricError } from "../../common/index.js";
import { Endpoint, EndpointStatusView, type EndpointServiceServer } from "../../proto/index.js";
import type { UnaryHandlers } from "../rpc/rpc.js";
import type { Route } from "./routes.js";
import { stateName } from "./task-routes.js";

/** An endpoint as the API shows it. */
const EndpointJson = z
  .object({
    id: z.string(),
    owner: z.string(),
    name: z.string(),
    description: z.string(),
    createdAtMs: z.number(),
    sharedWith: z.array(z.string()),
    allowedFunctions: z.array(z.string()),
  })
  .describe("Endpoint");

const StatusJson = z
  .object({
    connection: z.string().describe('"online", "offline" or "never-connected"'),
    last: z.unknown().optional().describe("the agent's last signed status: blocks, workers, Python"),
    queuedTasks: z.number().describe("tasks queued that the endpoint has not taken yet"),
  })
  .describe("EndpointStatus");

const RegisterBody = z
  .strictObject({
    name: z.string().optional(),
    description: z.string().optional(),
    endpointId: z
      .string()
      .optional()
      .describe("re-register this endpoint of the caller's for fresh credentials"),
  })
  .describe("RegisterEndpointRequest");

const PolicyBody = z
  .strictObject({
    // The service's bounds, here too: zod looks at every item of an unbounded array.
    sharedWith: z.array(z.string()).max(1000).optional().describe("users or group:NAME who may submit to it"),
    allowedFunctions: z
      .array(z.string())
      .max(10_000)
      .optional()
      .describe("function ids it runs (empty: any)"),
  })
  .describe("EndpointPolicy");

const endpointOut = (ep: Endpoint | undefined) => {
  if (!ep) throw new FabricError("INTERNAL", "the service returned no endpoint");
  // Every field, defaults included (proto JSON leaves them out); never the credential's id.
  return {
    id: ep.id,
    owner: ep.owner,
    name: ep.name,
    description: ep.description,
    createdAtMs: ep.createdAtMs,
    sharedWith: ep.sharedWith,
    allowedFunctions: ep.allowedFunctions,
  };
};
const statusOut = (v: EndpointStatusView | undefined) => {
  const view = v ?? { connection: "never-connected", last: undefined, queuedTasks: 0 };
  const last = (EndpointStatusView.toJSON(view) as { last?: unknown }).last;
  return {
    connection: view.connection,
    queuedTasks: view.queuedTasks,
    ...(last !== undefined ? { last } : {}),
  };
};

/** The routes of endpoints. */
export function endpointRoutes(h: UnaryHandlers<EndpointServiceServer>): Route[] {
  const id = (params: Readonly<Record<string, string>>) => params["endpointId"]!;
  return [
    {
      method: "POST",
      path: "/v1/endpoints",
      operationId: "registerEndpoint",
      summary: "Register an endpoint; answers it and the agent's credential (shown once)",
      tag: "endpoints",
      body: RegisterBody,
      response: z.object({ endpoint: EndpointJson, endpointToken: z.string() }),
      handler: async ({ body }, ctx) => {
        const b = body as z.infer<typeof RegisterBody>;
        const res = await h.registerEndpoint(
          { name: b.name ?? "", description: b.description ?? "", endpointId: b.endpointId ?? "" },
          ctx,
        );
        return { endpoint: endpointOut(res.endpoint), endpointToken: res.endpointToken };
      },
    },
    {
      method: "GET",
      path: "/v1/endpoints",
      operationId: "listEndpoints",
      summary: "The endpoints the caller owns or may use, each with its status",
      tag: "endpoints",
      response: z.object({ endpoints: z.array(z.object({ endpoint: EndpointJson, status: StatusJson })) }),
      handler: async (_input, ctx) => {
        const res = await h.listEndpoints({}, ctx);
        return {
          endpoints: res.endpoints.map((ep, i) => ({
            endpoint: endpointOut(ep),
            status: statusOut(res.statuses[i]),
          })),
        };
      },
    },
    {
      method: "GET",
      path: "/v1/endpoints/{endpointId}",
      operationId: "getEndpoint",
      summary: "One endpoint and its status (404 when unknown or not the caller's to use)",
      tag: "endpoints",
      response: z.object({ endpoint: EndpointJson, status: StatusJson }),
      handler: async ({ params }, ctx) => {
        const res = await h.getEndpoint({ endpointId: id(params) }, ctx);
        return { endpoint: endpointOut(res.endpoint), status: statusOut(res.status) };
      },
    },
    {
      method: "GET",
      path: "/v1/endpoints/{endpointId}/tasks",
      operationId: "listEndpointTasks",
      summary:
        "The unfinished tasks on an endpoint the caller owns, whoever submitted them: counts, and each task's id, owner, function and state (never arguments or results)",
      tag: "endpoints",
      query: z
        .strictObject({
          limit: z
            .string()
            .regex(/^\d{1,4}$/, "must be a number from 1 to 1000")
            .transform(Number)
            .refine((n) => n >= 1 && n <= 1000, "must be from 1 to 1000")
            .optional()
            .describe("most tasks listed, oldest queued first (default 100)"),
        })
        .describe("ListEndpointTasksQuery"),
      response: z.object({
        queuedCount: z.number().describe("tasks the agent has not taken yet"),
        takenCount: z.number().describe("tasks the agent has taken and not finished"),
        tasks: z.array(
          z.object({
            id: z.string(),
            owner: z.string(),
            functionId: z.string(),
            state: z.string(),
            createdAtMs: z.number(),
          }),
        ),
      }),
      handler: async ({ params, query }, ctx) => {
        const q = query as { limit?: number };
        const res = await h.listEndpointTasks({ endpointId: id(params), limit: q.limit ?? 0 }, ctx);
        return {
          queuedCount: res.queuedCount,
          takenCount: res.takenCount,
          tasks: res.tasks.map((t) => ({ ...t, state: stateName(t.state) })),
        };
      },
    },
    {
      method: "DELETE",
      path: "/v1/endpoints/{endpointId}",
      operationId: "deleteEndpoint",
      summary: "Delete an endpoint the caller owns (its queued tasks fail)",
      tag: "endpoints",
      response: z.object({}),
      handler: async ({ params }, ctx) => {
        await h.deleteEndpoint({ endpointId: id(params) }, ctx);
        return {};
      },
    },
    {
      method: "POST",
      path: "/v1/endpoints/{endpointId}/policy",
      operationId: "updateEndpointPolicy",
      summary: "Replace who may submit to an endpoint the caller owns, and which functions it runs",
      tag: "endpoints",
      body: PolicyBody,
      response: z.object({ endpoint: EndpointJson }),
      handler: async ({ body, params }, ctx) => {
        const b = body as z.infer<typeof PolicyBody>;
        const res = await h.updateEndpointPolicy(
          {
            endpointId: id(params),
            sharedWith: b.sharedWith ?? [],
            allowedFunctions: b.allowedFunctions ?? [],
          },
          ctx,
        );
        return { endpoint: endpointOut(res.endpoint) };
      },
    },
  ];
}
