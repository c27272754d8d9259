import type { Logger } from "pino";
import { z } from "zod";

import { Bus, FabricError, notFound, unauthenticated, newId } from "../../common/index.js";
import type { Endpoint, EndpointServiceServer } from "../../proto/index.js";
import { shareListSchema } from "../auth/authz.js";
import type { NatsCredentialMinter } from "../auth/nats-credentials.js";
import type { TokenAuthority } from "../auth/tokens.js";
import type { BrokerConfig } from "../config.js";
import { unaryService, userOf, type CallContext, type UnaryHandlers } from "../rpc/rpc.js";
import { check, checkId, descriptionSchema, idSchema, nameSchema } from "../rpc/validate.js";
import { mapLimit } from "../state/records.js";
import type { FabricStore } from "../state/store.js";
import type { EndpointStatuses } from "./endpoint-status.js";
import type { OwnedRegistry } from "./owned-registry.js";

/** Endpoints: owned records, looked up by id, shareable; their agents connect with endpoint credentials. */
export type EndpointRegistry = OwnedRegistry<Endpoint>;

const registerSchema = z.object({
  name: nameSchema.min(1, { message: "an endpoint needs a name" }),
  description: descriptionSchema,
  endpointId: z.union([z.literal(""), idSchema("endpoint")]),
});

/**
 * The endpoint a call reads: one the caller may use (user), or itself (endpoint credentials).
 */
async function endpointFor(
  registry: EndpointRegistry,
  endpointId: string,
  ctx: CallContext,
): Promise<Endpoint> {
  const p = ctx.principal;
  if (p.kind === "endpoint") {
    if (p.endpointId !== endpointId) throw notFound(`endpoint ${endpointId} not found`);
    return registry.getOwned(endpointId, p.owner, "read");
  }
  return registry.get(endpointId, p.userId);
}

/** What the endpoint service works with. */
export interface EndpointServiceDeps {
  readonly store: FabricStore;
  readonly registry: EndpointRegistry;
  readonly statuses: EndpointStatuses;
  readonly config: BrokerConfig;
  readonly auth: TokenAuthority;
  readonly log: Logger;
  /**
   * Fails every task still queued for a deleted endpoint (its consumer already gone), as `actor`;
   * resolves how many.
   */
  readonly failQueuedTasks: (endpointId: string, actor: string) => Promise<number>;
  /** Mints each agent's NATS user (operator mode); without it agents share the broker's NATS. */
  readonly minter?: NatsCredentialMinter;
}

/** The gRPC EndpointService: {@link endpointHandlers}, each call authenticated first. */
export function endpointService(deps: EndpointServiceDeps): EndpointServiceServer {
  return unaryService<EndpointServiceServer>(deps.auth, deps.log, endpointHandlers(deps));
}

/**
 * The endpoint operations, one handler per method, whatever the transport: gRPC wraps them in
 * {@link endpointService}, the HTTP API (cloud/http/) calls the user-facing ones.
 */
