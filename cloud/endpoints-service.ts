import type { Logger } from "pino";
import { z } from "zod";

import { Bus } from "../common/bus-layout.js";
import { FabricError, notFound } from "../common/errors.js";
import { newId } from "../common/ids.js";
import {
  Endpoint,
  EndpointStatus,
  type ConnectEndpointRequest,
  type ConnectEndpointResponse,
  type DeleteEndpointRequest,
  type DeleteEndpointResponse,
  type EndpointServiceServer,
  type EndpointStatusView,
  type GetEndpointRequest,
  type GetEndpointResponse,
  type ListEndpointsRequest,
  type ListEndpointsResponse,
  type RegisterEndpointRequest,
  type RegisterEndpointResponse,
} from "../proto/index.js";
import type { TokenAuthority } from "./auth.js";
import type { BrokerConfig } from "./config.js";
import { readRecord, TtlCache } from "./records.js";
import { unary, userOf, type CallContext } from "./rpc.js";
import type { FabricStore } from "./store.js";
import { check, descriptionSchema, idSchema, nameSchema } from "./validate.js";

const registerSchema = z.object({
  name: nameSchema.min(1, { message: "an endpoint needs a name" }),
  description: descriptionSchema,
  endpointId: z.union([z.literal(""), idSchema("endpoint")]),
});

/** Endpoints: owned records, looked up by id, with their agents' last heartbeat. */
export class EndpointRegistry {
  private readonly cache = new TtlCache<Endpoint>(5_000);

  constructor(
    private readonly store: FabricStore,
    private readonly config: BrokerConfig,
  ) {}

  /** The endpoint if `owner` owns it, else NOT_FOUND (exactly as for an unknown id). */
  async get(endpointId: string, owner: string): Promise<Endpoint> {
    let ep = this.cache.get(endpointId);
    if (!ep) {
      const rec = await readRecord(this.store.endpoints, endpointId, Endpoint);
      if (rec) {
        ep = rec.value;
        this.cache.set(endpointId, ep);
      }
    }
    if (!ep || ep.owner !== owner) throw notFound(`endpoint ${endpointId} not found`);
    return ep;
  }

  forget(endpointId: string): void {
    this.cache.delete(endpointId);
  }

  async statusView(endpointId: string): Promise<EndpointStatusView> {
    const [rec, queued] = await Promise.all([
      readRecord(this.store.endpointStatus, endpointId, EndpointStatus),
      this.store.queuedTasks(endpointId),
    ]);
    if (!rec) return { connection: "never-connected", last: undefined, queuedTasks: queued };
    const fresh = Date.now() - rec.value.atMs < this.config.endpointOfflineAfterSeconds * 1000;
    return {
      connection: fresh && rec.value.state === "online" ? "online" : "offline",
      last: rec.value,
      queuedTasks: queued,
    };
  }
}

/** The endpoint a call is about: the caller's own (user) or itself (endpoint credentials). */
async function endpointFor(
  registry: EndpointRegistry,
  endpointId: string,
  ctx: CallContext,
): Promise<Endpoint> {
  const p = ctx.principal;
  if (p.kind === "endpoint") {
    if (p.endpointId !== endpointId) throw notFound(`endpoint ${endpointId} not found`);
    return registry.get(endpointId, p.owner);
  }
  return registry.get(endpointId, p.userId);
}

export function endpointService(
  store: FabricStore,
  registry: EndpointRegistry,
  config: BrokerConfig,
  auth: TokenAuthority,
  log: Logger,
): EndpointServiceServer {
  return {
    registerEndpoint: unary<RegisterEndpointRequest, RegisterEndpointResponse>(
      auth,
      log,
      "RegisterEndpoint",
      async (req, ctx) => {
        const owner = userOf(ctx);
        const v = check(registerSchema, req, "RegisterEndpoint request");
        let endpoint: Endpoint;
        if (v.endpointId) {
          endpoint = await registry.get(v.endpointId, owner);
        } else {
          endpoint = {
            id: newId(),
            owner,
            name: v.name,
            description: v.description,
            createdAtMs: Date.now(),
          };
          await store.endpoints.create(endpoint.id, Endpoint.encode(endpoint).finish());
        }
        // The queue exists from now on: tasks sent before the agent first starts wait in it.
        await store.ensureEndpointConsumer(endpoint.id);
        const endpointToken = await auth.issueEndpointToken(endpoint.id, owner);
        ctx.log.info({ endpointId: endpoint.id, owner }, "endpoint registered");
        return { endpoint, endpointToken };
      },
    ),
    getEndpoint: unary<GetEndpointRequest, GetEndpointResponse>(
      auth,
      log,
      "GetEndpoint",
      async (req, ctx) => {
        const id = check(idSchema("endpoint"), req.endpointId, "endpoint id");
        const endpoint = await endpointFor(registry, id, ctx);
        return { endpoint, status: await registry.statusView(id) };
      },
    ),
    listEndpoints: unary<ListEndpointsRequest, ListEndpointsResponse>(
      auth,
      log,
      "ListEndpoints",
      async (_req, ctx) => {
        const owner = userOf(ctx);
        const endpoints: Endpoint[] = [];
        for await (const key of await store.endpoints.keys()) {
          const rec = await readRecord(store.endpoints, key, Endpoint);
          if (rec && rec.value.owner === owner) endpoints.push(rec.value);
        }
        endpoints.sort((a, b) => a.createdAtMs - b.createdAtMs);
        const statuses = await Promise.all(endpoints.map((e) => registry.statusView(e.id)));
        return { endpoints, statuses };
      },
    ),
    deleteEndpoint: unary<DeleteEndpointRequest, DeleteEndpointResponse>(
      auth,
      log,
      "DeleteEndpoint",
      async (req, ctx) => {
        const id = check(idSchema("endpoint"), req.endpointId, "endpoint id");
        await endpointFor(registry, id, ctx);
        await store.endpoints.delete(id);
        registry.forget(id);
        await store.deleteEndpointConsumer(id);
        await store.endpointStatus.delete(id);
        ctx.log.info({ endpointId: id }, "endpoint deleted");
        return {};
      },
    ),
    connectEndpoint: unary<ConnectEndpointRequest, ConnectEndpointResponse>(
      auth,
      log,
      "ConnectEndpoint",
      async (req, ctx) => {
        const p = ctx.principal;
        if (p.kind !== "endpoint") {
          throw new FabricError(
            "PERMISSION_DENIED",
            "ConnectEndpoint needs endpoint credentials (from RegisterEndpoint)",
          );
        }
        const endpoint = await registry.get(p.endpointId, p.owner);
        // A new agent takes over: tasks the previous one held un-acked come back at once.
        await store.ensureEndpointConsumer(endpoint.id, true);
        ctx.log.info(
          { endpointId: endpoint.id, hostname: req.hostname, agentVersion: req.agentVersion },
          "agent connected",
        );
        return {
          endpoint,
          bus: {
            servers: [...(config.nats.agentServers ?? config.nats.servers)],
            userJwt: "",
            userSeed: "",
            inboxPrefix: "",
            taskStream: Bus.taskStream,
            taskConsumer: Bus.taskConsumer(endpoint.id),
            taskSubject: Bus.taskSubject(endpoint.id),
            resultSubject: Bus.resultSubject(endpoint.id),
            statusSubject: Bus.endpointStatusSubject(endpoint.id),
            payloadBucket: Bus.payloadBucket,
            ackWaitS: config.taskAckWaitSeconds,
          },
        };
      },
    ),
  };
}
