import type { Logger } from "pino";
import { z } from "zod";

import { newId } from "../../common/index.js";
import { FunctionMessage, type FunctionServiceServer } from "../../proto/index.js";
import { shareListSchema } from "../auth/authz.js";
import type { TokenAuthority } from "../auth/tokens.js";
import { unaryService, userOf, type UnaryHandlers } from "../rpc/rpc.js";
import { check, checkId, descriptionSchema, functionSpecSchema, nameSchema } from "../rpc/validate.js";
import type { FabricStore } from "../state/store.js";
import type { OwnedRegistry } from "./owned-registry.js";

/**
 * Bytes of a NATS message a function's record leaves free: a task message carries the function's
 * spec together with the task's ids and inline arguments.
 */
export const TASK_MESSAGE_RESERVE = 64 * 1024;

/** Functions: code immutable once registered, owned, shareable, looked up by id. */
export type FunctionRegistry = OwnedRegistry<FunctionMessage>;

const registerSchema = z.object({
  name: nameSchema,
  description: descriptionSchema,
  spec: functionSpecSchema.optional().refine((s) => s !== undefined, { message: "spec is required" }),
});

/** The gRPC FunctionService: {@link functionHandlers}, each call authenticated first. */
export function functionService(
  store: FabricStore,
  registry: FunctionRegistry,
  auth: TokenAuthority,
  log: Logger,
): FunctionServiceServer {
  return unaryService<FunctionServiceServer>(auth, log, functionHandlers(store, registry));
}

/**
 * The function operations, one handler per method, whatever the transport: gRPC wraps them in
 * {@link functionService}, the HTTP API (cloud/http/) calls the same ones.
 */
export function functionHandlers(
  store: FabricStore,
  registry: FunctionRegistry,
): UnaryHandlers<FunctionServiceServer> {
  return {
    registerFunction: async (req, ctx) => {
      const owner = userOf(ctx);
      const v = check(registerSchema, req, "RegisterFunction request");
      const fn: FunctionMessage = {
        id: newId(),
        owner,
        name: v.name,
        description: v.description,
        spec: req.spec,
        createdAtMs: Date.now(),
        public: false,
        sharedWith: [],
      };
      const record = FunctionMessage.encode(fn).finish();
      store.assertFits(record.length, TASK_MESSAGE_RESERVE, "the function's record", "shorten its source");
      await registry.create(fn, record);
      ctx.log.info({ functionId: fn.id, owner, kind: req.spec?.kind?.$case }, "function registered");
      return { function: fn };
    },
    getFunction: async (req, ctx) => ({
      function: await registry.get(checkId("function", req.functionId), userOf(ctx)),
    }),
    listFunctions: async (_req, ctx) => ({ functions: await registry.list(userOf(ctx)) }),
    deleteFunction: async (req, ctx) => {
      const id = checkId("function", req.functionId);
      await registry.getOwned(id, userOf(ctx), "delete");
      await registry.delete(id);
      ctx.log.info({ functionId: id }, "function deleted");
      return {};
    },
    shareFunction: async (req, ctx) => {
      const id = checkId("function", req.functionId);
      const sharedWith = check(shareListSchema, req.sharedWith, "sharedWith");
      await registry.getOwned(id, userOf(ctx), "share");
      const fn = await registry.update(id, (current) => {
        const next = { ...current, public: req.public, sharedWith };
        store.assertFits(
          FunctionMessage.encode(next).finish().length,
          TASK_MESSAGE_RESERVE,
          "the function's record",
          "share it with a group (group:NAME) instead of so many users",
        );
        return next;
      });
      ctx.log.info({ functionId: id, public: req.public, sharedWith }, "function sharing changed");
      return { function: fn };
    },
  };
}
