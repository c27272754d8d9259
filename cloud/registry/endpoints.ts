import type { Logger } from "pino";
import { z } from "zod";

import { Bus } from "../../common/bus-layout.js";
import { FabricError, notFound, unauthenticated } from "../../common/errors.js";
import { newId } from "../../common/ids.js";
import { DropLog, MAC_HEADER, type BrokerMessageKeys } from "../../common/message-auth.js";
import {
  Endpoint,
  EndpointControl,
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
  type UpdateEndpointPolicyRequest,
  type UpdateEndpointPolicyResponse,
} from "../../proto/index.js";
import { AccessPolicy, shareListSchema } from "../auth/authz.js";
import type { TokenAuthority } from "../auth/tokens.js";
import type { BrokerConfig } from "../config.js";
import type { NatsCredentialMinter } from "../auth/nats-credentials.js";
import { listRecords, mapLimit, readRecord, TtlCache, updateRecord } from "../state/records.js";
import { unary, userOf, type CallContext } from "../rpc/rpc.js";
import type { TaskEventHub } from "../tasks/event-hub.js";
import type { FabricStore } from "../state/store.js";
import { check, descriptionSchema, idSchema, nameSchema } from "../rpc/validate.js";

const registerSchema = z.object({
  name: nameSchema.min(1, { message: "an endpoint needs a name" }),
  description: descriptionSchema,
  endpointId: z.union([z.literal(""), idSchema("endpoint")]),
});

/** Endpoints: owned records, looked up by id, with their agents' last heartbeat. */
export class EndpointRegistry {
  private readonly cache = new TtlCache<Endpoint>(5_000);
  private readonly droppedStatus: DropLog;

  constructor(
    private readonly store: FabricStore,
    private readonly config: BrokerConfig,
    /** Each endpoint's message key: a status counts only if its agent signed it. */
    private readonly keys: BrokerMessageKeys,
    log: Logger,
    readonly policy: AccessPolicy = new AccessPolicy(),
  ) {
    this.droppedStatus = new DropLog(log, "endpoint status", { from: "the endpoint's agent" });
  }

  private async read(endpointId: string): Promise<Endpoint | undefined> {
    let ep = this.cache.get(endpointId);
    if (!ep) {
      const rec = await readRecord(this.store.endpoints, endpointId, Endpoint);
      if (rec) {
        ep = rec.value;
        this.cache.set(endpointId, ep);
      }
    }
    return ep;
  }

  /**
   * The endpoint if `user` may submit to it (owns it, or it is shared with them), else NOT_FOUND
   * exactly as for an unknown id.
   */
  async get(endpointId: string, user: string): Promise<Endpoint> {
    return this.policy.usable(await this.read(endpointId), user, `endpoint ${endpointId}`);
  }

  /** The endpoint if `user` owns it (NOT_FOUND if invisible to them, PERMISSION_DENIED if only shared). */
  async getOwned(endpointId: string, user: string, action: string): Promise<Endpoint> {
    return this.policy.owned(await this.read(endpointId), user, `endpoint ${endpointId}`, action);
  }

  forget(endpointId: string): void {
    this.cache.delete(endpointId);
  }

  async statusView(endpointId: string): Promise<EndpointStatusView> {
    const [last, queued] = await Promise.all([
      this.lastStatus(endpointId),
      this.store.queuedTasks(endpointId),
    ]);
    if (!last) return { connection: "never-connected", last: undefined, queuedTasks: queued };
    const fresh = Date.now() - last.atMs < this.config.endpointOfflineAfterSeconds * 1000;
    return {
      connection: fresh && last.state === "online" ? "online" : "offline",
      last,
      queuedTasks: queued,
    };
  }

  /**
   * The endpoint's last status if its agent signed it, else undefined (as if it never reported).
   * Read with a direct get, which returns the stored headers (a KV get does not): the MAC is
   * there. Anyone the server publishes for (issue 12: it answers requests onto any reply subject)
   * could write the record; only the agent could sign it.
   */
  private async lastStatus(endpointId: string): Promise<EndpointStatus | undefined> {
    const subject = Bus.endpointStatusSubject(endpointId);
    const m = await this.store.publisher.getLast(`KV_${Bus.endpointStatusBucket}`, subject);
    if (!m || m.operation !== "PUT") return undefined;
    const verdict = this.keys.endpoint(endpointId).check(subject, m.data, m.headers.last(MAC_HEADER));
    if (verdict !== "ok") {
      this.droppedStatus.drop(subject, verdict);
      return undefined;
    }
    try {
      return EndpointStatus.decode(m.data);
    } catch (err) {
      throw new FabricError(
        "DATA_LOSS",
        `the status of endpoint ${endpointId} cannot be decoded: ${(err as Error).message}`,
      );
    }
  }
}

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

