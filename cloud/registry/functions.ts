import type { Logger } from "pino";

import { notFound } from "../../common/errors.js";
import { newId } from "../../common/ids.js";
import {
  FunctionMessage,
  type DeleteFunctionRequest,
  type DeleteFunctionResponse,
  type FunctionServiceServer,
  type GetFunctionRequest,
  type GetFunctionResponse,
  type ListFunctionsRequest,
  type ListFunctionsResponse,
  type RegisterFunctionRequest,
  type RegisterFunctionResponse,
  type ShareFunctionRequest,
  type ShareFunctionResponse,
} from "../../proto/index.js";
import { AccessPolicy, shareListSchema } from "../auth/authz.js";
import type { TokenAuthority } from "../auth/tokens.js";
import { listRecords, readRecord, TtlCache, updateRecord } from "../state/records.js";
import { unary, userOf } from "../rpc/rpc.js";
import type { FabricStore } from "../state/store.js";
import { check, descriptionSchema, functionSpecSchema, idSchema, nameSchema } from "../rpc/validate.js";
import { z } from "zod";

/**
 * Bytes of a NATS message a function's record leaves free: a task message carries the function's
 * spec together with the task's ids and inline arguments.
 */
export const TASK_MESSAGE_RESERVE = 64 * 1024;

const registerSchema = z.object({
  name: nameSchema,
  description: descriptionSchema,
  spec: functionSpecSchema.optional().refine((s) => s !== undefined, { message: "spec is required" }),
});

/** Functions: code immutable once registered, owned, shareable, looked up by id. */
export class FunctionRegistry {
  // Short: a change of sharing made through another replica shows here within this time.
  private readonly cache = new TtlCache<FunctionMessage>(5_000);

  constructor(
    private readonly store: FabricStore,
    readonly policy: AccessPolicy = new AccessPolicy(),
  ) {}

  private async read(functionId: string): Promise<FunctionMessage | undefined> {
    let fn = this.cache.get(functionId);
    if (!fn) {
      const rec = await readRecord(this.store.functions, functionId, FunctionMessage);
      if (rec) {
        fn = rec.value;
        this.cache.set(functionId, fn);
      }
    }
    return fn;
  }

  /**
   * A function `user` may run (theirs, public, or shared with them), or NOT_FOUND exactly as for
   * an unknown id.
   */
  async get(functionId: string, user: string): Promise<FunctionMessage> {
    return this.policy.usable(await this.read(functionId), user, `function ${functionId}`);
  }

  /** A function `user` owns (NOT_FOUND if invisible to them, PERMISSION_DENIED if only shared). */
  async getOwned(functionId: string, user: string, action: string): Promise<FunctionMessage> {
    return this.policy.owned(await this.read(functionId), user, `function ${functionId}`, action);
  }

  forget(functionId: string): void {
    this.cache.delete(functionId);
  }
}

export function functionService(
  store: FabricStore,
  registry: FunctionRegistry,
  auth: TokenAuthority,
  log: Logger,
): FunctionServiceServer {
  return {
    registerFunction: unary<RegisterFunctionRequest, RegisterFunctionResponse>(
      auth,
      log,
      "RegisterFunction",
      async (req, ctx) => {
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
        await store.functions.create(fn.id, record);
        ctx.log.info({ functionId: fn.id, owner, kind: req.spec?.kind?.$case }, "function registered");
        return { function: fn };
      },
    ),
    getFunction: unary<GetFunctionRequest, GetFunctionResponse>(
      auth,
      log,
      "GetFunction",
      async (req, ctx) => {
        const id = check(idSchema("function"), req.functionId, "function id");
        return { function: await registry.get(id, userOf(ctx)) };
      },
    ),
    listFunctions: unary<ListFunctionsRequest, ListFunctionsResponse>(
      auth,
      log,
      "ListFunctions",
      async (_req, ctx) => {
        const owner = userOf(ctx);
        const functions = await listRecords(store.functions, FunctionMessage, (f) =>
          registry.policy.lists(f, owner),
        );
        return { functions };
      },
    ),
    deleteFunction: unary<DeleteFunctionRequest, DeleteFunctionResponse>(
      auth,
      log,
      "DeleteFunction",
      async (req, ctx) => {
        const id = check(idSchema("function"), req.functionId, "function id");
        await registry.getOwned(id, userOf(ctx), "delete");
        await store.functions.delete(id);
        registry.forget(id);
        ctx.log.info({ functionId: id }, "function deleted");
        return {};
      },
    ),
    shareFunction: unary<ShareFunctionRequest, ShareFunctionResponse>(
      auth,
      log,
      "ShareFunction",
      async (req, ctx) => {
        const id = check(idSchema("function"), req.functionId, "function id");
        const sharedWith = check(shareListSchema, req.sharedWith, "sharedWith");
        await registry.getOwned(id, userOf(ctx), "share");
        const out = await updateRecord(store.functions, id, FunctionMessage, (fn) => {
          const next = { ...fn, public: req.public, sharedWith };
          store.assertFits(
            FunctionMessage.encode(next).finish().length,
            TASK_MESSAGE_RESERVE,
            "the function's record",
            "share it with a group (group:NAME) instead of so many users",
          );
          return next;
        });
        if (!out) throw notFound(`function ${id} not found`);
        registry.forget(id);
        ctx.log.info({ functionId: id, public: req.public, sharedWith }, "function sharing changed");
        return { function: out.value };
      },
    ),
  };
}
