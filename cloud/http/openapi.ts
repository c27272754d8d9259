/**
 * The OpenAPI 3.1 document of the HTTP API, generated from the route table: the same zod schemas
 * that validate each request describe it (zod's own JSON Schema output, draft 2020-12, which is
 * OpenAPI 3.1's dialect). Pure.
 */
import { z } from "zod";

import { ErrorCode } from "../../common/index.js";
import type { Route } from "./routes.js";

/** Where the document is served. */
export const OPENAPI_PATH = "/v1/openapi.json";

const ErrorBody = z
  .object({
    code: z.enum(Object.values(ErrorCode) as [string, ...string[]]),
    message: z.string(),
    details: z.object({ reason: z.string().optional() }),
  })
  .describe("Error");

/** A schema inlined whole (no `$ref`: a pointer in an operation would resolve against the document). */
function schemaOf(schema: z.ZodType, io: "input" | "output"): unknown {
  const json = z.toJSONSchema(schema, {
    target: "draft-2020-12",
    io,
    unrepresentable: "any",
    reused: "inline",
  });
  delete (json as { $schema?: string }).$schema;
  return json;
}

/** The document, for these routes. */
export function openApiDocument(routes: readonly Route[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const params: Record<string, unknown>[] = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: "path",
      required: true,
      schema: { type: "string" },
    }));
    if (r.query) {
      const q = schemaOf(r.query, "input") as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, schema] of Object.entries(q.properties ?? {})) {
        params.push({
          name,
          in: "query",
          required: q.required?.includes(name) ?? false,
          schema,
          ...(Array.isArray((schema as { anyOf?: unknown }).anyOf) ? { explode: true } : {}),
        });
      }
    }
    const errorAnswer = {
      description: "an error",
      content: { "application/json": { schema: schemaOf(ErrorBody, "output") } },
    };
    (paths[r.path] ??= {})[r.method.toLowerCase()] = {
      operationId: r.operationId,
      summary: r.summary,
      tags: [r.tag],
      ...(r.authenticated === false ? { security: [] } : {}),
      ...(params.length > 0 ? { parameters: params } : {}),
      ...(r.body
        ? {
            requestBody: {
              required: true,
              content: { "application/json": { schema: schemaOf(r.body, "input") } },
            },
          }
        : {}),
      responses: {
        "200": r.events
          ? {
              description:
                "a stream of Server-Sent Events; each event's data is this JSON (see the summary for the events)",
              content: { "text/event-stream": { schema: schemaOf(r.response, "output") } },
            }
          : {
              description: "done",
              content: { "application/json": { schema: schemaOf(r.response, "output") } },
            },
        default: errorAnswer,
      },
    };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "fabric HTTP API",
      version,
      description:
        "The broker's operations as JSON over HTTP. Every call but this document's needs `Authorization: Bearer <token>`. Errors answer {code, message, details} with the HTTP status of the code.",
    },
    components: { securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } } },
    security: [{ bearer: [] }],
    paths,
  };
}