export function endpointService(
  store: FabricStore,
  registry: EndpointRegistry,
  config: BrokerConfig,
  auth: TokenAuthority,
  log: Logger,
  events: TaskEventHub,
  minter?: NatsCredentialMinter,
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
        let cred: { token: string; tokenId: string; expSeconds: number };
        if (v.endpointId) {
          const current = await registry.getOwned(v.endpointId, owner, "re-register");
          cred = await auth.issueEndpointCredential(current.id, owner);
          // One live credential per endpoint: a re-registration revokes the one it replaces (a
          // copied or leaked credentials file stops working at once, on every replica).
          const out = await updateRecord(store.endpoints, current.id, Endpoint, (ep) => ({
            ...ep,
            credentialId: cred.tokenId,
          }));
          if (!out) throw notFound(`endpoint ${current.id} not found`);
          endpoint = out.value;
          registry.forget(endpoint.id);
          const previous = current.credentialId;
          if (previous && previous !== cred.tokenId) {
            await auth.revokeTokenId(previous, cred.expSeconds);
            ctx.log.info({ endpointId: endpoint.id }, "the endpoint's previous credential revoked");
          }
          // And at once on NATS, where a user JWT cannot be revoked without a server reload: the
          // consumer the previous credential's agent was allowed goes, and its un-acked tasks wait
          // for the next ConnectEndpoint (with the new credential) under a name no user has yet.
          await store.ensureEndpointConsumer(endpoint.id, { credentialId: cred.tokenId });
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
          await store.endpoints.create(endpoint.id, Endpoint.encode(endpoint).finish());
        }
        // The queue exists from now on: tasks sent before the agent first starts wait in it.
        await store.ensureEndpointConsumer(endpoint.id);
        ctx.log.info({ endpointId: endpoint.id, owner }, "endpoint registered");
        return { endpoint, endpointToken: cred.token };
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
        const endpoints = await listRecords(store.endpoints, Endpoint, (e) =>
          registry.policy.lists(e, owner),
        );
        const statuses = await mapLimit(endpoints, 64, (e) => registry.statusView(e.id));
        return { endpoints, statuses };
      },
    ),
    deleteEndpoint: unary<DeleteEndpointRequest, DeleteEndpointResponse>(
      auth,
      log,
      "DeleteEndpoint",
      async (req, ctx) => {
        const id = check(idSchema("endpoint"), req.endpointId, "endpoint id");
        // Endpoint credentials may connect and read, nothing more: a credential copied off a
        // login node must not be able to take the endpoint (and its queued tasks) away.
        if (ctx.principal.kind === "endpoint") {
          throw new FabricError(
            "PERMISSION_DENIED",
            "endpoint credentials cannot delete an endpoint; its owner does, with a user token (`fabric endpoint delete`)",
          );
        }
        await registry.getOwned(id, ctx.principal.userId, "delete");
        await store.endpoints.delete(id);
        registry.forget(id);
        await store.deleteEndpointConsumer(id);
        const failed = await store.failQueuedTasks(
          id,
          auth.messageKeys.endpoint(id),
          `user/${ctx.principal.userId}`,
          (task, encoded) => events.publish(task, encoded),
        );
        if (failed > 0) ctx.log.info({ endpointId: id, failed }, "queued tasks of a deleted endpoint failed");
        await store.endpointStatus.delete(id);
        ctx.log.info({ endpointId: id }, "endpoint deleted");
        return {};
      },
    ),
    updateEndpointPolicy: unary<UpdateEndpointPolicyRequest, UpdateEndpointPolicyResponse>(
      auth,
      log,
      "UpdateEndpointPolicy",
      async (req, ctx) => {
        const owner = userOf(ctx);
        const id = check(idSchema("endpoint"), req.endpointId, "endpoint id");
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
        const out = await updateRecord(store.endpoints, id, Endpoint, (ep) => ({
          ...ep,
          sharedWith,
          allowedFunctions,
        }));
        if (!out) throw notFound(`endpoint ${id} not found`);
        registry.forget(id);
        // The agent enforces the list too: tell it now (it also re-reads it after a reconnect).
        const subject = Bus.controlSubject(id);
        const payload = EndpointControl.encode({
          cancelTaskIds: [],
          allowedFunctions: { functionIds: allowedFunctions },
        }).finish();
        store.nc.publish(subject, payload, {
          headers: auth.messageKeys.endpoint(id).headers(subject, payload),
        });
        ctx.log.info(
          { endpointId: id, sharedWith, allowedFunctions: allowedFunctions.length },
          "endpoint policy changed",
        );
        return { endpoint: out.value };
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
        const endpoint = await registry.getOwned(p.endpointId, p.owner, "connect to");
        // A new agent takes over: tasks the previous one held un-acked come back at once, under a
        // consumer name the previous agent's NATS user cannot use (see ensureEndpointConsumer).
        const taskConsumer = await store.ensureEndpointConsumer(endpoint.id, { credentialId: p.tokenId });
        // A re-registration (on any replica) may have replaced this credential meanwhile, before
        // this replica heard of its revocation: then the consumer just made must not be handed out.
        const fresh = await readRecord(store.endpoints, endpoint.id, Endpoint);
        const current = fresh?.value.credentialId ?? "";
        if (!fresh || (current && current !== p.tokenId)) {
          await store.deleteEndpointConsumerNamed(endpoint.id, taskConsumer);
          if (fresh) await store.ensureEndpointConsumer(endpoint.id);
          registry.forget(endpoint.id);
          throw unauthenticated(
            "this endpoint credential was replaced by a re-registration; use the new credentials",
          );
        }
        // The bucket its large results go to (also created by the first large argument).
        await store.payloads(endpoint.id);
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
            // Over this authenticated call only: the agent of this endpoint, and nobody else,
            // learns the key of its task and control messages.
            messageKey: auth.messageKeys.endpointSecret(endpoint.id),
          },
        };
      },
    ),
  };
}