export function endpointHandlers(deps: EndpointServiceDeps): UnaryHandlers<EndpointServiceServer> {
  const { store, registry, statuses, config, auth, failQueuedTasks, minter } = deps;
  return {
    registerEndpoint: async (req, ctx) => {
      const owner = userOf(ctx);
      const v = check(registerSchema, req, "RegisterEndpoint request");
      let endpoint: Endpoint;
      let cred: { token: string; tokenId: string; expSeconds: number };
      if (v.endpointId) {
        const current = await registry.getOwned(v.endpointId, owner, "re-register");
        cred = await auth.issueEndpointCredential(current.id, owner);
        // One live credential per endpoint: a re-registration revokes the one it replaces (a
        // copied or leaked credentials file stops working at once, on every replica).
        endpoint = await registry.update(current.id, (ep) => ({ ...ep, credentialId: cred.tokenId }));
        const previous = current.credentialId;
        if (previous && previous !== cred.tokenId) {
          await auth.revokeTokenId(previous, cred.expSeconds);
          ctx.log.info({ endpointId: endpoint.id }, "the endpoint's previous credential revoked");
        }
        // And at once on NATS, where a user JWT cannot be revoked without a server reload: the
        // consumer the previous credential's agent was allowed goes, and its un-acked tasks wait
        // for the next ConnectEndpoint (with the new credential) under a name no user has yet.
        await store.queues.ensureConsumer(endpoint.id, { credentialId: cred.tokenId });
      } else {
        const id = newId();
        cred = await auth.issueEndpointCredential(id, owner);
        endpoint = {
          id,
          owner,
          name: v.name,
          description: v.description,
          createdAtMs: Date.now(),
          sharedWith: [],
          allowedFunctions: [],
          credentialId: cred.tokenId,
        };
        await registry.create(endpoint);
      }
      // The queue exists from now on: tasks sent before the agent first starts wait in it.
      await store.queues.ensureConsumer(endpoint.id);
      ctx.log.info({ endpointId: endpoint.id, owner }, "endpoint registered");
      return { endpoint, endpointToken: cred.token };
    },
    getEndpoint: async (req, ctx) => {
      const id = checkId("endpoint", req.endpointId);
      const endpoint = await endpointFor(registry, id, ctx);
      return { endpoint, status: await statuses.view(id) };
    },
    listEndpointTasks: async (req, ctx) => {
      const id = checkId("endpoint", req.endpointId);
      const limit = req.limit === 0 ? 100 : req.limit;
      if (limit > 1000) throw new FabricError("INVALID_ARGUMENT", `limit ${limit} is over 1000`);
      // The owner's view: other users' tasks are on it, so sharing is not enough.
      await registry.getOwned(id, userOf(ctx), "list the tasks of");
      const [counts, ids] = await Promise.all([store.queues.counts(id), store.queues.peek(id, limit)]);
      const records = await mapLimit(ids, 64, (taskId) => store.tasks.read(taskId));
      const tasks = records.flatMap((r) =>
        r && r.value.endpointId === id
          ? [
              {
                id: r.value.id,
                owner: r.value.owner,
                functionId: r.value.functionId,
                state: r.value.state,
                createdAtMs: r.value.createdAtMs,
              },
            ]
          : [],
      );
      return { queuedCount: counts.queued, takenCount: counts.taken, tasks };
    },
    listEndpoints: async (_req, ctx) => {
      const endpoints = await registry.list(userOf(ctx));
      const views = await mapLimit(endpoints, 64, (e) => statuses.view(e.id));
      return { endpoints, statuses: views };
    },
    deleteEndpoint: async (req, ctx) => {
      const id = checkId("endpoint", req.endpointId);
      // Endpoint credentials may connect and read, nothing more: a credential copied off a
      // login node must not be able to take the endpoint (and its queued tasks) away.
      if (ctx.principal.kind === "endpoint") {
        throw new FabricError(
          "PERMISSION_DENIED",
          "endpoint credentials cannot delete an endpoint; its owner does, with a user token (`fabric endpoint delete`)",
        );
      }
      await registry.getOwned(id, ctx.principal.userId, "delete");
      await registry.delete(id);
      await store.queues.deleteConsumer(id);
      const failed = await failQueuedTasks(id, `user/${ctx.principal.userId}`);
      if (failed > 0) ctx.log.info({ endpointId: id, failed }, "queued tasks of a deleted endpoint failed");
      await store.deleteEndpointStatus(id);
      ctx.log.info({ endpointId: id }, "endpoint deleted");
      return {};
    },
    updateEndpointPolicy: async (req, ctx) => {
      const owner = userOf(ctx);
      const id = checkId("endpoint", req.endpointId);
      const sharedWith = check(shareListSchema, req.sharedWith, "sharedWith");
      const allowedFunctions = check(
        z
          .array(idSchema("function"))
          .max(10_000)
          .transform((xs) => [...new Set(xs)].sort()),
        req.allowedFunctions,
        "allowedFunctions",
      );
      await registry.getOwned(id, owner, "change the policy of");
      const endpoint = await registry.update(id, (ep) => ({ ...ep, sharedWith, allowedFunctions }));
      // The agent enforces the list too: tell it now (it also re-reads it after a reconnect).
      store.sendControl(id, { cancelTaskIds: [], allowedFunctions: { functionIds: allowedFunctions } });
      ctx.log.info(
        { endpointId: id, sharedWith, allowedFunctions: allowedFunctions.length },
        "endpoint policy changed",
      );
      return { endpoint };
    },
    connectEndpoint: async (req, ctx) => {
      const p = ctx.principal;
      if (p.kind !== "endpoint") {
        throw new FabricError(
          "PERMISSION_DENIED",
          "ConnectEndpoint needs endpoint credentials (from RegisterEndpoint)",
        );
      }
      const endpoint = await registry.getOwned(p.endpointId, p.owner, "connect to");
      // A new agent takes over: tasks the previous one held un-acked come back at once, under a
      // consumer name the previous agent's NATS user cannot use (see EndpointQueues.ensureConsumer).
      const taskConsumer = await store.queues.ensureConsumer(endpoint.id, { credentialId: p.tokenId });
      // A re-registration (on any replica) may have replaced this credential meanwhile, before
      // this replica heard of its revocation: then the consumer just made must not be handed out.
      const fresh = await registry.current(endpoint.id);
      const current = fresh?.credentialId ?? "";
      if (!fresh || (current && current !== p.tokenId)) {
        await store.queues.deleteConsumerNamed(endpoint.id, taskConsumer);
        if (fresh) await store.queues.ensureConsumer(endpoint.id);
        registry.forget(endpoint.id);
        throw unauthenticated(
          "this endpoint credential was replaced by a re-registration; use the new credentials",
        );
      }
      // The bucket its large results go to (also created by the first large argument).
      await store.payloads.open(endpoint.id);
      const creds = minter
        ? await minter.mintAgent(endpoint.id, taskConsumer, config.nats.agentCredentialTtlSeconds)
        : { userJwt: "", userSeed: "", inboxPrefix: "" };
      ctx.log.info(
        { endpointId: endpoint.id, hostname: req.hostname, agentVersion: req.agentVersion },
        "agent connected",
      );
      return {
        endpoint,
        bus: {
          servers: [...(config.nats.agentServers ?? config.nats.servers)],
          userJwt: creds.userJwt,
          userSeed: creds.userSeed,
          inboxPrefix: creds.inboxPrefix,
          taskStream: Bus.taskStream,
          taskConsumer,
          taskSubject: Bus.taskSubject(endpoint.id),
          resultSubject: Bus.resultSubject(endpoint.id),
          statusSubject: Bus.endpointStatusSubject(endpoint.id),
          payloadBucket: Bus.payloadBucket(endpoint.id),
          ackWaitS: config.taskAckWaitSeconds,
          controlSubject: Bus.controlSubject(endpoint.id),
          resultRequestSubject: Bus.resultRequestSubject(endpoint.id),
          taskCheckSubject: Bus.taskCheckSubject(endpoint.id),
          // Over this authenticated call only: the agent of this endpoint, and nobody else,
          // learns the key of its task and control messages.
          messageKey: auth.messageKeys.endpointSecret(endpoint.id),
        },
      };
    },
  };
}
