/**
 * The broker's HTTP/JSON API: its own listener in the broker process, the routes of routes.ts on
 * fastify. Each call: the bearer token checked by the same code as gRPC's, the body validated by
 * the route's zod schema (unknown fields, wrong types and bad JSON answer 400 with what was
 * wrong), then the shared service handler; failures answer `{code, message, details}`.
 */
import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { Server as TlsServer } from "node:tls";

import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Logger } from "pino";
import { z } from "zod";

import { FabricError, MAX_JSON_DEPTH, toFabricError } from "../../common/index.js";
import type { TokenAuthority } from "../auth/tokens.js";
import { authenticateBearer, logFailure, type CallContext } from "../rpc/rpc.js";
import type { ServerTlsContext } from "../rpc/tls.js";
import { httpErrorOf } from "./errors.js";
import { OPENAPI_PATH, openApiDocument } from "./openapi.js";
import type { EventSink, Route, RouteInput } from "./routes.js";

/** How often a stream of events with nothing to say sends a comment. */
const KEEP_ALIVE_MS = 15_000;

/** Options of an {@link HttpApi}. */
export interface HttpApiOptions {
  /** `host:port` to listen on (port 0: any free port). */
  readonly listen: string;
  readonly routes: readonly Route[];
  readonly auth: TokenAuthority;
  readonly log: Logger;
  /** Largest request body accepted (bytes). */
  readonly bodyLimit: number;
  /** The API's version in the OpenAPI document. */
  readonly version: string;
  /**
   * Serve HTTPS with this certificate (the broker's own, followed as it is reloaded); client
   * certificates are asked for, and required, as the broker's `tls` says.
   */
  readonly tls?: ServerTlsContext;
  /** Routes beside the API's, outside its table and OpenAPI document (the dashboard's files). */
  readonly extraRoutes?: readonly ((app: FastifyInstance) => void)[];
}

/** Where `host:port` points. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(listen);
  if (!m)
    throw new FabricError("INVALID_ARGUMENT", `http.listen must be host:port, got ${JSON.stringify(listen)}`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, "$1"), port: Number(m[2]) };
}

/** Most problems a message lists (a body of 100,000 bad items would make a message of megabytes). */
const MAX_PROBLEMS = 10;

/** The message of a body that failed its schema: the first problems, each with its path. */
function schemaProblems(err: z.ZodError): string {
  const listed = err.issues
    .slice(0, MAX_PROBLEMS)
    .map((i) => `${i.path.length > 0 ? i.path.join(".") : "body"}: ${i.message}`)
    .join("; ");
  const more = err.issues.length - MAX_PROBLEMS;
  return more > 0 ? `${listed}; and ${more} more` : listed;
}

/** Longest path parameter routed (ids are far shorter). */
const MAX_PARAM_LENGTH = 100;

/** Deepest body accepted: a payload at its limit (common/json.ts) inside a request's envelope. */
const MAX_BODY_DEPTH = MAX_JSON_DEPTH + 8;

/** Whether `value` nests arrays and objects deeper than `limit` (iterative: no stack to overflow). */
function nestedDeeperThan(value: unknown, limit: number): boolean {
  const stack: [object, number][] = typeof value === "object" && value !== null ? [[value, 1]] : [];
  for (let top = stack.pop(); top; top = stack.pop()) {
    const [v, depth] = top;
    if (depth > limit) return true;
    const children: unknown[] = Array.isArray(v) ? v : Object.values(v as Record<string, unknown>);
    for (const child of children)
      if (typeof child === "object" && child !== null) stack.push([child, depth + 1]);
  }
  return false;
}

/**
 * Bytes the HTTP parser could not read as a request (a bad request line or header, headers over
 * the limit): answered with the same JSON errors and `Connection: close` (so a keep-alive client
 * does not send its next request into a socket about to close), then closed.
 */
