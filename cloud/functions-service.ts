import type { Logger } from "pino";

import { notFound } from "../common/errors.js";
import { newId } from "../common/ids.js";
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
} from "../proto/index.js";
import type { TokenAuthority } from "./auth.js";
import { readRecord, TtlCache } from "./records.js";
import { unary, userOf } from "./rpc.js";
import type { FabricStore } from "./store.js";
import { check, descriptionSchema, functionSpecSchema, idSchema, nameSchema } from "./validate.js";
import { z } from "zod";

const registerSchema = z.object({
  name: nameSchema,
  description: descriptionSchema,
  spec: functionSpecSchema.optional().refine((s) => s !== undefined, { message: "spec is required" }),
});

/** Functions: immutable once registered, owned, looked up by id. */
export class FunctionRegistry {
  private readonly cache = new TtlCache<FunctionMessage>(30_000);

  constructor(private readonly store: FabricStore) {}

  /** The caller's function, or NOT_FOUND (also for another user's function). */
  async get(functionId: string, owner: string): Promise<FunctionMessage> {
    let fn = this.cache.get(functionId);
    if (!fn) {
      const rec = await readRecord(this.store.functions, functionId, FunctionMessage);
      if (rec) {
        fn = rec.value;
        this.cache.set(functionId, fn);
      }
    }
    if (!fn || fn.owner !== owner) throw notFound(`function ${functionId} not found`);
    return fn;
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
        };
        await store.functions.create(fn.id, FunctionMessage.encode(fn).finish());
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
        const functions: FunctionMessage[] = [];
        for await (const key of await store.functions.keys()) {
          const rec = await readRecord(store.functions, key, FunctionMessage);
          if (rec && rec.value.owner === owner) functions.push(rec.value);
        }
        functions.sort((a, b) => a.createdAtMs - b.createdAtMs);
        return { functions };
      },
    ),
    deleteFunction: unary<DeleteFunctionRequest, DeleteFunctionResponse>(
      auth,
      log,
      "DeleteFunction",
      async (req, ctx) => {
        const id = check(idSchema("function"), req.functionId, "function id");
        await registry.get(id, userOf(ctx));
        await store.functions.delete(id);
        registry.forget(id);
        ctx.log.info({ functionId: id }, "function deleted");
        return {};
      },
    ),
  };
}
