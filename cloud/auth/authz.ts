import { z } from "zod";

import { FabricError, notFound } from "../../common/index.js";
import type { Endpoint } from "../../proto/index.js";

/** Who may use a shared object: its owner, plus users and `group:NAME` entries. */
export interface Shareable {
  readonly owner: string;
  readonly sharedWith: readonly string[];
  readonly public?: boolean;
}

const principalName = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[^\s]+$/, { message: "user and group names contain no whitespace" });

/** A share list: user names and `group:NAME` entries, at most 1,000. */
export const shareListSchema = z
  .array(principalName)
  .max(1000, { message: "at most 1,000 entries" })
  .transform((xs) => [...new Set(xs)].sort());

/**
 * Decides who may see and use functions and endpoints. Owners may do everything; users a
 * function or endpoint is shared with (directly, through a group, or a public function) may use
 * it; everyone else is told NOT_FOUND, exactly as for an unknown id.
 */
export class AccessPolicy {
  private readonly groupsOf = new Map<string, Set<string>>();

  /** @param groups group name → member user names (broker config `groups`) */
  constructor(groups: Readonly<Record<string, readonly string[]>> = {}) {
    for (const [group, members] of Object.entries(groups)) {
      for (const m of members) {
        let set = this.groupsOf.get(m);
        if (!set) this.groupsOf.set(m, (set = new Set()));
        set.add(group);
      }
    }
  }

  /** Whether `user` may use (read, run on) `obj`. */
  canUse(obj: Shareable, user: string): boolean {
    if (obj.owner === user || obj.public === true) return true;
    if (obj.sharedWith.length === 0) return false;
    if (obj.sharedWith.includes(user)) return true;
    const groups = this.groupsOf.get(user);
    return (
      groups !== undefined && obj.sharedWith.some((s) => s.startsWith("group:") && groups.has(s.slice(6)))
    );
  }

  /**
   * Whether `user` should see `obj` in a listing: owned or shared with them by name or group
   * (public functions are usable by id but not listed to everyone).
   */
  lists(obj: Shareable, user: string): boolean {
    return this.canUse({ ...obj, public: false }, user);
  }

  /** `obj` if `user` may use it, else NOT_FOUND with `what`. */
  usable<T extends Shareable>(obj: T | undefined, user: string, what: string): T {
    if (!obj || !this.canUse(obj, user)) throw notFound(`${what} not found`);
    return obj;
  }

  /**
   * `obj` if `user` owns it. NOT_FOUND when they cannot even see it, PERMISSION_DENIED when it is
   * shared with them but not theirs to change.
   */
  owned<T extends Shareable>(obj: T | undefined, user: string, what: string, action: string): T {
    const o = this.usable(obj, user, what);
    if (o.owner !== user)
      throw new FabricError("PERMISSION_DENIED", `only the owner of ${what} may ${action} it`);
    return o;
  }
}

/** PERMISSION_DENIED unless `functionId` may run on `endpoint` (its allowed-functions list, if any). */
export function assertFunctionAllowed(endpoint: Endpoint, functionId: string, where = "task"): void {
  const allowed = endpoint.allowedFunctions;
  if (allowed.length > 0 && !allowed.includes(functionId)) {
    throw new FabricError(
      "PERMISSION_DENIED",
      `${where}: function ${functionId} is not in the allowed-functions list of endpoint ${endpoint.id}`,
      { reason: "function_not_allowed" },
    );
  }
}