function answerClientError(err: { code?: string }, socket: Socket): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const fe =
    err.code === "HPE_HEADER_OVERFLOW"
      ? new FabricError("RESOURCE_EXHAUSTED", "the request's headers (its URL included) are over the limit")
      : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
        ? new FabricError("DEADLINE_EXCEEDED", "the request did not arrive in time")
        : new FabricError("INVALID_ARGUMENT", `not an HTTP/1.1 request: ${err.code ?? "unreadable"}`);
  const { status, body } = httpErrorOf(fe);
  const text = JSON.stringify(body);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
  );
  // Closed once the client has read the answer, or soon if it keeps sending.
  setTimeout(() => socket.destroy(), 1_000).unref();
}

export class HttpApi {
  private app: FastifyInstance | undefined;
  private boundPort = 0;

  constructor(private readonly opts: HttpApiOptions) {}

  /** The port the listener is bound to. */
  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<void> {
    const { routes, auth, log } = this.opts;
    const tls = this.opts.tls;
    const fail = (reply: FastifyReply, method: string, err: unknown) => {
      const fe = toFabricError(err);
      logFailure(log, method, fe);
      const { status, body } = httpErrorOf(fe);
      return reply.code(status).type("application/json").send(body);
    };
    const app = Fastify({
      bodyLimit: this.opts.bodyLimit,
      logger: false,
      return503OnClosing: true,
      clientErrorHandler: answerClientError,
      routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
      ...(tls
        ? {
            https: {
              ...tls.current(),
              requestCert: tls.config.clientCaFile !== undefined,
              rejectUnauthorized: tls.config.clientCaFile !== undefined && tls.config.requireClientCert,
            },
          }
        : {}),
      // The router's own refusals: a path that is not valid percent-encoding, a parameter over
      // the length limit.
      frameworkErrors: (err, req, reply) => {
        const path = req.url.split("?")[0]!.slice(0, 120);
        const why =
          err.code === "FST_ERR_BAD_URL"
            ? `the path ${path} is not a valid URL (bad percent-encoding)`
            : err.code === "FST_ERR_MAX_PARAM_LENGTH"
              ? `a path parameter of ${path}… is over ${MAX_PARAM_LENGTH} characters`
              : err.message;
        return fail(reply, req.url, new FabricError("INVALID_ARGUMENT", why));
      },
    });
    // Errors fastify finds itself (bad JSON, a body over the limit, a wrong content type).
    // JSON as fastify parses it (prototype poisoning refused), except that an empty body with a
    // JSON content type is no body: curl users send the header on a DELETE too.
    const parseJson = app.getDefaultJsonParser("error", "error");
    app.addContentTypeParser("application/json", { parseAs: "string" }, (req, body, done) => {
      const text = typeof body === "string" ? body : body.toString("utf8");
      if (text.trim() === "") {
        done(null, undefined);
        return;
      }
      void parseJson(req, text, done);
    });
    app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, req, reply) => {
      const status = err.statusCode ?? 500;
      if (status === 413)
        return fail(
          reply,
          req.url,
          new FabricError(
            "RESOURCE_EXHAUSTED",
            `the request body is over the limit of ${this.opts.bodyLimit} bytes`,
          ),
        );
      if (status === 415)
        return fail(reply, req.url, new FabricError("INVALID_ARGUMENT", "send the body as application/json"));
      if (status >= 400 && status < 500)
        return fail(
          reply,
          req.url,
          new FabricError("INVALID_ARGUMENT", `the request body is not valid JSON: ${err.message}`),
        );
      return fail(reply, req.url, err);
    });
    app.setNotFoundHandler((req, reply) =>
      fail(
        reply,
        req.url,
        new FabricError(
          "NOT_FOUND",
          `no route ${req.method} ${req.url.split("?")[0]}: see ${OPENAPI_PATH} for the API`,
        ),
      ),
    );
    const document = openApiDocument(routes, this.opts.version);
    app.get(OPENAPI_PATH, async () => document);
    for (const route of routes) {
      const url = route.path.replace(/\{(\w+)\}/g, ":$1");
      app.route({
        method: route.method,
        url,
        handler: async (req: FastifyRequest, reply: FastifyReply) => {
          try {
            const principal =
              route.authenticated === false
                ? undefined
                : await authenticateBearer(auth, req.headers.authorization);
            let body: unknown;
            if (route.body) {
              // Deeper than any payload may be: refused before a recursive step meets it.
              if (nestedDeeperThan(req.body, MAX_BODY_DEPTH))
                throw new FabricError(
                  "INVALID_ARGUMENT",
                  `${route.operationId}: the body is nested deeper than ${MAX_BODY_DEPTH} levels`,
                );
              const parsed = route.body.safeParse(req.body ?? undefined);
              if (!parsed.success)
                throw new FabricError(
                  "INVALID_ARGUMENT",
                  `${route.operationId}: ${schemaProblems(parsed.error)}`,
                );
              body = parsed.data;
            }
            let query: unknown;
            if (route.query) {
              const parsed = route.query.safeParse(req.query ?? {});
              if (!parsed.success)
                throw new FabricError(
                  "INVALID_ARGUMENT",
                  `${route.operationId}: ${schemaProblems(parsed.error).replace(/^body:/, "query:")}`,
                );
              query = parsed.data;
            }
            const gone = new AbortController();
            reply.raw.once("close", () => {
              if (!reply.raw.writableFinished) gone.abort();
            });
            const input = {
              body,
              query,
              params: (req.params ?? {}) as Record<string, string>,
              signal: gone.signal,
            };
            const ctx = { principal: principal!, log };
            if (route.events) return this.stream(route, input, ctx, reply);
            const out = await route.handler!(input, ctx);
            return reply.type("application/json").send(out);
          } catch (err) {
            return fail(reply, route.operationId, err);
          }
        },
      });
    }
    for (const register of this.opts.extraRoutes ?? []) register(app);
    const { host, port } = parseListen(this.opts.listen);
    await app.listen({ host, port });
    if (tls) {
      // New connections get a reloaded certificate; open ones keep theirs.
      this.unfollowTls = tls.onChange((options) =>
        (app.server as unknown as TlsServer).setSecureContext(options),
      );
    }
    const addr = app.server.address();
    this.boundPort = typeof addr === "object" && addr ? addr.port : port;
    this.app = app;
  }

  private readonly streams = new Set<() => void>();

  /**
   * Runs a streaming route: Server-Sent Events on the raw response (`event:` and one `data:` line
   * of JSON each), a comment every {@link KEEP_ALIVE_MS} so proxies and clients see it alive.
   */
  private async stream(
    route: Route,
    input: RouteInput,
    ctx: CallContext,
    reply: FastifyReply,
  ): Promise<void> {
    reply.hijack();
    const raw = reply.raw;
    let started = false;
    let closed = false;
    const closeListeners = new Set<() => void>();
    const close = () => {
      if (closed) return;
      closed = true;
      for (const l of closeListeners) l();
    };
    const start = () => {
      if (started || closed) return;
      started = true;
      raw.writeHead(200, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
      });
      raw.flushHeaders();
    };
    raw.on("close", close);
    const stop = () => {
      close();
      raw.destroy();
    };
    this.streams.add(stop);
    const keepAlive = setInterval(() => {
      start();
      if (!closed) raw.write(": keep-alive\n\n");
    }, KEEP_ALIVE_MS);
    const sink: EventSink = {
      get closed() {
        return closed;
      },
      send: (event, data) => {
        start();
        if (closed) return true;
        return raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      },
      ready: start,
      once: (_event, listener) => void raw.once("drain", listener),
      onClose: (listener) => {
        closeListeners.add(listener);
        return () => closeListeners.delete(listener);
      },
    };
    try {
      await route.events!(input, ctx, sink);
      start();
      if (!closed) raw.end();
    } catch (err) {
      const fe = toFabricError(err);
      logFailure(this.opts.log, route.operationId, fe);
      const { status, body } = httpErrorOf(fe);
      if (closed) return;
      if (!started) {
        raw.writeHead(status, { "content-type": "application/json" });
        raw.end(JSON.stringify(body));
      } else {
        raw.end(`event: error\ndata: ${JSON.stringify(body)}\n\n`);
      }
    } finally {
      clearInterval(keepAlive);
      this.streams.delete(stop);
    }
  }

  private unfollowTls: (() => void) | undefined;

  /** Stops taking calls; in-flight ones finish, streams are ended. */
  async stop(): Promise<void> {
    this.unfollowTls?.();
    for (const stop of [...this.streams]) stop();
    await this.app?.close();
  }
}
